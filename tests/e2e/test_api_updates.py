"""The REST contract, §3.4 and §3.5: PATCH and DELETE.

The contract is `shared/spec/credentials-api.md` beside the project. Every test talks to a live server process
(`server`, once per backend) as a fresh user (`api`), so what is asserted is exactly what the DataRobot client and
Terraform provider see on the wire. Checks that need no HTTP live in `tests/unit/`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from strongroom import credential_types
from tests.support import (
    BODY_LIMIT,
    SECRET_TYPES,
    UNKNOWN_ID,
    LeakGuard,
    assert_error,
    complete_body,
    create,
    create_basic,
    field_value,
    padded,
    unique,
)


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


def test_patch_malformed_or_non_object_body(api: httpx.Client) -> None:
    cred = create_basic(api)
    url = f"credentials/{cred['credentialId']}/"
    assert_error(api.patch(url, content=b"{bad", headers={"Content-Type": "application/json"}), 400)
    assert_error(api.patch(url, json=["name", "x"]), 422, "body")
    assert_error(api.patch(url, content=padded(BODY_LIMIT + 1)), 422)


def test_patch_rename_onto_existing_name_is_409(api: httpx.Client) -> None:
    taken = create_basic(api)
    cred = create_basic(api, description="d")
    assert_error(patch(api, cred, {"name": taken["name"]}), 409, "name")
    assert api.get(f"credentials/{cred['credentialId']}/").json() == cred


@pytest.mark.parametrize("credential_id", [UNKNOWN_ID, "not-an-id"])
def test_patch_unknown_id_is_404(api: httpx.Client, credential_id: str) -> None:
    assert_error(api.patch(f"credentials/{credential_id}/", json={"name": "x"}), 404)


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


@pytest.mark.parametrize(
    ("body", "field"), [({"user": None}, "user"), ({"credentialType": "s3"}, "credentialType")], ids=["null", "type"]
)
def test_invalid_patch_is_422_json_and_changes_nothing(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    """A rejected PATCH on the wire: 422 JSON naming the field, and GET shows the credential unchanged. Every case
    of the table is in tests/unit/test_validation.py."""
    cred = create_basic(api, description="unchanged", snowflakeAccountName="acct")
    assert_error(patch(api, cred, body), 422, field)
    assert api.get(f"credentials/{cred['credentialId']}/").json() == cred
