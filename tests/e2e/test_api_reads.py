"""The REST contract, §3.1 and §3.3: retrieving, isolation between users, listing and paging.

The contract is `shared/spec/credentials-api.md` beside the project. Every test talks to a live server process
(`server`, once per backend) as a fresh user (`api`), so what is asserted is exactly what the DataRobot client and
Terraform provider see on the wire. Checks that need no HTTP live in `tests/unit/`.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import httpx
import pytest

from strongroom import credential_types
from tests.support import (
    UNKNOWN_ID,
    LeakGuard,
    Server,
    assert_error,
    complete_body,
    create,
    create_basic,
    follow_pages,
    list_names,
    unique,
)


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
