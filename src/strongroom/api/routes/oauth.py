"""`/oauthProviders/` (administrators) and `/credentials/{id}/accessToken/`: OAuth access tokens that refresh
themselves, once, however many callers ask at the same moment."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from strongroom import credential_types
from strongroom.api.errors import JSONResponse
from strongroom.api.openapi import answers, credential_id_parameter, json_body
from strongroom.api.paging import paged, window
from strongroom.api.pipeline import Call, Endpoint
from strongroom.services.oauth import AUTH_METHODS, URL_MAX


async def list_providers(call: Call) -> Response:
    offset, limit = window(call)
    oauth, who = call.services.oauth, call.principal
    found = await call.read(lambda: oauth.list_providers(who))
    data = found[offset : offset + limit]
    return paged(call, data, len(data), len(found), offset, limit)


async def create_provider(call: Call) -> Response:
    body = await call.body()
    oauth, who = call.services.oauth, call.principal
    return JSONResponse(await call.write(lambda: oauth.create_provider(who, body)), status_code=201)


async def get_provider(call: Call) -> Response:
    provider_id, oauth, who = call.path("providerId"), call.services.oauth, call.principal
    return JSONResponse(await call.read(lambda: oauth.get_provider(who, provider_id)))


async def delete_provider(call: Call) -> Response:
    provider_id, oauth, who = call.path("providerId"), call.services.oauth, call.principal
    await call.write(lambda: oauth.delete_provider(who, provider_id))
    return Response(status_code=204)


async def access_token(call: Call) -> Response:
    """Runs in the worker pool: it may wait for the credential's refresh lock and call the provider."""
    credential_id, oauth, who = call.path("credentialId"), call.services.oauth, call.principal
    return JSONResponse(await call.write(lambda: oauth.access_token(who, credential_id)))


async def access_token_for_data(call: Call) -> Response:
    """Runs in the worker pool: it calls the provider."""
    body = await call.body()
    oauth, who = call.services.oauth, call.principal
    return JSONResponse(await call.write(lambda: oauth.access_token_for_data(who, body)))


_PROVIDER = {
    "type": "object",
    "title": "OAuth provider",
    "required": ["id", "name", "tokenUrl", "clientId", "tokenEndpointAuthMethod", "createdAt"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "tokenUrl": {"type": "string"},
        "clientId": {"type": "string"},
        "tokenEndpointAuthMethod": {"type": "string", "enum": list(AUTH_METHODS)},
        "createdAt": {"type": "string", "format": "date-time"},
    },
}
_NEW_PROVIDER = {
    "type": "object",
    "title": "New OAuth provider",
    "required": ["name", "tokenUrl", "clientId", "clientSecret"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "tokenUrl": {
            "type": "string",
            "maxLength": URL_MAX,
            "pattern": "^https?://[^\\s#]+$",
            "description": "The token endpoint (RFC 6749 section 3.2)",
        },
        "clientId": {"type": "string", "minLength": 1, "maxLength": 1024},
        "clientSecret": {"type": "string", "minLength": 1, "description": "Secret: sealed, never returned."},
        "tokenEndpointAuthMethod": {"type": "string", "enum": list(AUTH_METHODS), "default": AUTH_METHODS[0]},
    },
}
_ACCESS_TOKEN = {
    "type": "object",
    "title": "Access token",
    "required": ["accessToken", "expiresAt", "tokenType"],
    "properties": {
        "accessToken": {"type": "string"},
        "expiresAt": {"type": ["string", "null"], "format": "date-time"},
        "tokenType": {"type": "string"},
    },
}
_DATA_BODY = {
    "type": "object",
    "title": "Inline OAuth credential data",
    "required": ["credentialData", "oauthProviderId"],
    "additionalProperties": False,
    "properties": {
        "credentialData": credential_types.credential_data_schema(credential_types.TYPES["oauth"]),
        "oauthProviderId": {
            "type": "string",
            "minLength": 1,
            "description": "The provider whose token endpoint refreshes (and whose client, unless the data names one)",
        },
    },
}
_DATA_TOKEN = {
    **_ACCESS_TOKEN,
    "title": "Access token and the refresh token to use next",
    "required": [*_ACCESS_TOKEN["required"], "refreshToken"],  # type: ignore[list-item]
    "properties": {**_ACCESS_TOKEN["properties"], "refreshToken": {"type": "string"}},  # type: ignore[dict-item]
}
_PROVIDER_ID = {"name": "providerId", "in": "path", "required": True, "schema": {"type": "string"}}


def _ok(schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {"description": title, "content": {"application/json": {"schema": schema}}}


ENDPOINTS = [
    Endpoint(
        "GET",
        "/oauthProviders/",
        "admin",
        list_providers,
        doc={
            "summary": "OAuth providers that refresh oauth credentials (administrators; never a client secret)",
            "parameters": [
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            ],
            "responses": {"200": _ok({"type": "object"}, "OAuth providers"), **answers(401, 403, 422, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/oauthProviders/",
        "admin",
        create_provider,
        action="oauth_provider.create",
        doc={
            "summary": "Add an OAuth provider: its token endpoint and the client Strongroom refreshes as "
            "(administrators; the client secret is sealed and never returned)",
            "requestBody": json_body(_NEW_PROVIDER),
            "responses": {"201": _ok(_PROVIDER, "Created"), **answers(400, 401, 403, 409, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        "/oauthProviders/{providerId}/",
        "admin",
        get_provider,
        doc={
            "summary": "One OAuth provider (administrators)",
            "parameters": [_PROVIDER_ID],
            "responses": {"200": _ok(_PROVIDER, "The provider"), **answers(401, 403, 404, 429)},
        },
    ),
    Endpoint(
        "DELETE",
        "/oauthProviders/{providerId}/",
        "admin",
        delete_provider,
        action="oauth_provider.delete",
        doc={
            "summary": "Delete an OAuth provider (administrators; 409 while oauth credentials name it)",
            "parameters": [_PROVIDER_ID],
            "responses": {"204": {"description": "Deleted"}, **answers(401, 403, 404, 409, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/credentials/accessToken/",
        "use",
        access_token_for_data,
        action="credential.use",
        doc={
            "summary": "An access token from inline oauth credentialData (used once, never stored), refreshed at the "
            "named provider's token endpoint; answers the refresh token to use next (rotated or the same)",
            "requestBody": json_body(_DATA_BODY),
            "responses": {
                "200": _ok(_DATA_TOKEN, "The access token"),
                **answers(400, 401, 403, 404, 409, 422, 429, 502, 504),
            },
        },
    ),
    Endpoint(
        "POST",
        "/credentials/{credentialId}/accessToken/",
        "use",
        access_token,
        action="credential.use",
        doc={
            "summary": "A valid access token of an oauth credential, refreshed at its provider first when it "
            "expires soon (any role from CONSUMER up; one refresh however many ask at once; audited)",
            "parameters": [credential_id_parameter()],
            "responses": {
                "200": _ok(_ACCESS_TOKEN, "The access token"),
                **answers(401, 403, 404, 409, 422, 429, 502, 504),
            },
        },
    ),
]
