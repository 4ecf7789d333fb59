"""Finding credentials by name through a server: `?name=` and `?search=` on the list (documented, paged, on the
ordinary path), `Credential.list(name=, search=)` and `Credential.get_by_name` in the SDK, and ID|NAME in the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

import strongroom as sr
from tests.support import Server, assert_error, client, create_basic, open_service, unique


@pytest.fixture
def names(api: httpx.Client) -> dict[str, str]:
    """Three of the caller's credentials: name -> id."""
    made = {}
    for name in ("warehouse", "Warehouse-EU", "lake"):
        made[name] = create_basic(api, name)["credentialId"]
    return made


def _names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["data"]]


def test_name_is_exact_and_search_ignores_case(api: httpx.Client, names: dict[str, str]) -> None:
    assert _names(api.get("/credentials/", params={"name": "warehouse"})) == ["warehouse"]
    assert _names(api.get("/credentials/", params={"name": "WAREHOUSE"})) == []
    assert _names(api.get("/credentials/", params={"name": "ware"})) == []
    found = api.get("/credentials/", params={"search": "WARE", "orderBy": "creationDate"})
    assert _names(found) == ["warehouse", "Warehouse-EU"] and found.json()["totalCount"] == 2
    assert found.json()["data"][0]["role"] == "OWNER"
    assert _names(api.get("/credentials/", params={"search": "ware", "types": "s3"})) == []


def test_a_filtered_list_pages_with_its_filter(api: httpx.Client, names: dict[str, str]) -> None:
    first = api.get("/credentials/", params={"search": "house", "limit": 1, "orderBy": "creationDate"})
    assert _names(first) == ["warehouse"] and first.json()["totalCount"] == 2
    assert "search=house" in first.json()["next"]
    second = api.get(first.json()["next"].split("/api/v2", 1)[1])
    assert _names(second) == ["Warehouse-EU"] and second.json()["next"] is None


def test_bad_filters_are_422(api: httpx.Client) -> None:
    assert_error(api.get("/credentials/", params={"name": "x" * 256}), 422, "name")
    assert_error(api.get("/credentials/", params={"search": ""}), 422, "search")


def test_filters_are_in_the_openapi_document(server: Server) -> None:
    doc = httpx.get(f"{server.api}/openapi.json").json()
    parameters = {p["name"]: p for p in doc["paths"]["/api/v2/credentials/"]["get"]["parameters"]}
    no_nul = "^[^\\x00]*$"  # a NUL is refused (422), as no stored name holds one
    assert parameters["name"]["schema"] == {"type": "string", "minLength": 1, "maxLength": 255, "pattern": no_nul}
    assert parameters["search"]["in"] == "query" and parameters["search"]["schema"]["pattern"] == no_nul


@pytest.fixture
def sdk(server: Server, token: str) -> Iterator[sr.Client]:
    with sr.Client(endpoint=server.api, token=token) as connected:
        yield connected


def test_sdk_lists_and_gets_by_name(sdk: sr.Client, names: dict[str, str]) -> None:
    assert [c.credential_id for c in sr.Credential.list(name="lake")] == [names["lake"]]
    assert sorted(c.name for c in sr.Credential.list(search="WARE")) == ["Warehouse-EU", "warehouse"]
    assert sr.Credential.get_by_name("Warehouse-EU").credential_id == names["Warehouse-EU"]
    with pytest.raises(sr.ClientError) as missing:
        sr.Credential.get_by_name("nowhere")
    assert missing.value.status_code == 404 and missing.value.message == "credential not found: none named 'nowhere'"


def test_get_by_name_refuses_an_ambiguous_name(server: Server, sdk: sr.Client, names: dict[str, str]) -> None:
    with open_service(server) as service:
        me = service.accounts.authenticate(sdk._http.headers["Authorization"].split()[1]).username
        service.accounts.create_user(sharer := unique("sharer"))
        theirs = service.accounts.create_token(sharer)[1]
    with client(server, theirs) as other:
        cid = create_basic(other, "warehouse")["credentialId"]
        share = {"operation": "updateRoles", "roles": [{"username": me, "role": "CONSUMER"}]}
        assert other.patch(f"/credentials/{cid}/sharedRoles/", json=share).status_code == 204
    assert {c.credential_id for c in sr.Credential.list(name="warehouse")} == {names["warehouse"], cid}
    with pytest.raises(sr.StrongroomSDKError, match="2 credentials named 'warehouse'"):
        sr.Credential.get_by_name("warehouse")


def test_cli_takes_a_name_wherever_it_takes_an_id(server: Server, token: str, api: httpx.Client) -> None:
    env_token = ("--token", token)
    made = create_basic(api, "warehouse")["credentialId"]
    id_like = "0123456789abcdef01234567"  # a name with an id's shape is still found by name
    create_basic(api, id_like)
    got = server.cli("credentials", "get", "warehouse", "--json", *env_token)
    assert json.loads(got.stdout)["credentialId"] == made
    assert json.loads(server.cli("credentials", "get", made, "--json", *env_token).stdout)["name"] == "warehouse"
    assert json.loads(server.cli("credentials", "get", id_like, "--json", *env_token).stdout)["name"] == id_like
    listed = server.cli("credentials", "list", "--search", "HOUSE", "--json", *env_token)
    assert [c["name"] for c in json.loads(listed.stdout)] == ["warehouse"]
    listed = server.cli("credentials", "list", "--name", id_like, "--json", *env_token)
    assert [c["name"] for c in json.loads(listed.stdout)] == [id_like]
    server.cli("credentials", "update", "warehouse", "--description", "main", *env_token)
    assert api.get(f"/credentials/{made}/").json()["description"] == "main"
    missing = server.cli("credentials", "get", "nowhere", *env_token, check=False)
    assert missing.returncode == 1 and missing.stderr == "Error: credential not found: none named 'nowhere'\n"
    unknown = server.cli("credentials", "get", "f" * 24, *env_token, check=False)
    assert unknown.stderr == f"Error: credential not found: no credential has the id or the name {'f' * 24!r}\n"
    server.cli("credentials", "delete", "warehouse", "--yes", *env_token)
    assert api.get(f"/credentials/{made}/").status_code == 404
