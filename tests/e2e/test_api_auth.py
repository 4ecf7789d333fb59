"""The REST contract, §1: the version handshake, authentication and token scopes, through real HTTP.

The contract is `shared/spec/credentials-api.md` beside the project. Every test talks to a live server process
(`server`, once per backend) as a fresh user (`api`), so what is asserted is exactly what the DataRobot client and
Terraform provider see on the wire. Checks that need no HTTP live in `tests/unit/`.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from strongroom.bootstrap import Services
from strongroom.client.client import tls_context
from strongroom.services.accounts import token_hash_of
from strongroom.store.models import ApiToken
from tests.support import (
    UNKNOWN_ID,
    Server,
    assert_error,
    client,
    open_service,
    unique,
)


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
    resp = httpx.request(method, f"{server.api}/{path}", headers=headers, json=body, timeout=30, verify=tls_context())
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


def _lasting_and_brief(service: Services, prefix: str) -> tuple[str, ApiToken, str, str, datetime]:
    """A new user with a lasting token and one that expires in 3 s: (username, the lasting token's row, its raw
    value, the brief token's raw value, when it expires)."""
    username = unique(prefix)
    service.accounts.create_user(username)
    live, raw = service.accounts.create_token(username)
    expires = datetime.now(UTC) + timedelta(seconds=3)
    _, brief = service.accounts.create_token(username, name="brief", expires_at=expires)
    return username, live, raw, brief, expires


def test_creates_recheck_a_token_the_server_has_seen(server: Server) -> None:
    """On PostgreSQL a create by a token the server authenticated before is one statement whose insert
    re-checks the token: revoked, or expired since, it answers 401 and inserts nothing."""
    with open_service(server) as service:
        username, live, raw, brief, expires = _lasting_and_brief(service, "creator")
        with client(server, raw) as c:
            for i in range(3):  # seen, then remembered
                assert c.post("credentials/", json={"name": f"a{i}", "user": "u", "password": "p"}).status_code == 201
            service.accounts.revoke_token(live.id)
            assert_error(c.post("credentials/", content=b"{nope"), 401)  # not 400: the token comes first
            assert_error(c.post("credentials/", json={"name": "late", "user": "u", "password": "p"}), 401)
            assert_error(c.post("credentials/", json={"name": "late"}), 401)  # nor 422
        with client(server, brief) as c:
            assert c.post("credentials/", json={"name": "b0", "user": "u", "password": "p"}).status_code == 201
            assert c.post("credentials/", json={"name": "b1", "user": "u", "password": "p"}).status_code == 201
            threading.Event().wait(max((expires - datetime.now(UTC)).total_seconds(), 0) + 0.2)  # now expired
            assert_error(c.post("credentials/", json={"name": "b2", "user": "u", "password": "p"}), 401)
        _, fresh = service.accounts.create_token(username, name="fresh")
        with client(server, fresh) as c:
            names = {item["name"] for item in c.get("credentials/").json()["data"]}
        assert names == {"a0", "a1", "a2", "b0", "b1"}


def test_updates_recheck_a_token_the_server_has_seen(server: Server) -> None:
    """A PATCH by a token the server authenticated before skips the separate authentication: its write re-checks
    the token (SQLite: in the committer's transaction; PostgreSQL: in its one statement). Revoked or expired
    since, it answers 401 and changes nothing; every refusal is the ordinary path's (a stale If-Match 412,
    an unknown id 404, a taken name 409)."""
    with open_service(server) as service:
        username, live, raw, brief, expires = _lasting_and_brief(service, "updater")
        with client(server, raw) as c:
            cid = c.post("credentials/", json={"name": "u0", "user": "u", "password": "p"}).json()["credentialId"]
            c.post("credentials/", json={"name": "taken", "user": "u", "password": "p"})
            for i in range(3):  # seen, then remembered
                patched = c.patch(f"credentials/{cid}/", json={"password": f"p{i}"})
                assert patched.status_code == 200 and patched.headers["etag"] == f'"{i + 2}"', patched.text
            assert_error(c.patch(f"credentials/{cid}/", json={"name": "taken"}), 409)
            assert_error(c.patch(f"credentials/{cid}/", json={"password": "x"}, headers={"If-Match": '"1"'}), 412)
            assert_error(c.patch("credentials/0123456789abcdef01234567/", json={"password": "x"}), 404)
            service.accounts.revoke_token(live.id)
            assert_error(c.patch(f"credentials/{cid}/", content=b"{nope"), 401)  # not 400: the token comes first
            assert_error(c.patch(f"credentials/{cid}/", json={"password": "late"}), 401)
            assert_error(c.patch(f"credentials/{cid}/", json={"user": 5}), 401)  # nor 422
        with client(server, brief) as c:
            assert c.patch(f"credentials/{cid}/", json={"description": "b0"}).status_code == 200
            assert c.patch(f"credentials/{cid}/", json={"description": "b1"}).status_code == 200
            threading.Event().wait(max((expires - datetime.now(UTC)).total_seconds(), 0) + 0.2)  # now expired
            assert_error(c.patch(f"credentials/{cid}/", json={"description": "b2"}), 401)
        _, fresh = service.accounts.create_token(username, name="fresh")
        with client(server, fresh) as c:
            now = c.get(f"credentials/{cid}/")
        assert now.json()["description"] == "b1" and now.headers["etag"] == '"6"'
        assert service.credentials.secrets(service.accounts.authenticate(fresh), cid)["password"] == "p2"


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
        hashed = token_hash_of(raw)
        assert orjson.loads(service.credentials.get_for_token(hashed, cid)[0])["credentialId"] == cid  # one statement
        listed = service.credentials.list_for_token(hashed, **page_args)
        assert [c["credentialId"] for c in listed.credentials()] == [cid]
        for token in (expired, write_only, other, raw[:-1] + "x"):  # and hands every doubtful case over
            assert service.credentials.get_for_token(token_hash_of(token), cid) is None
            if token != other:
                assert service.credentials.list_for_token(token_hash_of(token), **page_args) is None
        # another user's list: theirs, so empty
        empty = service.credentials.list_for_token(token_hash_of(other), **page_args)
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
            service.credentials.get_for_token(token_hash_of(raw), cid) is None
            and service.credentials.list_for_token(token_hash_of(raw), **page_args) is None
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
    assert_error(httpx.request(method, f"{server.api}/{path}", content=content, timeout=30, verify=tls_context()), 401)
