"""`/credentials/`: DataRobot's Credentials API (list, create, get, update, delete)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from strongroom import credential_types
from strongroom.api import http
from strongroom.api.errors import JSONResponse
from strongroom.api.openapi import (
    CREDENTIAL,
    answers,
    create_body_schema,
    credential_id_parameter,
    filter_text,
    if_match_parameter,
    json_body,
)
from strongroom.api.paging import paged
from strongroom.api.pipeline import Call, Endpoint
from strongroom.errors import InvalidInput, MalformedRequest
from strongroom.services.credentials import DEFAULT_PAGE, MAX_OFFSET, MAX_PAGE, ORDERS, Page

_UPDATE_EMPTY = "Must specify at least one field to update"
_ETAG = {"ETag": {"description": "The credential's revision, for If-Match", "schema": {"type": "string"}}}
_LIST_PARAMETERS = [
    {
        "name": "offset",
        "in": "query",
        "description": "Items to skip",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
    },
    {
        "name": "limit",
        "in": "query",
        "description": "Page size",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
    },
    {
        "name": "types",
        "in": "query",
        "description": "Type filter; repeat or comma-separate (an empty value is ignored)",
        "schema": {"type": "array", "items": {"type": "string", "enum": [*credential_types.TYPES, ""]}},
    },
    {
        "name": "orderBy",
        "in": "query",
        "schema": {"type": "string", "enum": list(ORDERS), "default": "-creationDate"},
    },
    {
        "name": "role",
        "in": "query",
        "description": "Only credentials on which the caller holds this role",
        "schema": {"type": "string", "enum": ["OWNER", "EDITOR", "CONSUMER"]},
    },
    {
        "name": "name",
        "in": "query",
        "description": "Only the credentials of exactly this name (one of the caller's own at most, as names are "
        "unique per owner, plus any shared with them)",
        "schema": {**filter_text(credential_types.NAME_MAX), "minLength": 1},
    },
    {
        "name": "search",
        "in": "query",
        "description": "Only credentials whose name contains this text, ignoring case",
        "schema": {**filter_text(credential_types.NAME_MAX), "minLength": 1},
    },
]
_ORDINARY_ONLY = ("role", "name", "search")  # filters the one-statement list leaves to the ordinary path


def _list_query(call: Call) -> tuple[int, int, list[str] | None, str]:
    query = call.request.query_params
    wanted = [t for value in query.getlist("types") for t in value.split(",") if t] or None
    offset = http.int_param(query, "offset", 0)
    limit = http.int_param(query, "limit", DEFAULT_PAGE)
    return offset, limit, wanted, query.get("orderBy", "-creationDate")


async def list_fused(call: Call) -> Response | None:
    """One statement (token and page) when all is well and no role or name filter is asked for."""
    query = call.request.query_params
    if any(key in query for key in _ORDINARY_ONLY):
        return None
    try:
        offset, limit, wanted, order_by = _list_query(call)
    except InvalidInput:
        return None
    credentials, token = call.services.credentials, call.token_hash
    args: dict[str, Any] = {"offset": offset, "limit": limit, "types_filter": wanted, "order_by": order_by}
    if call.on_loop:
        page = await credentials.alist_for_token(token, **args)
    else:
        page = await call.read(lambda: credentials.list_for_token(token, **args))
    return None if page is None else _page_response(call, page)


async def list_credentials(call: Call) -> Response:
    offset, limit, wanted, order_by = _list_query(call)
    credentials, who = call.services.credentials, call.principal
    query = call.request.query_params
    args: dict[str, Any] = {key: query.get(key) for key in _ORDINARY_ONLY}
    args |= {"offset": offset, "limit": limit, "types_filter": wanted, "order_by": order_by}
    if args["search"] is not None and call.services.db.is_sqlite:  # SQLite searches in a worker thread
        page = await call.scan(lambda: credentials.list(who, **args))
    else:
        page = await credentials.alist(who, **args)
    return _page_response(call, page)


def _page_response(call: Call, page: Page) -> Response:
    # The items are the credentials' stored JSON: spliced in, not parsed and serialised again.
    data = orjson.Fragment(f"[{','.join(page.items)}]")
    return paged(call, data, len(page.items), page.total, page.offset, page.limit)


async def _remembered_write(call: Call, **body_options: str) -> dict[str, Any] | None:
    """The body of a write by a token this process authenticated before, made without a separate
    authentication (the write re-checks the token); None: take the ordinary path, which answers a malformed
    body only after checking the token."""
    if not call.writes_on_loop or not call.services.credentials.remembers(call.token_hash):
        return None
    try:
        return await call.body(**body_options)
    except (InvalidInput, MalformedRequest):
        return None


async def create_fused(call: Call) -> Response | None:
    """For a token this process authenticated before, no separate authentication: the write re-checks it."""
    body = await _remembered_write(call)
    if body is None:
        return None
    created = await call.services.credentials.acreate_for_token(
        call.token_hash, body, address=call.address, request_id=call.request_id
    )
    return None if created is None else _json_text(created, 201)


async def create_credential(call: Call) -> Response:
    body = await call.body()
    credentials, who = call.services.credentials, call.principal
    if call.writes_on_loop:
        created = await credentials.acreate(who, body)
    else:
        created = await call.write(lambda: credentials.create(who, body))
    return _json_text(created, 201)


async def get_fused(call: Call) -> Response | None:
    credential_id, credentials, token = call.path("credentialId"), call.services.credentials, call.token_hash
    if call.on_loop:
        found = await credentials.aget_for_token(token, credential_id)
    else:
        found = await call.read(lambda: credentials.get_for_token(token, credential_id))
    return None if found is None else _json_text(found[0], revision=found[1])


async def get_credential(call: Call) -> Response:
    credential_id, credentials, who = call.path("credentialId"), call.services.credentials, call.principal
    wire, revision = await call.read(lambda: credentials.get(who, credential_id))
    return _json_text(wire, revision=revision)


async def update_fused(call: Call) -> Response | None:
    """For a token this process authenticated before, no separate authentication: the write re-checks it."""
    body = await _remembered_write(call, empty_message=_UPDATE_EMPTY)
    if body is None:
        return None
    try:
        if_match = http.if_match(call.request)
    except (InvalidInput, MalformedRequest):  # the ordinary path answers it after the token
        return None
    updated = await call.services.credentials.aupdate_for_token(
        call.token_hash,
        call.path("credentialId"),
        body,
        if_match=if_match,
        address=call.address,
        request_id=call.request_id,
    )
    return None if updated is None else _json_text(updated[0], revision=updated[1])


async def update_credential(call: Call) -> Response:
    credential_id, credentials, who = call.path("credentialId"), call.services.credentials, call.principal
    body = await call.body(empty_message=_UPDATE_EMPTY)
    if_match = http.if_match(call.request)
    if call.writes_on_loop:
        wire, revision = await credentials.aupdate(who, credential_id, body, if_match=if_match)
    else:
        wire, revision = await call.write(lambda: credentials.update(who, credential_id, body, if_match=if_match))
    return _json_text(wire, revision=revision)


async def delete_credential(call: Call) -> Response:
    credential_id, credentials, who = call.path("credentialId"), call.services.credentials, call.principal
    if_match = http.if_match(call.request)
    force = call.request.query_params.get("force", "false")
    if force not in ("true", "false"):
        raise InvalidInput("force: must be true or false", {"force": "must be true or false"})
    if force == "false":
        stores = call.services.datastores
        await call.read(lambda: stores.check_deletable(who, credential_id))
    if call.on_loop:
        await credentials.adelete(who, credential_id, if_match=if_match)
    else:
        await call.write(lambda: credentials.delete(who, credential_id, if_match=if_match))
    return Response(status_code=204)


def _json_text(text: str, status: int = 200, revision: int | None = None) -> Response:
    """A credential's stored JSON as the answer, with its revision as the ETag; headers are built directly,
    since the text is already JSON and nothing else is set (Starlette's generic header setup costs more)."""
    answer = Response.__new__(Response)
    answer.status_code, answer.background, answer.body = status, None, text.encode()
    answer.raw_headers = [(b"content-length", b"%d" % len(answer.body)), (b"content-type", _JSON)]
    if revision is not None:
        answer.raw_headers.append((b"etag", b'"%d"' % revision))
    return answer


_JSON = JSONResponse.media_type.encode()


_ONE = "/credentials/{credentialId}/"
ENDPOINTS = [
    Endpoint(
        "GET",
        "/credentials/",
        "read",
        list_credentials,
        fused=list_fused,
        doc={
            "summary": "List the credentials the caller has a role on (owned or shared), each with that role",
            "parameters": _LIST_PARAMETERS,
            "responses": {
                "200": {
                    "description": "A page of credentials",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CredentialList"}}},
                },
                **answers(401, 403, 422, 429),
            },
        },
    ),
    Endpoint(
        "POST",
        "/credentials/",
        "write",
        create_credential,
        fused=create_fused,
        action="credential.create",
        doc={
            "summary": "Create a credential",
            "requestBody": json_body(create_body_schema()),
            "responses": {
                "201": {"description": "Created", "content": {"application/json": {"schema": CREDENTIAL}}},
                **answers(400, 401, 403, 409, 422, 429),
            },
        },
    ),
    Endpoint(
        "GET",
        _ONE,
        "read",
        get_credential,
        fused=get_fused,
        doc={
            "summary": "Get one credential (never its secrets)",
            "parameters": [credential_id_parameter()],
            "responses": {
                "200": {
                    "description": "The credential",
                    "headers": _ETAG,
                    "content": {"application/json": {"schema": CREDENTIAL}},
                },
                **answers(401, 403, 404, 429),
            },
        },
    ),
    Endpoint(
        "PATCH",
        _ONE,
        "write",
        update_credential,
        fused=update_fused,
        action="credential.update",
        doc={
            "summary": "Update name, description or secret fields",
            "parameters": [credential_id_parameter(), if_match_parameter()],
            "requestBody": json_body(credential_types.update_schema()),
            "responses": {
                "200": {
                    "description": "Updated",
                    "headers": _ETAG,
                    "content": {"application/json": {"schema": CREDENTIAL}},
                },
                **answers(400, 401, 403, 404, 409, 412, 422, 429),
            },
        },
    ),
    Endpoint(
        "DELETE",
        _ONE,
        "write",
        delete_credential,
        action="credential.delete",
        doc={
            "summary": "Delete a credential (409 while a data store uses it as a default, unless ?force=true)",
            "parameters": [
                credential_id_parameter(),
                if_match_parameter(),
                {"name": "force", "in": "query", "schema": {"type": "boolean", "default": False}},
            ],
            "responses": {"204": {"description": "Deleted"}, **answers(400, 401, 403, 404, 409, 412, 422, 429)},
        },
    ),
]
