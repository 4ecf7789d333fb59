"""The REST contract, §2, §3.2 and §6: creating every type, request bodies, limits, name uniqueness.

The contract is `shared/spec/credentials-api.md` beside the project. Every test talks to a live server process
(`server`, once per backend) as a fresh user (`api`), so what is asserted is exactly what the DataRobot client and
Terraform provider see on the wire. Checks that need no HTTP live in `tests/unit/`.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from strongroom import credential_types
from tests.support import (
    BASE_KEYS,
    BODY_LIMIT,
    EXCLUSIVE_TYPES,
    LeakGuard,
    Server,
    assert_credential,
    assert_error,
    client,
    complete_body,
    create,
    create_basic,
    padded,
    unique,
)


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


def test_missing_credential_type_defaults_to_basic(api: httpx.Client) -> None:
    """DataRobot documents `basic` as the default credentialType (D2)."""
    created = create(api, {"name": unique(), "user": "u", "password": "p"})
    assert created["credentialType"] == "basic"
    assert api.get(f"credentials/{created['credentialId']}/").json()["credentialType"] == "basic"


def test_gcp_key_camel_case_and_json_string(api: httpx.Client, guard: LeakGuard) -> None:
    """`update(gcp_key=…)` camelCases nested keys and `create_gcp` may pass a JSON string (spec §3.2, §3.4)."""
    camel = {"type": "service_account", "projectId": "p", "privateKeyId": guard.secret(), "privateKey": guard.secret()}
    snake = {"type": "service_account", "project_id": "p", "private_key": guard.secret()}
    for gcp_key in (camel, orjson.dumps(snake).decode()):
        created = create(api, {"name": unique("gcp"), "credentialType": "gcp", "gcpKey": gcp_key})
        assert set(created) == BASE_KEYS and created["credentialType"] == "gcp"


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


def test_body_limit_boundary(api: httpx.Client) -> None:
    """Exactly the limit is accepted; one byte more is 422 stating the limit. Never 413, which the DataRobot
    client retries for ~100 s (spec §6)."""
    assert api.post("credentials/", content=padded(BODY_LIMIT)).status_code == 201
    body = assert_error(api.post("credentials/", content=padded(BODY_LIMIT + 1)), 422)
    assert str(BODY_LIMIT) in body["message"]


def test_body_over_limit_without_content_length_is_422(api: httpx.Client) -> None:
    """A chunked body declares no length; the limit must be enforced while reading, still as a 422."""
    content = padded(BODY_LIMIT + 4096)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 65536):
            yield content[start : start + 65536]

    resp = api.post("credentials/", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in resp.request.headers
    body = assert_error(resp, 422)
    assert str(BODY_LIMIT) in body["message"]
    assert api.get("credentials/").json()["totalCount"] == 0


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


def test_name_boundaries_accepted(api: httpx.Client) -> None:
    """255 characters is the limit in characters, not bytes (multi-byte names must fit on PostgreSQL too)."""
    for name in ("x" * credential_types.NAME_MAX, "名" * credential_types.NAME_MAX, "a", "名前 with spaces ✓"):
        assert create_basic(api, name=name)["name"] == name


HTTP_VALIDATION: dict[str, tuple[dict[str, Any], str]] = {
    "10000-char name": ({"name": "y" * 10_000, "user": "u", "password": "p"}, "name"),
    "unknown type": ({"name": "x", "credentialType": "nope", "user": "u", "password": "p"}, "credentialType"),
    "missing required": ({"name": "x", "user": "u"}, "password"),
    "number for password": ({"name": "x", "user": "u", "password": 12345}, "password"),
    "configId with keys": ({"name": "x", "credentialType": "s3", "configId": "c", "awsAccessKeyId": "A"}, "configId"),
}


@pytest.mark.parametrize(("body", "field"), HTTP_VALIDATION.values(), ids=HTTP_VALIDATION.keys())
def test_invalid_body_is_422_json_naming_the_field(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    """The service's validation reaches the wire as spec §6 says: 422, JSON, the field named in `message` and
    `errors`, the value not echoed, nothing stored. Every case of the tables is in tests/unit/test_validation.py."""
    resp = api.post("credentials/", json=body)
    assert_error(resp, 422, field)
    assert len(resp.content) < 1000, "the error echoes the input"
    assert api.get("credentials/").json()["totalCount"] == 0
