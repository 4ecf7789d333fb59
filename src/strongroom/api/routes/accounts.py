"""`/users/` (administrators: the `admin` scope of an administrator) and `/account/apiKeys/` (every user, for their
own tokens: `read` to list, `write` to create or revoke)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.responses import Response

from strongroom import credential_types
from strongroom.api.errors import JSONResponse
from strongroom.api.http import required_string
from strongroom.api.openapi import answers, json_body
from strongroom.api.paging import paged, window
from strongroom.api.pipeline import Call, Endpoint
from strongroom.errors import InvalidInput
from strongroom.representation import in_utc, iso
from strongroom.services.accounts import SCOPES

_USER = {
    "type": "object",
    "title": "User",
    "required": ["id", "username", "createdAt", "isAdmin", "disabled"],
    "properties": {
        "id": {"type": "string"},
        "username": {"type": "string"},
        "createdAt": {"type": "string", "format": "date-time"},
        "isAdmin": {"type": "boolean"},
        "disabled": {"type": "boolean"},
    },
}
_KEY = {
    "type": "object",
    "title": "API key",
    "required": ["id", "name", "prefix", "scopes", "createdAt", "expiresAt", "lastUsedAt", "revoked"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "prefix": {"type": "string", "description": "The token's first characters, to recognise it"},
        "scopes": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
        "createdAt": {"type": "string", "format": "date-time"},
        "expiresAt": {"type": ["string", "null"], "format": "date-time"},
        "lastUsedAt": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "When the token was last used, to within about a minute and a half",
        },
        "revoked": {"type": "boolean"},
    },
}
_NEW_KEY = {
    **_KEY,
    "title": "New API key",
    "required": [*_KEY["required"], "token"],  # type: ignore[list-item]
    "properties": {**_KEY["properties"], "token": {"type": "string", "description": "The token: shown only now"}},  # type: ignore[dict-item]
}


def user_json(user: Any) -> dict[str, Any]:
    """A user's API JSON."""
    return {
        "id": user.id,
        "username": user.username,
        "createdAt": iso(user.created_at),
        "isAdmin": bool(user.is_admin),
        "disabled": user.disabled_at is not None,
    }


def key_json(token: Any) -> dict[str, Any]:
    """A token's API JSON (never its value or hash)."""
    return {
        "id": token.id,
        "name": token.name,
        "prefix": token.prefix,
        "scopes": token.scopes.split(),
        "createdAt": iso(token.created_at),
        "expiresAt": iso(token.expires_at) if token.expires_at else None,
        "lastUsedAt": iso(token.last_used_at) if token.last_used_at else None,
        "revoked": token.revoked_at is not None,
    }


async def list_users(call: Call) -> Response:
    offset, limit = window(call)
    accounts, who = call.services.accounts, call.principal
    users, total = await call.read(lambda: accounts.users_page(who, offset, limit))
    return paged(call, [user_json(u) for u in users], len(users), total, offset, limit)


async def create_user(call: Call) -> Response:
    body = await call.body()
    username = required_string(body, "username")
    admin = _boolean(body, "isAdmin", False)
    accounts, who = call.services.accounts, call.principal
    user = await call.write(lambda: accounts.create_user(username, admin=bool(admin), who=who))
    return JSONResponse(user_json(user), status_code=201)


async def update_user(call: Call) -> Response:
    body = await call.body()
    disabled, admin = _boolean(body, "disabled"), _boolean(body, "isAdmin")
    accounts, who, username = call.services.accounts, call.principal, call.path("username")
    user = await call.write(lambda: accounts.update_user(username, disabled=disabled, admin=admin, who=who))
    return JSONResponse(user_json(user))


async def delete_user(call: Call) -> Response:
    accounts, who, username = call.services.accounts, call.principal, call.path("username")
    await call.write(lambda: accounts.delete_user(username, who))
    return Response(status_code=204)


async def list_keys(call: Call) -> Response:
    offset, limit = window(call)
    accounts, who = call.services.accounts, call.principal
    tokens = await call.read(lambda: accounts.own_tokens(who))
    data = [key_json(t) for t in tokens[offset : offset + limit]]
    return paged(call, data, len(data), len(tokens), offset, limit)


async def create_key(call: Call) -> Response:
    body = await call.body()
    name = required_string(body, "name")
    scopes = body.get("scopes")
    if scopes is not None and (
        not isinstance(scopes, list)
        or not scopes
        or any(s not in SCOPES for s in scopes)
        or len(set(scopes)) != len(scopes)
    ):
        msg = f"must be a non-empty list of distinct scopes: {', '.join(SCOPES)}"
        raise InvalidInput(f"scopes: {msg}", {"scopes": msg})
    expires_at = _moment(body, "expiresAt")
    accounts, who = call.services.accounts, call.principal
    token, raw = await call.write(
        lambda: accounts.create_own_token(who, name, tuple(scopes) if scopes is not None else None, expires_at)
    )
    return JSONResponse({**key_json(token), "token": raw}, status_code=201)


async def revoke_key(call: Call) -> Response:
    accounts, who, key_id = call.services.accounts, call.principal, call.path("keyId")
    await call.write(lambda: accounts.revoke_token(key_id, who, own=True))
    return Response(status_code=204)


def _boolean(body: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{name}: must be true or false", {name: "must be true or false"})
    return value


def _moment(body: dict[str, Any], name: str) -> datetime | None:
    """An RFC 3339 date-time (a date alone: its midnight UTC; no offset: UTC), or None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) and len(value) <= 64 else None
    except ValueError:
        moment = None
    if moment is None:
        msg = "must be an ISO 8601 date-time such as 2027-01-31T00:00:00Z"
        raise InvalidInput(f"{name}: {msg}", {name: msg})
    return in_utc(moment)


def _path(name: str, doc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": doc, "schema": {"type": "string"}}


def _page_of(schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {
        "description": title,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "title": title,
                    "properties": {
                        "count": {"type": "integer"},
                        "next": {"type": ["string", "null"]},
                        "previous": {"type": ["string", "null"]},
                        "data": {"type": "array", "items": schema},
                        "totalCount": {"type": "integer"},
                    },
                }
            }
        },
    }


_PAGING = [
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    },
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
]
_USERNAME = _path("username", "The user's name")
_ONE_USER = {"description": "The user", "content": {"application/json": {"schema": _USER}}}
ENDPOINTS = [
    Endpoint(
        "GET",
        "/users/",
        "admin",
        list_users,
        doc={
            "summary": "Every user, oldest first (administrators)",
            "parameters": _PAGING,
            "responses": {"200": _page_of(_USER, "Users"), **answers(401, 403, 422, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/users/",
        "admin",
        create_user,
        action="user.create",
        doc={
            "summary": "Create a user (administrators); give them a token with `strongroom tokens create` or let "
            "them make their own once they hold one",
            "requestBody": json_body(
                {
                    "type": "object",
                    "title": "New user",
                    "required": ["username"],
                    "properties": {
                        "username": {"type": "string"},
                        "isAdmin": {"type": ["boolean", "null"], "default": False},  # null, as absent: false
                    },
                }
            ),
            "responses": {"201": {**_ONE_USER, "description": "Created"}, **answers(400, 401, 403, 409, 422, 429)},
        },
    ),
    Endpoint(
        "PATCH",
        "/users/{username}/",
        "admin",
        update_user,
        action="user.update",
        doc={
            "summary": "Disable a user (their tokens fail from the next request) or enable them again; make them an "
            "administrator or not (administrators; not for oneself)",
            "parameters": [_USERNAME],
            "requestBody": json_body(
                {
                    "type": "object",
                    "title": "User changes",
                    "properties": {  # null, as absent: left as it is
                        "disabled": {"type": ["boolean", "null"]},
                        "isAdmin": {"type": ["boolean", "null"]},
                    },
                }
            ),
            "responses": {"200": _ONE_USER, **answers(400, 401, 403, 404, 409, 422, 429)},
        },
    ),
    Endpoint(
        "DELETE",
        "/users/{username}/",
        "admin",
        delete_user,
        action="user.delete",
        doc={
            "summary": "Delete a user and their tokens; refused (409, naming how many) while they own credentials "
            "(administrators; not oneself)",
            "parameters": [_USERNAME],
            "responses": {"204": {"description": "Deleted"}, **answers(401, 403, 404, 409, 429)},
        },
    ),
    Endpoint(
        "GET",
        "/account/apiKeys/",
        "read",
        list_keys,
        doc={
            "summary": "The caller's API tokens, oldest first, with their last use (never their values)",
            "parameters": _PAGING,
            "responses": {"200": _page_of(_KEY, "API keys"), **answers(401, 403, 422, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/account/apiKeys/",
        "write",
        create_key,
        action="token.create",
        doc={
            "summary": "A new token for the caller, shown once: scopes at most the caller's token's (`admin` only for "
            "an administrator), expiry at most the caller's token's (by default both the same)",
            "requestBody": json_body(
                {
                    "type": "object",
                    "title": "New API key",
                    "required": ["name"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": credential_types.NAME_MAX,
                            "pattern": credential_types.NAME_PATTERN,
                        },
                        "scopes": {
                            "type": ["array", "null"],  # null, as absent: the caller's token's scopes
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": {"type": "string", "enum": list(SCOPES)},
                        },
                        "expiresAt": {"type": ["string", "null"], "format": "date-time"},
                    },
                }
            ),
            "responses": {
                "201": {"description": "Created", "content": {"application/json": {"schema": _NEW_KEY}}},
                **answers(400, 401, 403, 404, 422, 429),
            },
        },
    ),
    Endpoint(
        "DELETE",
        "/account/apiKeys/{keyId}/",
        "write",
        revoke_key,
        action="token.revoke",
        doc={
            "summary": "Revoke one of the caller's tokens: it fails from the next request (another user's id is 404)",
            "parameters": [_path("keyId", "The token's id")],
            "responses": {"204": {"description": "Revoked"}, **answers(401, 403, 404, 429)},
        },
    ),
]
