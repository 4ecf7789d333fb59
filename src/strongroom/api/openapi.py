"""The OpenAPI document, assembled from the endpoints' own declarations and the credential types."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from strongroom import __version__, credential_types
from strongroom.api.http import IF_MATCH_MAX, IF_MATCH_PATTERN

CREDENTIAL = {"$ref": "#/components/schemas/Credential"}
ERROR = {"$ref": "#/components/schemas/Error"}
_ANSWERS = {
    400: "Malformed JSON",
    401: "Missing or invalid token",
    403: "The token lacks the scope",
    404: "Not found",
    409: "Name in use",
    412: "If-Match names a revision that is no longer current: GET the credential again",
    422: "Invalid",
    429: "Too many failed authentications from this client; retry after `Retry-After` seconds",
    502: "An outside service (such as an OAuth provider) failed or is unreachable",
    503: "Database unavailable; retry after `Retry-After` seconds",
    504: "An outside service (such as an OAuth provider) did not answer in time",
}


def filter_text(max_length: int | None = None) -> dict[str, Any]:
    """The schema of a text filter in a query: no NUL (no stored text holds one: 422), at most `max_length`
    characters when the route enforces a bound."""
    bound = {} if max_length is None else {"maxLength": max_length}
    return {"type": "string", **bound, "pattern": "^[^\\x00]*$"}


def answers(*codes: int) -> dict[str, dict[str, Any]]:
    """Error answers of an operation; 503 (database unreachable) can meet every route that reaches the store."""
    retry = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
    return {
        str(c): {
            "description": _ANSWERS[c],
            "content": {"application/json": {"schema": ERROR}},
            **({"headers": retry} if c in (429, 503) else {}),
        }
        for c in (*codes, 503)
    }


def credential_id_parameter() -> dict[str, Any]:
    return {
        "name": "credentialId",
        "in": "path",
        "required": True,
        "description": "The credential's id (24 hex digits)",
        "schema": {"type": "string"},
    }


def if_match_parameter() -> dict[str, Any]:
    return {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": 'Apply only if the credential is still at this revision (its ETag, such as `"3"`); else 412',
        "schema": {"type": "string", "pattern": IF_MATCH_PATTERN, "maxLength": IF_MATCH_MAX},
    }


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _schema_name(type_name: str) -> str:
    return "".join(p.capitalize() for p in type_name.split("_")) + "CredentialCreate"


def create_body_schema() -> dict[str, Any]:
    """One of the per-type create schemas, chosen by `credentialType`."""
    names = {t.name: f"#/components/schemas/{_schema_name(t.name)}" for t in credential_types.TYPES.values()}
    return {
        "title": "New credential",
        "oneOf": [{"$ref": ref} for ref in names.values()],
        "discriminator": {"propertyName": "credentialType", "mapping": names},
    }


def components() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        _schema_name(t.name): credential_types.create_schema(t) for t in credential_types.TYPES.values()
    }
    schemas["Credential"] = credential_types.credential_schema()
    schemas["CredentialList"] = {
        "title": "Page of credentials",
        "type": "object",
        "required": ["count", "next", "previous", "data", "totalCount"],
        "properties": {
            "count": {"type": "integer"},
            "next": {"type": ["string", "null"], "format": "uri"},
            "previous": {"type": ["string", "null"], "format": "uri"},
            "data": {"type": "array", "items": CREDENTIAL},
            "totalCount": {"type": "integer"},
        },
    }
    schemas["Error"] = {
        "title": "Error",
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {"type": "string", "minLength": 1},
            "errors": {"type": "object", "additionalProperties": {"type": "string"}, "description": "field: problem"},
        },
    }
    schemas["Version"] = {
        "title": "API version",
        "type": "object",
        "required": ["major", "minor", "versionString"],
        "properties": {
            "major": {"type": "integer"},
            "minor": {"type": "integer"},
            "versionString": {"type": "string"},
            "releasedVersion": {"type": "string"},
        },
    }
    return {
        "schemas": schemas,
        "securitySchemes": {
            "token": {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer <token>`; `Token <token>` is accepted too",
            }
        },
    }


def document(endpoints: Iterable[Any], prefix: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for `endpoints` (each with method, path, scope and doc) under `prefix`."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation = {**endpoint.doc}
        if endpoint.scope:
            operation["description"] = (
                operation.get("description", "") + f"\n\nNeeds a token with the `{endpoint.scope}` scope."
            ).strip()
        operation.setdefault("operationId", f"{endpoint.handler.__name__}")
        paths.setdefault(prefix + endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Strongroom",
            "version": __version__,
            "summary": "Credential store with the DataRobot Credentials API (v2)",
        },
        "paths": paths,
        "components": components(),
        "security": [{"token": []}],
    }
