"""The REST contract around the routes: framework errors are JSON; the OpenAPI document and docs page.

The contract is `shared/spec/credentials-api.md` beside the project. Every test talks to a live server process
(`server`, once per backend) as a fresh user (`api`), so what is asserted is exactly what the DataRobot client and
Terraform provider see on the wire. Checks that need no HTTP live in `tests/unit/`.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from strongroom import credential_types
from tests.support import (
    UNKNOWN_ID,
    LeakGuard,
    Server,
    assert_error,
    complete_body,
)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "no-such-endpoint/", 404), ("PUT", "credentials/", 405), ("POST", f"credentials/{UNKNOWN_ID}/", 405)],
)
def test_routing_errors_are_json(api: httpx.Client, method: str, path: str, status: int) -> None:
    """Errors raised by the framework, not the service, must also carry the JSON content type (spec §6)."""
    assert_error(api.request(method, path), status)


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
