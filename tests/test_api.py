"""The REST contract of the DataRobot-compatible Credentials API, exercised through real HTTP.

The contract is /work/shared/spec/credentials-api.md (sections 1-3, 6 and 8). Every test talks to a live
server process (`server`, once per backend) as a fresh user (`api`), so what is asserted here is exactly
what the DataRobot client and Terraform provider see on the wire. Credential bodies are built from the
declarations in `strongroom.credential_types`, so a new type is covered as soon as it is declared.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import orjson
import pytest

from strongroom import credential_types
from strongroom.bootstrap import Services
from strongroom.config import Settings
from tests.conftest import Server

HEX24 = re.compile(r"^[0-9a-f]{24}$")
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
BASE_KEYS = {"credentialId", "name", "credentialType", "description", "creationDate"}
LIST_KEYS = {"count", "next", "previous", "data", "totalCount"}
BODY_LIMIT: int = Settings.model_fields["max_body_bytes"].default  # the server under test runs with defaults
EXCLUSIVE_TYPES = [name for name, t in credential_types.TYPES.items() if t.exclusive]
SECRET_TYPES = [name for name, t in credential_types.TYPES.items() if any(f.secret for f in t.fields)]
UNKNOWN_ID = "0123456789abcdef01234567"


# ---- helpers ----------------------------------------------------------------------------------------------


def assert_error(resp: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """Every error the DataRobot client can meet: exact status, `Content-Type: application/json` (anything
    else makes the client crash or mangle the text, spec §6) and a `message` string. With `field`, the
    message names it and the `errors` dict has it as a key."""
    where = f"{resp.request.method} {resp.request.url}"
    assert resp.status_code == status, f"{where}: expected {status}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("content-type") == "application/json", f"{where}: {resp.headers.get('content-type')}"
    body = resp.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str) and body["message"], body
    if field is not None:
        assert field in body["message"], f"message does not name {field!r}: {body['message']}"
        assert isinstance(body.get("errors"), dict) and field in body["errors"], body
    return body


def unique(prefix: str = "cred") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


class LeakGuard:
    """Hands out unique secret values and remembers every response body, to prove none is ever echoed."""

    def __init__(self) -> None:
        self.planted: list[str] = []
        self.bodies: list[bytes] = []

    def secret(self, label: str = "s") -> str:
        value = f"canary-{label}-{secrets.token_hex(10)}"
        self.planted.append(value)
        return value

    def record(self, resp: httpx.Response) -> None:
        resp.read()
        self.bodies.append(resp.content)

    def check(self) -> None:
        for value in self.planted:
            leaked = [b for b in self.bodies if value.encode() in b]
            assert not leaked, f"secret {value!r} echoed in a response: {leaked[0][:300]!r}"


@pytest.fixture
def guard(api: httpx.Client) -> Iterator[LeakGuard]:
    """Record every response `api` receives in this test; fail if any contains a planted secret."""
    leak_guard = LeakGuard()
    api.event_hooks["response"].append(leak_guard.record)
    yield leak_guard
    if leak_guard.planted:
        assert leak_guard.bodies, "the guard saw no response: it would pass vacuously"
    leak_guard.check()


def field_value(f: credential_types.Field, guard: LeakGuard) -> Any:
    """A valid value for one declared field; secret strings are canaries."""
    if f.kind == "object":
        return {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": guard.secret("pkid"),
            "private_key": guard.secret("pk"),
            "client_email": guard.secret("email"),
        }
    if f.kind == "string_list":
        return ["scope.read", "scope.write"]
    return guard.secret(f.name) if f.secret else f"public-{f.name}-{secrets.token_hex(3)}"


def complete_body(ctype: credential_types.CredentialType, guard: LeakGuard, **extra: Any) -> dict[str, Any]:
    """A complete create body for `ctype`: every declared field except the exclusive reference (configId)."""
    body: dict[str, Any] = {"name": unique(ctype.name), "credentialType": ctype.name}
    for f in ctype.fields:
        if f.name != ctype.exclusive:
            body[f.name] = field_value(f, guard)
    body.update(extra)
    return body


def public_part(ctype: credential_types.CredentialType, body: dict[str, Any]) -> dict[str, Any]:
    """The fields of `body` a response may show: the type's public (non-secret) fields."""
    return {k: v for k, v in body.items() if (f := ctype.field(k)) is not None and not f.secret}


def assert_credential(obj: Any, ctype: credential_types.CredentialType, body: dict[str, Any]) -> None:
    """The credential object of spec §2: DataRobot's five keys plus only the type's public fields."""
    assert isinstance(obj, dict), obj
    expected_public = public_part(ctype, body)
    assert set(obj) == BASE_KEYS | set(expected_public), f"keys {sorted(obj)}"
    assert HEX24.match(obj["credentialId"]), obj["credentialId"]
    assert obj["name"] == body["name"]
    assert obj["credentialType"] == ctype.name
    assert obj["description"] == body.get("description", "")
    assert ISO_Z.match(obj["creationDate"]), obj["creationDate"]
    created = datetime.fromisoformat(obj["creationDate"])
    assert created.tzinfo is not None and abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    for key, value in expected_public.items():
        assert obj[key] == value, key


def create(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post("credentials/", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.headers.get("content-type") == "application/json"
    result: dict[str, Any] = resp.json()
    return result


def create_basic(api: httpx.Client, name: str | None = None, **extra: Any) -> dict[str, Any]:
    return create(api, {"name": name or unique("basic"), "user": "u", "password": "p", **extra})


def follow_pages(api: httpx.Client, first: httpx.Response) -> list[dict[str, Any]]:
    """Walk `next` links exactly as the DataRobot client does (absolute URLs, followed verbatim)."""
    pages, resp = [], first
    while True:
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) == LIST_KEYS and page["count"] == len(page["data"]), page
        pages.append(page)
        if page["next"] is None:
            return pages
        assert len(pages) < 50, "next links do not terminate"
        resp = api.get(page["next"])


def list_names(api: httpx.Client, **params: Any) -> list[str]:
    pages = follow_pages(api, api.get("credentials/", params=params))
    return [item["name"] for page in pages for item in page["data"]]


@contextmanager
def open_service(server: Server) -> Iterator[Services]:
    """The server's own store, opened beside it, to mint expired, revoked or scoped tokens."""
    service = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        yield service
    finally:
        service.close()


def client(server: Server, token: str, scheme: str = "Bearer") -> httpx.Client:
    return httpx.Client(base_url=server.api, headers={"Authorization": f"{scheme} {token}"}, timeout=30)


@pytest.fixture
def other_api(server: Server) -> Iterator[httpx.Client]:
    """A second, unrelated user."""
    with client(server, server.new_user("other")) as c:
        yield c


# ---- §1: version handshake and authentication -----------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
def test_version_handshake_with_both_schemes(server: Server, token: str, scheme: str) -> None:
    """`Client()` sends `Token` by default and `Bearer` on request; both must pass the handshake, with the
    client's other headers (User-Agent, trace header, Accept */*) ignored."""
    headers = {
        "User-Agent": "DataRobotPythonClient/3.20.0 (Linux 6.1 x86_64) Python-3.11.7",
        "X-DataRobot-Api-Consumer-Trace": "test_api.test_version_handshake",
        "Accept": "*/*",
    }
    with client(server, token, scheme) as c:
        resp = c.get("version/", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["major"] == 2 and body["minor"] == 49 and body["versionString"] == "2.49.0"
    assert type(body["major"]) is int and type(body["minor"]) is int
    assert set(body) <= {"major", "minor", "versionString", "releasedVersion"}, body


BAD_AUTH = {
    "no header": None,
    "scheme without token": "Bearer",
    "garbage bearer": "Bearer not-a-token",
    "garbage token scheme": "Token !!!",
    "unknown token with the right prefix": "Bearer sr_" + "A" * 43,
    "valid-looking token, wrong scheme": "Basic sr_" + "A" * 43,
    "overlong token": "Bearer sr_" + "A" * 500,
}


@pytest.mark.parametrize("header", BAD_AUTH.values(), ids=BAD_AUTH.keys())
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "version/", None),
        ("GET", "credentials/", None),
        ("POST", "credentials/", {"name": "x", "user": "u", "password": "p"}),
        ("GET", f"credentials/{UNKNOWN_ID}/", None),
        ("PATCH", f"credentials/{UNKNOWN_ID}/", {"name": "x"}),
        ("DELETE", f"credentials/{UNKNOWN_ID}/", None),
    ],
)
def test_bad_token_is_401_json_with_challenge(
    server: Server, header: str | None, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """A 401 must be JSON (the client reads `.json`) and carry `WWW-Authenticate` (RFC 9110)."""
    headers = {"Authorization": header} if header is not None else {}
    resp = httpx.request(method, f"{server.api}/{path}", headers=headers, json=body, timeout=30)
    assert_error(resp, 401)
    assert resp.headers.get("www-authenticate", "").startswith("Bearer")


def test_revoked_and_expired_tokens_are_401(server: Server) -> None:
    """A token that worked stops working once revoked; an expired token never works."""
    with open_service(server) as service:
        username = unique("revoked")
        service.accounts.create_user(username)
        live, raw = service.accounts.create_token(username)
        _, expired = service.accounts.create_token(
            username, name="old", expires_at=datetime.now(UTC) - timedelta(seconds=1)
        )
        with client(server, raw) as c:
            assert c.get("version/").status_code == 200
            service.accounts.revoke_token(live.id)
            assert_error(c.get("version/"), 401)
        with client(server, expired) as c:
            assert_error(c.get("version/"), 401)


def test_creates_recheck_a_token_the_server_has_seen(server: Server) -> None:
    """On PostgreSQL a create by a token the server authenticated before is one statement whose insert
    re-checks the token: revoked, or expired since, it answers 401 and inserts nothing."""
    with open_service(server) as service:
        username = unique("creator")
        service.accounts.create_user(username)
        live, raw = service.accounts.create_token(username)
        expires = datetime.now(UTC) + timedelta(seconds=3)
        _, brief = service.accounts.create_token(username, name="brief", expires_at=expires)
        with client(server, raw) as c:
            for i in range(3):  # seen, then remembered
                assert c.post("credentials/", json={"name": f"a{i}", "user": "u", "password": "p"}).status_code == 201
            service.accounts.revoke_token(live.id)
            assert_error(c.post("credentials/", json={"name": "late", "user": "u", "password": "p"}), 401)
            assert_error(c.post("credentials/", json={"name": "late"}), 401)  # not 422: the token comes first
        with client(server, brief) as c:
            assert c.post("credentials/", json={"name": "b0", "user": "u", "password": "p"}).status_code == 201
            assert c.post("credentials/", json={"name": "b1", "user": "u", "password": "p"}).status_code == 201
            threading.Event().wait(max((expires - datetime.now(UTC)).total_seconds(), 0) + 0.2)  # now expired
            assert_error(c.post("credentials/", json={"name": "b2", "user": "u", "password": "p"}), 401)
        _, fresh = service.accounts.create_token(username, name="fresh")
        with client(server, fresh) as c:
            names = {item["name"] for item in c.get("credentials/").json()["data"]}
        assert names == {"a0", "a1", "a2", "b0", "b1"}


def test_reads_check_the_token_on_their_one_statement_path(server: Server) -> None:
    """GET and list read token and credentials in one statement: with credentials present they must still
    answer 401 to a revoked or expired token of the owner, 403 to a token without `read`, and show another
    user nothing."""
    with open_service(server) as service:
        owner, stranger = unique("owner"), unique("stranger")
        service.accounts.create_user(owner)
        service.accounts.create_user(stranger)
        live, raw = service.accounts.create_token(owner)
        _, expired = service.accounts.create_token(
            owner, name="old", expires_at=datetime.now(UTC) - timedelta(seconds=1)
        )
        _, write_only = service.accounts.create_token(owner, name="w", scopes=("write",))
        _, other = service.accounts.create_token(stranger)
        with client(server, raw) as c:
            cid = c.post("credentials/", json={"name": "x", "user": "u", "password": "p"}).json()["credentialId"]
            assert c.get(f"credentials/{cid}/").json()["credentialId"] == cid
            assert [item["credentialId"] for item in c.get("credentials/").json()["data"]] == [cid]
        page_args: dict[str, Any] = {"offset": 0, "limit": 10, "types_filter": None, "order_by": "-creationDate"}
        assert orjson.loads(service.credentials.get_for_token(raw, cid)[0])["credentialId"] == cid  # one-statement path
        assert [c["credentialId"] for c in service.credentials.list_for_token(raw, **page_args).credentials()] == [cid]
        for token in (expired, write_only, other, raw[:-1] + "x"):  # and hands every doubtful case over
            assert service.credentials.get_for_token(token, cid) is None
            if token != other:
                assert service.credentials.list_for_token(token, **page_args) is None
        empty = service.credentials.list_for_token(other, **page_args)  # another user's list: theirs, so empty
        assert empty is not None and (empty.items, empty.total) == ([], 0)  # still one statement
        for token, status in ((expired, 401), (write_only, 403), (other, 404), (raw[:-1] + "x", 401)):
            with client(server, token) as c:
                assert_error(c.get(f"credentials/{cid}/"), status)
                listed = c.get("credentials/", params={"limit": 10})
                if status == 404:
                    assert listed.json()["data"] == [] and listed.json()["totalCount"] == 0
                else:
                    assert_error(listed, status)
        service.accounts.revoke_token(live.id)
        assert (
            service.credentials.get_for_token(raw, cid) is None
            and service.credentials.list_for_token(raw, **page_args) is None
        )
        with client(server, raw) as c:
            assert_error(c.get(f"credentials/{cid}/"), 401)
            assert_error(c.get("credentials/"), 401)


def test_read_only_token_cannot_write(server: Server) -> None:
    """Scopes are enforced: a read token lists but cannot create (403 JSON, not a silent success)."""
    with open_service(server) as service:
        username = unique("reader")
        service.accounts.create_user(username)
        _, raw = service.accounts.create_token(username, scopes=("read",))
    with client(server, raw) as c:
        assert c.get("credentials/").status_code == 200
        assert_error(c.post("credentials/", json={"name": "x", "user": "u", "password": "p"}), 403)
        assert c.get("credentials/").json()["totalCount"] == 0


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "credentials/", b"{not json"),
        ("POST", "credentials/", b"[1]"),
        ("PATCH", f"credentials/{UNKNOWN_ID}/", b""),
        ("PATCH", f"credentials/{UNKNOWN_ID}/", b"{bad"),
    ],
)
def test_token_checked_before_body(server: Server, method: str, path: str, content: bytes) -> None:
    """Authentication comes first: an anonymous caller learns nothing about validation and cannot make the
    server read and parse a body. Today `create_credential`/`update_credential` read the body before
    `call()` authenticates."""
    assert_error(httpx.request(method, f"{server.api}/{path}", content=content, timeout=30), 401)


# ---- §2, §3.2: create every declared type ----------------------------------------------------------------


def test_thirteen_types_declared() -> None:
    """The brief and spec §3.2 (+ api_token from T1) name 13 types; the parametrized tests below use them."""
    assert len(credential_types.TYPES) == 13
    assert {"basic", "s3", "gcp", "box_jwt", "api_token"} <= set(credential_types.TYPES)


@pytest.mark.parametrize("type_name", credential_types.TYPES)
def test_create_each_type(api: httpx.Client, guard: LeakGuard, type_name: str) -> None:
    """201 with exactly the five DataRobot keys plus public fields; the same object on GET and in the list;
    no secret anywhere (the guard checks every response)."""
    ctype = credential_types.TYPES[type_name]
    body = complete_body(ctype, guard)
    created = create(api, body)
    assert_credential(created, ctype, body)
    fetched = api.get(f"credentials/{created['credentialId']}/")
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "application/json"
    assert fetched.json() == created  # includes creationDate surviving the database round trip exactly
    listed = api.get("credentials/").json()
    assert listed["data"] == [created] and listed["totalCount"] == 1


@pytest.mark.parametrize("type_name", EXCLUSIVE_TYPES)
def test_create_with_config_id_only(api: httpx.Client, type_name: str) -> None:
    """Types with a secure-configuration reference are complete with `configId` alone, which is public."""
    ctype = credential_types.TYPES[type_name]
    body = {"name": unique(), "credentialType": type_name, "configId": "cfg-" + secrets.token_hex(4)}
    created = create(api, body)
    assert_credential(created, ctype, body)
    assert created["configId"] == body["configId"]


def test_description_round_trip(api: httpx.Client) -> None:
    """Given descriptions come back verbatim (line breaks and tabs allowed); absent ones are "" (spec §2)."""
    text = "line one\nline two\ttabbed — ünïcode"
    assert create_basic(api, description=text)["description"] == text
    assert create_basic(api)["description"] == ""
    assert create_basic(api, description=None)["description"] == ""


def test_missing_credential_type_defaults_to_basic(api: httpx.Client) -> None:
    """DataRobot documents `basic` as the default credentialType (D2)."""
    created = create(api, {"name": unique(), "user": "u", "password": "p"})
    assert created["credentialType"] == "basic"
    assert api.get(f"credentials/{created['credentialId']}/").json()["credentialType"] == "basic"


def test_empty_password_allowed(api: httpx.Client) -> None:
    """Fields declared allow_empty (passwords, passphrases) accept ""; others do not (see the 422 table)."""
    for ctype in credential_types.TYPES.values():
        for f in ctype.fields:
            if f.allow_empty:
                body = complete_body(ctype, LeakGuard(), **{f.name: ""})
                assert api.post("credentials/", json=body).status_code == 201, (ctype.name, f.name)


def test_gcp_key_camel_case_and_json_string(api: httpx.Client, guard: LeakGuard) -> None:
    """`update(gcp_key=…)` camelCases nested keys and `create_gcp` may pass a JSON string (spec §3.2, §3.4)."""
    camel = {"type": "service_account", "projectId": "p", "privateKeyId": guard.secret(), "privateKey": guard.secret()}
    snake = {"type": "service_account", "project_id": "p", "private_key": guard.secret()}
    for gcp_key in (camel, orjson.dumps(snake).decode()):
        created = create(api, {"name": unique("gcp"), "credentialType": "gcp", "gcpKey": gcp_key})
        assert set(created) == BASE_KEYS and created["credentialType"] == "gcp"


def test_name_boundaries_accepted(api: httpx.Client) -> None:
    """255 characters is the limit in characters, not bytes (multi-byte names must fit on PostgreSQL too)."""
    for name in ("x" * credential_types.NAME_MAX, "名" * credential_types.NAME_MAX, "a", "名前 with spaces ✓"):
        assert create_basic(api, name=name)["name"] == name


# ---- §3.2 and §6: validation ------------------------------------------------------------------------------

BAD_NAMES = {
    "empty": "",
    "blank": "   ",
    "blank tab": "\t",
    "256 chars": "x" * (credential_types.NAME_MAX + 1),
    "10000 chars": "y" * 10_000,
    "newline": "a\nb",
    "carriage return": "a\rb",
    "escape": "a\x1b[31mb",
    "NUL": "a\x00b",
    "DEL": "a\x7fb",
    "number": 5,
    "null": None,
    "list": ["a"],
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_name_is_422(api: httpx.Client, name: Any) -> None:
    """Names are non-blank single-line strings of at most 255 characters; the message names `name` but never
    echoes the value (a 10 000-character name must not come back)."""
    resp = api.post("credentials/", json={"name": name, "user": "u", "password": "p"})
    body = assert_error(resp, 422, "name")
    assert len(resp.content) < 1000, "the error echoes the input"
    assert api.get("credentials/").json()["totalCount"] == 0
    assert "\x00" not in body["message"]


@pytest.mark.parametrize("name", ["a\x85b", "a\x9b31mb"], ids=["NEL", "CSI"])
def test_c1_control_characters_in_name_are_422(api: httpx.Client, name: str) -> None:
    """C1 controls are control characters too (Unicode Cc): NEL splits the "single-line" name and CSI can
    drive a terminal that prints it (the CLI lists names)."""
    assert_error(api.post("credentials/", json={"name": name, "user": "u", "password": "p"}), 422, "name")


def test_missing_name_is_422(api: httpx.Client) -> None:
    assert_error(api.post("credentials/", json={"user": "u", "password": "p"}), 422, "name")


@pytest.mark.parametrize("bad_type", ["nope", "BASIC", "", 5, ["basic"], "x" * 200, "bad\x00type"])
def test_unknown_credential_type_lists_valid_types(api: httpx.Client, bad_type: Any) -> None:
    """The message must tell the caller what would have worked: every declared type."""
    body = assert_error(
        api.post("credentials/", json={"name": unique(), "credentialType": bad_type, "user": "u", "password": "p"}),
        422,
        "credentialType",
    )
    for name in credential_types.TYPES:
        assert name in body["message"]
    assert "\x00" not in body["message"] and "x" * 200 not in body["message"]


MISSING_REQUIRED = [(t.name, field) for t in credential_types.TYPES.values() for field in t.requires[0]]


@pytest.mark.parametrize(("type_name", "missing"), MISSING_REQUIRED, ids=[f"{t}-{f}" for t, f in MISSING_REQUIRED])
def test_missing_required_field_is_422(api: httpx.Client, guard: LeakGuard, type_name: str, missing: str) -> None:
    """Dropping any field of the (first) complete combination makes the body incomplete: 422 naming it."""
    body = complete_body(credential_types.TYPES[type_name], guard)
    del body[missing]
    assert_error(api.post("credentials/", json=body), 422, missing)


EMPTY_NOT_ALLOWED = [
    (t.name, f.name)
    for t in credential_types.TYPES.values()
    for f in t.fields
    if f.kind == "string" and not f.allow_empty
]


@pytest.mark.parametrize(("type_name", "field"), EMPTY_NOT_ALLOWED, ids=[f"{t}-{f}" for t, f in EMPTY_NOT_ALLOWED])
def test_empty_string_is_422_unless_declared(api: httpx.Client, guard: LeakGuard, type_name: str, field: str) -> None:
    ctype = credential_types.TYPES[type_name]
    body = {"name": unique(), "credentialType": type_name, field: ""}
    if field != ctype.exclusive:
        body = complete_body(ctype, guard, **{field: ""})
    assert_error(api.post("credentials/", json=body), 422, field)


BAD_FIELDS: dict[str, tuple[str, dict[str, Any], str]] = {
    "unknown extra field": ("basic", {"user": "u", "password": "p", "nonsense": "x"}, "nonsense"),
    "field of another type": ("basic", {"user": "u", "password": "p", "awsAccessKeyId": "A"}, "awsAccessKeyId"),
    "number for password": ("basic", {"user": "u", "password": 12345}, "password"),
    "object for password": ("basic", {"user": "u", "password": {"v": "p"}}, "password"),
    "null for password": ("basic", {"user": "u", "password": None}, "password"),
    "bool for user": ("basic", {"user": True, "password": "p"}, "user"),
    "string for oauthScopes": (
        "adls_gen2_oauth",
        {"clientId": "c", "clientSecret": "s", "oauthScopes": "scope.read"},
        "oauthScopes",
    ),
    "numbers in oauthScopes": (
        "adls_gen2_oauth",
        {"clientId": "c", "clientSecret": "s", "oauthScopes": [1, 2]},
        "oauthScopes",
    ),
    "101 oauthScopes": (
        "adls_gen2_oauth",
        {"clientId": "c", "clientSecret": "s", "oauthScopes": ["s"] * (credential_types.LIST_MAX + 1)},
        "oauthScopes",
    ),
    "list for gcpKey": ("gcp", {"gcpKey": ["type", "service_account"]}, "gcpKey"),
    "empty gcpKey": ("gcp", {"gcpKey": {}}, "gcpKey"),
    "nested gcpKey": ("gcp", {"gcpKey": {"type": {"nested": "x"}}}, "gcpKey"),
    "gcpKey string not JSON": ("gcp", {"gcpKey": "{not json"}, "gcpKey"),
    "s3 with only awsAccessKeyId": ("s3", {"awsAccessKeyId": "AKIA"}, "awsSecretAccessKey"),
    "s3 with nothing": ("s3", {}, "awsAccessKeyId"),
    "value over 32768 chars": ("basic", {"user": "u" * (credential_types.VALUE_MAX + 1), "password": "p"}, "user"),
    "description not a string": ("basic", {"user": "u", "password": "p", "description": 5}, "description"),
    "description too long": (
        "basic",
        {"user": "u", "password": "p", "description": "d" * (credential_types.DESCRIPTION_MAX + 1)},
        "description",
    ),
    "description with NUL": ("basic", {"user": "u", "password": "p", "description": "a\x00b"}, "description"),
}


@pytest.mark.parametrize(("type_name", "fields", "field"), BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_bad_field_is_422(api: httpx.Client, type_name: str, fields: dict[str, Any], field: str) -> None:
    resp = api.post("credentials/", json={"name": unique(), "credentialType": type_name, **fields})
    assert_error(resp, 422, field)
    assert len(resp.content) < 2000, "the error echoes the input"


def test_rejected_secret_values_are_not_echoed(api: httpx.Client, guard: LeakGuard) -> None:
    """A value rejected for its type or length may still be a real secret: never repeat it in the error."""
    bad = [
        {"user": "u", "password": [guard.secret()]},
        {"user": "u", "password": guard.secret() + "x" * credential_types.VALUE_MAX},
        {"credentialType": "gcp", "gcpKey": "{" + guard.secret()},
        {"credentialType": "gcp", "gcpKey": {"private_key": [guard.secret()]}},
    ]
    for fields in bad:
        assert_error(api.post("credentials/", json={"name": unique(), **fields}), 422)


@pytest.mark.parametrize("type_name", EXCLUSIVE_TYPES)
def test_config_id_with_keys_is_422(api: httpx.Client, guard: LeakGuard, type_name: str) -> None:
    """`configId` stands for the secret fields and cannot be combined with them (client docstrings)."""
    ctype = credential_types.TYPES[type_name]
    assert_error(api.post("credentials/", json=complete_body(ctype, guard, configId="cfg")), 422, "configId")
    for f in ctype.fields:  # each other field alone is enough to conflict
        if f.name != "configId":
            body = {"name": unique(), "credentialType": type_name, "configId": "cfg", f.name: field_value(f, guard)}
            assert_error(api.post("credentials/", json=body), 422, "configId")


@pytest.mark.parametrize("payload", [[], [{"name": "x"}], "basic", 42, 1.5, True], ids=repr)
def test_non_object_body_is_422(api: httpx.Client, payload: Any) -> None:
    assert_error(api.post("credentials/", json=payload), 422, "body")


@pytest.mark.parametrize("content", [b"", b"   \n", b"null"], ids=["no bytes", "whitespace", "null"])
def test_empty_body_on_post_is_422(api: httpx.Client, content: bytes) -> None:
    assert_error(api.post("credentials/", content=content, headers={"Content-Type": "application/json"}), 422, "body")


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"name": "x",}', b'{"name": "x"', b"{'name': 'x'}", b'{"name": "\xff"}', b'"\\ud800"'],
    ids=["garbage", "trailing comma", "truncated", "single quotes", "invalid utf-8", "lone surrogate"],
)
def test_malformed_json_is_400(api: httpx.Client, content: bytes) -> None:
    """400 saying what is wrong and where, without quoting the body (it may hold a secret)."""
    resp = api.post("credentials/", content=content, headers={"Content-Type": "application/json"})
    body = assert_error(resp, 400, "body")
    assert re.search(r"not valid JSON \(.+ at character \d+\)", body["message"]), body["message"]
    assert b"name" not in resp.content


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000,
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"name": "deep", "user": "u", "password": "p", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        orjson.dumps({"name": unique(), "credentialType": "gcp", "gcpKey": "[" * 100_000}),
    ],
    ids=["100000 open brackets", "arrays", "objects", "inside a valid body", "inside the gcpKey string"],
)
def test_deeply_nested_json_is_4xx(api: httpx.Client, content: bytes) -> None:
    """Deep nesting must not exhaust the stack or reach the store: a 400 saying so (422 for the gcpKey
    string, which is parsed as a field value), never a 5xx."""
    resp = api.post("credentials/", content=content, headers={"Content-Type": "application/json"})
    if b"gcpKey" in content:
        assert_error(resp, 422, "gcpKey")
    else:
        body = assert_error(resp, 400, "body")
        assert "nested more than 1024 levels" in body["message"]
    assert api.get("credentials/").json()["totalCount"] == 0


def _padded(size: int) -> bytes:
    """A valid basic body padded with whitespace to exactly `size` bytes."""
    raw = orjson.dumps({"name": unique("big"), "user": "u", "password": "p"})
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def test_body_limit_boundary(api: httpx.Client) -> None:
    """Exactly the limit is accepted; one byte more is 422 stating the limit. Never 413, which the DataRobot
    client retries for ~100 s (spec §6)."""
    assert api.post("credentials/", content=_padded(BODY_LIMIT)).status_code == 201
    body = assert_error(api.post("credentials/", content=_padded(BODY_LIMIT + 1)), 422)
    assert str(BODY_LIMIT) in body["message"]


def test_body_over_limit_without_content_length_is_422(api: httpx.Client) -> None:
    """A chunked body declares no length; the limit must be enforced while reading, still as a 422."""
    content = _padded(BODY_LIMIT + 4096)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 65536):
            yield content[start : start + 65536]

    resp = api.post("credentials/", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in resp.request.headers
    body = assert_error(resp, 422)
    assert str(BODY_LIMIT) in body["message"]
    assert api.get("credentials/").json()["totalCount"] == 0


# ---- §3.2: name uniqueness ----------------------------------------------------------------------------


def test_duplicate_name_is_409_per_user(api: httpx.Client, other_api: httpx.Client) -> None:
    """Names are unique per owner: the same user gets 409 (R1), another user may reuse the name."""
    name = unique("dup")
    create_basic(api, name=name)
    assert_error(api.post("credentials/", json={"name": name, "credentialType": "s3", "configId": "c"}), 409, "name")
    assert other_api.post("credentials/", json={"name": name, "user": "u", "password": "p"}).status_code == 201
    assert api.get("credentials/").json()["totalCount"] == 1


def test_concurrent_duplicate_names_give_one_201(server: Server, token: str) -> None:
    """Racing creates of one name: exactly one wins, the rest are 409 (not 500 from the unique index)."""
    name, racers = unique("race"), 8
    barrier = threading.Barrier(racers)

    def attempt(_: int) -> int:
        with client(server, token) as c:
            barrier.wait()
            resp = c.post("credentials/", json={"name": name, "user": "u", "password": "p"})
            if resp.status_code != 201:
                assert_error(resp, 409, "name")
            return resp.status_code

    with ThreadPoolExecutor(racers) as pool:
        codes = sorted(pool.map(attempt, range(racers)))
    assert codes == [201] + [409] * (racers - 1)


# ---- §3.3: retrieve and isolation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "credential_id",
    [UNKNOWN_ID, "abc", "0123456789ABCDEF01234567", "0123456789abcdef0123456", "0123456789abcdef012345678", "%00"],
    ids=["unknown", "short", "uppercase", "23 hex", "25 hex", "NUL"],
)
def test_get_unknown_or_malformed_id_is_404(api: httpx.Client, credential_id: str) -> None:
    assert_error(api.get(f"credentials/{credential_id}/"), 404)


def test_another_users_credential_is_indistinguishable_from_missing(api: httpx.Client, other_api: httpx.Client) -> None:
    """404 with the very same body as an unknown id, for every verb, so ids cannot be probed; nothing changes."""
    mine = create_basic(api, description="keep")
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"name": "stolen"}}), ("DELETE", {})):
        theirs = other_api.request(method, f"credentials/{mine['credentialId']}/", **kwargs)
        missing = other_api.request(method, f"credentials/{UNKNOWN_ID}/", **kwargs)
        assert assert_error(theirs, 404) == assert_error(missing, 404)
    assert other_api.get("credentials/").json()["totalCount"] == 0
    assert api.get(f"credentials/{mine['credentialId']}/").json() == mine


# ---- §3.1: list -------------------------------------------------------------------------------------------


def test_empty_list_has_every_key(api: httpx.Client) -> None:
    """The client reads `data` and `next` unconditionally: both must be present even when empty."""
    resp = api.get("credentials/")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"count": 0, "next": None, "previous": None, "data": [], "totalCount": 0}


@pytest.fixture
def seven(api: httpx.Client) -> list[dict[str, Any]]:
    """Seven credentials created one after another (c0 oldest … c6 newest)."""
    return [create_basic(api, name=f"c{i}") for i in range(7)]


def test_pagination_follows_absolute_next_links(server: Server, api: httpx.Client, seven: list[dict[str, Any]]) -> None:
    """`next` is absolute (a root-relative path makes the client raise); following it visits all 7 once,
    newest first, and `previous` links back to the page before."""
    first = api.get("credentials/", params={"limit": 3})
    pages = follow_pages(api, first)
    assert [p["count"] for p in pages] == [3, 3, 1]
    assert all(p["totalCount"] == 7 for p in pages)
    names = [item["name"] for p in pages for item in p["data"]]
    assert names == [f"c{i}" for i in reversed(range(7))]
    ids = [item["credentialId"] for p in pages for item in p["data"]]
    assert sorted(ids) == sorted(c["credentialId"] for c in seven)
    for page in pages[:-1]:
        assert page["next"].startswith(f"{server.api}/credentials/?"), page["next"]
    assert pages[0]["previous"] is None and pages[-1]["next"] is None
    for before, page in pairwise(pages):
        assert page["previous"].startswith(f"{server.api}/credentials/?"), page["previous"]
        assert api.get(page["previous"]).json()["data"] == before["data"]


def test_default_page_holds_all_and_items_match_get(api: httpx.Client, seven: list[dict[str, Any]]) -> None:
    """The client's first call has no query string; each item is the same object GET returns."""
    page = api.get("credentials/").json()
    assert page["count"] == page["totalCount"] == 7 and page["next"] is None and page["previous"] is None
    for item in page["data"]:
        assert api.get(f"credentials/{item['credentialId']}/").json() == item


def test_order_by(api: httpx.Client, seven: list[dict[str, Any]]) -> None:
    """Default -creationDate is newest first; creationDate is oldest first, and paging keeps the order."""
    newest_first = [f"c{i}" for i in reversed(range(7))]
    assert list_names(api) == newest_first
    assert list_names(api, orderBy="-creationDate", limit=2) == newest_first
    assert list_names(api, orderBy="creationDate") == newest_first[::-1]
    assert list_names(api, orderBy="creationDate", limit=2) == newest_first[::-1]


def test_offset_past_the_end(api: httpx.Client, seven: list[dict[str, Any]]) -> None:
    page = api.get("credentials/", params={"offset": 10, "limit": 3}).json()
    assert page["data"] == [] and page["count"] == 0 and page["next"] is None and page["totalCount"] == 7
    assert page["previous"] is not None


def test_types_filter(api: httpx.Client, guard: LeakGuard) -> None:
    """One type, comma-joined (R1) and repeated (docs) filters; totalCount counts the filtered set and the
    filter survives the `next` link."""
    made = {
        name: create(api, complete_body(credential_types.TYPES[name], guard))["name"]
        for name in ("basic", "s3", "azure")
    }
    extra_s3 = create(api, {"name": unique("s3b"), "credentialType": "s3", "configId": "cfg"})["name"]

    def names(params: Any) -> set[str]:
        first = api.get("credentials/", params=params)
        pages = follow_pages(api, first)
        assert all(p["totalCount"] == sum(len(q["data"]) for q in pages) for p in pages)
        return {item["name"] for p in pages for item in p["data"]}

    assert names({"types": "s3"}) == {made["s3"], extra_s3}
    assert names({"types": "s3", "limit": 1}) == {made["s3"], extra_s3}
    both = {made["s3"], extra_s3, made["basic"]}
    assert names({"types": "s3,basic"}) == both
    assert names([("types", "s3"), ("types", "basic")]) == both
    assert names([("types", "s3"), ("types", "basic"), ("limit", "1")]) == both
    assert names({"types": "gcp"}) == set()
    assert names({}) == {*made.values(), extra_s3}


@pytest.mark.parametrize("types_param", ["bogus", "s3,bogus", "S3"])
def test_unknown_type_in_filter_is_422(api: httpx.Client, types_param: str) -> None:
    body = assert_error(api.get("credentials/", params={"types": types_param}), 422)
    assert "s3" in body["message"] and "basic" in body["message"], "the message should list the valid types"


BAD_LIST_PARAMS = [
    ("limit", "-1"),
    ("limit", "0"),
    ("limit", "100000"),
    ("limit", "abc"),
    ("limit", "1.5"),
    ("offset", "abc"),
    ("offset", "-1"),
    ("offset", "--5"),
    ("limit", "0x10"),
    ("limit", "٣"),
    ("orderBy", "name"),
    ("orderBy", ""),
    ("orderBy", "creationdate"),
]


@pytest.mark.parametrize(("param", "value"), BAD_LIST_PARAMS, ids=[f"{p}={v}" for p, v in BAD_LIST_PARAMS])
def test_bad_list_parameter_is_422(api: httpx.Client, param: str, value: str) -> None:
    assert_error(api.get("credentials/", params={param: value}), 422, param)


@pytest.mark.parametrize("value", [str(2**63), "9" * 30])
def test_huge_offset_is_422_not_500(api: httpx.Client, value: str) -> None:
    """The query parameter is an unbounded int, passed straight to OFFSET: a client typo must be a 422."""
    assert_error(api.get("credentials/", params={"offset": value}), 422, "offset")


def test_limit_bounds_accepted(api: httpx.Client) -> None:
    for limit in (1, 1000):
        assert api.get("credentials/", params={"limit": limit}).status_code == 200


# ---- §3.4: update ------------------------------------------------------------------------------------------


def patch(api: httpx.Client, cred: dict[str, Any], body: Any) -> httpx.Response:
    return api.patch(f"credentials/{cred['credentialId']}/", json=body)


def patched(api: httpx.Client, cred: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """PATCH expecting 200 with the updated object (T1 decodes it), equal to what GET then returns."""
    resp = patch(api, cred, body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    result: dict[str, Any] = resp.json()
    assert api.get(f"credentials/{cred['credentialId']}/").json() == result
    for key in ("credentialId", "credentialType", "creationDate"):
        assert result[key] == cred[key], f"PATCH changed {key}"
    return result


def test_patch_name_and_description(api: httpx.Client) -> None:
    cred = create_basic(api, description="old")
    result = patched(api, cred, {"name": "renamed", "description": "new"})
    assert result["name"] == "renamed" and result["description"] == "new"


def test_patch_name_alone_clears_description(api: httpx.Client) -> None:
    """DataRobot's rule (R1 CredentialsUpdate, client docstring): a new name without description clears it."""
    cred = create_basic(api, description="will be cleared")
    result = patched(api, cred, {"name": unique("renamed")})
    assert result["description"] == ""


def test_patch_description_alone_keeps_name(api: httpx.Client) -> None:
    cred = create_basic(api, description="old")
    result = patched(api, cred, {"description": "new"})
    assert result["name"] == cred["name"] and result["description"] == "new"
    cleared = patched(api, cred, {"description": ""})
    assert cleared["name"] == cred["name"] and cleared["description"] == ""


def test_patch_same_name_is_not_a_conflict(api: httpx.Client) -> None:
    cred = create_basic(api, description="d")
    assert patched(api, cred, {"name": cred["name"], "description": "d"})["name"] == cred["name"]


@pytest.mark.parametrize("type_name", SECRET_TYPES)
def test_patch_secret_fields(api: httpx.Client, guard: LeakGuard, type_name: str) -> None:
    """Updating secret fields answers 200 with the object, which never contains the new secret."""
    ctype = credential_types.TYPES[type_name]
    body = complete_body(ctype, guard, description="kept")
    cred = create(api, body)
    update = {f.name: field_value(f, guard) for f in ctype.fields if f.secret}
    result = patched(api, cred, update)
    assert result == cred  # name, description and public fields untouched; nothing secret added


def test_patch_public_field_updates_and_null_removes(api: httpx.Client) -> None:
    """Public fields show the new value; null clears an optional field (it then disappears)."""
    cred = create_basic(api, snowflakeAccountName="acct1")
    assert cred["snowflakeAccountName"] == "acct1"
    assert patched(api, cred, {"snowflakeAccountName": "acct2"})["snowflakeAccountName"] == "acct2"
    assert "snowflakeAccountName" not in patched(api, cred, {"snowflakeAccountName": None})


def test_patch_s3_switches_between_keys_and_config_id(api: httpx.Client, guard: LeakGuard) -> None:
    """`{"configId": …}` replaces the keys and shows in the response; sending both keys again replaces the
    configId, which disappears. One key alone is not enough, since the old secret was discarded."""
    cred = create(api, complete_body(credential_types.TYPES["s3"], guard))
    assert "configId" not in cred
    to_config = patched(api, cred, {"configId": "secure-cfg-1"})
    assert to_config["configId"] == "secure-cfg-1"
    assert_error(patch(api, cred, {"awsAccessKeyId": guard.secret()}), 422, "awsSecretAccessKey")
    assert api.get(f"credentials/{cred['credentialId']}/").json()["configId"] == "secure-cfg-1"
    back = patched(api, cred, {"awsAccessKeyId": guard.secret(), "awsSecretAccessKey": guard.secret()})
    assert "configId" not in back
    assert_error(patch(api, cred, {"configId": "c", "awsAccessKeyId": guard.secret()}), 422, "configId")


def test_patch_empty_request_is_422(api: httpx.Client) -> None:
    """`update()` with no arguments sends no body and no Content-Type (spec §3.4): 422 with R1's message."""
    cred = create_basic(api)
    resp = api.patch(f"credentials/{cred['credentialId']}/")
    assert "content-type" not in resp.request.headers and not resp.request.content
    body = assert_error(resp, 422)
    assert body["message"] == "Must specify at least one field to update"
    body = assert_error(patch(api, cred, {}), 422)
    assert body["message"] == "Must specify at least one field to update"


BAD_PATCHES: dict[str, tuple[dict[str, Any], str]] = {
    "field of another type": ({"awsAccessKeyId": "A"}, "awsAccessKeyId"),
    "unknown field": ({"nonsense": "x"}, "nonsense"),
    "change credentialType": ({"credentialType": "s3"}, "credentialType"),
    "null required user": ({"user": None}, "user"),
    "null required password": ({"password": None}, "password"),
    "null name": ({"name": None}, "name"),
    "empty name": ({"name": ""}, "name"),
    "256-char name": ({"name": "n" * (credential_types.NAME_MAX + 1)}, "name"),
    "NUL in name": ({"name": "a\x00b"}, "name"),
    "number for password": ({"password": 1}, "password"),
    "description not a string": ({"description": ["x"]}, "description"),
}


@pytest.mark.parametrize(("body", "field"), BAD_PATCHES.values(), ids=BAD_PATCHES.keys())
def test_bad_patch_is_422_and_changes_nothing(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    cred = create_basic(api, description="unchanged", snowflakeAccountName="acct")
    assert_error(patch(api, cred, body), 422, field)
    assert api.get(f"credentials/{cred['credentialId']}/").json() == cred


@pytest.mark.parametrize("type_name", ["adls_gen2_oauth", "gcp"])
def test_patch_wrong_value_type_is_422(api: httpx.Client, guard: LeakGuard, type_name: str) -> None:
    cred = create(api, complete_body(credential_types.TYPES[type_name], guard))
    field, value = ("oauthScopes", "not-a-list") if type_name == "adls_gen2_oauth" else ("gcpKey", ["x"])
    assert_error(patch(api, cred, {field: value}), 422, field)


def test_patch_malformed_or_non_object_body(api: httpx.Client) -> None:
    cred = create_basic(api)
    url = f"credentials/{cred['credentialId']}/"
    assert_error(api.patch(url, content=b"{bad", headers={"Content-Type": "application/json"}), 400)
    assert_error(api.patch(url, json=["name", "x"]), 422, "body")
    assert_error(api.patch(url, content=_padded(BODY_LIMIT + 1)), 422)


def test_patch_rename_onto_existing_name_is_409(api: httpx.Client) -> None:
    taken = create_basic(api)
    cred = create_basic(api, description="d")
    assert_error(patch(api, cred, {"name": taken["name"]}), 409, "name")
    assert api.get(f"credentials/{cred['credentialId']}/").json() == cred


@pytest.mark.parametrize("credential_id", [UNKNOWN_ID, "not-an-id"])
def test_patch_unknown_id_is_404(api: httpx.Client, credential_id: str) -> None:
    assert_error(api.patch(f"credentials/{credential_id}/", json={"name": "x"}), 404)


# ---- §3.5: delete -----------------------------------------------------------------------------------------


def test_delete(api: httpx.Client) -> None:
    """204 with an empty body; then the credential is gone for GET, PATCH, DELETE and the list, and its
    name is free again."""
    keep = create_basic(api)
    gone = create_basic(api)
    url = f"credentials/{gone['credentialId']}/"
    resp = api.delete(url)
    assert resp.status_code == 204 and resp.content == b""
    assert_error(api.get(url), 404)
    assert_error(api.patch(url, json={"name": "x"}), 404)
    assert_error(api.delete(url), 404)
    page = api.get("credentials/").json()
    assert page["data"] == [keep] and page["totalCount"] == 1
    assert create_basic(api, name=gone["name"])["credentialId"] != gone["credentialId"]


@pytest.mark.parametrize("credential_id", [UNKNOWN_ID, "xyz"])
def test_delete_unknown_id_is_404(api: httpx.Client, credential_id: str) -> None:
    assert_error(api.delete(f"credentials/{credential_id}/"), 404)


# ---- routing errors are JSON too ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "no-such-endpoint/", 404), ("PUT", "credentials/", 405), ("POST", f"credentials/{UNKNOWN_ID}/", 405)],
)
def test_routing_errors_are_json(api: httpx.Client, method: str, path: str, status: int) -> None:
    """Errors raised by the framework, not the service, must also carry the JSON content type (spec §6)."""
    assert_error(api.request(method, path), status)


# ---- OpenAPI and docs -----------------------------------------------------------------------------------


@pytest.fixture
def openapi(server: Server) -> dict[str, Any]:
    resp = httpx.get(f"{server.api}/openapi.json", timeout=30)  # no Authorization header
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc: dict[str, Any] = orjson.loads(resp.content)
    return doc


def test_openapi_lists_credential_paths(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    assert {"get", "post"} <= set(paths["/api/v2/credentials/"])
    assert {"get", "patch", "delete"} <= set(paths["/api/v2/credentials/{credentialId}/"])
    assert "get" in paths["/api/v2/version/"]


def test_openapi_create_body_has_one_schema_per_type(openapi: dict[str, Any]) -> None:
    """The discriminated union of create bodies is generated from credential_types.TYPES: one schema per type, named
    <Type>CredentialCreate, each pinning credentialType to its own name."""
    schema = openapi["paths"]["/api/v2/credentials/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    mapping = schema["discriminator"]["mapping"]
    assert schema["discriminator"]["propertyName"] == "credentialType"
    assert set(mapping) == set(credential_types.TYPES)
    assert sorted(ref["$ref"] for ref in schema["oneOf"]) == sorted(mapping.values())
    components = openapi["components"]["schemas"]
    for type_name, ref in mapping.items():
        component = ref.removeprefix("#/components/schemas/")
        assert component.endswith("CredentialCreate") and component in components, ref
        create_schema = components[component]
        assert create_schema["properties"]["credentialType"]["enum"] == [type_name]
        assert "name" in create_schema["required"]
        # credentialType is required but for the default type, which a body without it gets (DataRobot's rule)
        assert ("credentialType" in create_schema["required"]) == (type_name != credential_types.DEFAULT_TYPE)


@pytest.mark.parametrize("type_name", credential_types.TYPES)
def test_openapi_schema_matches_what_the_server_accepts(openapi: dict[str, Any], type_name: str) -> None:
    """A body the server accepts must fit the published schema: no undeclared keys, every required one."""
    ctype = credential_types.TYPES[type_name]
    ref = openapi["paths"]["/api/v2/credentials/"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "discriminator"
    ]["mapping"][type_name]
    schema = openapi["components"]["schemas"][ref.removeprefix("#/components/schemas/")]
    body = complete_body(ctype, LeakGuard(), description="d")
    assert set(body) <= set(schema["properties"]) and schema["additionalProperties"] is False
    assert set(schema["required"]) <= set(body)
    for f in ctype.fields:
        assert ("Secret" in schema["properties"][f.name]["description"]) == f.secret, f.name


def test_docs_page(server: Server) -> None:
    resp = httpx.get(f"{server.api}/docs", timeout=30)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "/api/v2/openapi.json" in resp.text
