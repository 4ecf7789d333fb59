"""Routes under /api/v2, wire-compatible with DataRobot's Credentials API."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.datastructures import QueryParams
from starlette.responses import Response

from strongroom import __version__, types
from strongroom.config import Settings
from strongroom.errors import InvalidInput, MalformedRequest, TooManyRequests, Unauthorized
from strongroom.server import errors
from strongroom.server.errors import JSONResponse
from strongroom.server.ratelimit import AuthFailureLimiter
from strongroom.service import DEFAULT_PAGE, MAX_OFFSET, MAX_PAGE, Page, Principal, Strongroom

API_VERSION = {"major": 2, "minor": 49, "versionString": "2.49.0", "releasedVersion": f"strongroom-{__version__}"}
T = TypeVar("T")
JSON_MAX_DEPTH = 1024  # orjson's nesting limit: deeper documents fail to parse instead of exhausting the stack

_CREDENTIAL = {"$ref": "#/components/schemas/Credential"}
_ERROR = {"$ref": "#/components/schemas/Error"}


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
        "schema": {"type": "array", "items": {"type": "string", "enum": [*types.TYPES, ""]}},
    },
    {
        "name": "orderBy",
        "in": "query",
        "schema": {"type": "string", "enum": ["creationDate", "-creationDate"], "default": "-creationDate"},
    },
]


# Path parameters are read from `request.path_params`: a typed argument costs FastAPI's parameter
# validation on every call, a fifth of a GET. The OpenAPI document still declares it.
_CREDENTIAL_ID = {
    "parameters": [
        {
            "name": "credentialId",
            "in": "path",
            "required": True,
            "description": "The credential's id (24 hex digits)",
            "schema": {"type": "string"},
        }
    ]
}
_INTEGER = re.compile(r"-?[0-9]{1,19}\Z")
_OWS = r"[ \t]*"  # RFC 9110 optional whitespace: spaces and tabs only
_TAG = '(W/)?"([0-9]{1,18})"'
_ENTITY_TAG = re.compile(f"{_OWS}{_TAG}{_OWS}")  # one list member, matched whole
# The same grammar for the OpenAPI document, so a generated header the schema allows is one the server accepts.
_IF_MATCH_PATTERN = f"^{_OWS}(\\*|{_TAG}({_OWS},{_OWS}{_TAG})*){_OWS}$"
_IF_MATCH_FORMAT = 'expected "*" or quoted revisions from an ETag, such as "3"'
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'Apply only if the credential is still at this revision (its ETag, such as `"3"`); else 412',
    "schema": {"type": "string", "pattern": _IF_MATCH_PATTERN},
}
_ETAG = {"ETag": {"description": "The credential's revision, for If-Match", "schema": {"type": "string"}}}


def _if_match(request: Request) -> frozenset[int] | None:
    """The revisions an If-Match header accepts; None for none or `*` (any). Weak tags never match (RFC 9110)."""
    header = request.headers.get("if-match")
    if header is None or header.strip(" \t") == "*":
        return None
    revisions = set()
    for part in header.split(","):
        tag = _ENTITY_TAG.fullmatch(part)
        if tag is None:
            raise MalformedRequest(f"If-Match: {_IF_MATCH_FORMAT}", {"If-Match": _IF_MATCH_FORMAT})
        if not tag.group(1):
            revisions.add(int(tag.group(2)))
    return frozenset(revisions)


def _etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"'}


def _int_param(query: QueryParams, name: str, default: int) -> int:
    """A whole-number query parameter; anything else is a 422 naming it."""
    raw = query.get(name)
    if raw is None:
        return default
    if not _INTEGER.match(raw):
        msg = "must be a whole number"
        raise InvalidInput(f"{name}: {msg}", {name: msg})
    return int(raw)


def _token(request: Request) -> str | None:
    """Accept both `Bearer` (OAuth style) and `Token` (the DataRobot client's default) schemes."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") else None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """Read the body, stopping at the size limit; None means "over the limit" (reported after auth)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes | None, limit: int, *, empty_message: str) -> dict[str, Any]:
    """Parse a request body into a JSON object; 422 (not 413, which the DataRobot client retries) when too big."""
    if raw is None:
        raise InvalidInput(f"request body exceeds the limit of {limit} bytes", {"body": f"over {limit} bytes"})
    if not raw.strip():
        raise InvalidInput(empty_message, {"body": "empty"})
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _malformed(exc) from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", {"body": "must be a JSON object"})
    return body


def _malformed(exc: orjson.JSONDecodeError) -> MalformedRequest:
    """Say what is wrong and where; orjson's messages are fixed phrases that never quote the input."""
    if "depth" in exc.msg:
        msg = f"nested more than {JSON_MAX_DEPTH} levels deep"
    else:
        msg = f"not valid JSON ({exc.msg} at character {exc.pos})"
    return MalformedRequest(f"request body is {msg}", {"body": msg})


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers of a route; 503 (database unreachable) can meet every route that reaches the store."""
    text = {
        400: "Malformed JSON",
        401: "Missing or invalid token",
        403: "The token lacks the scope",
        404: "Not found",
        409: "Name in use",
        412: "If-Match names a revision that is no longer current: GET the credential again",
        422: "Invalid",
        429: "Too many failed authentications from this client; retry after `Retry-After` seconds",
        503: "Database unavailable; retry after `Retry-After` seconds",
    }
    retry = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
    return {
        c: {
            "description": text[c],
            "content": {"application/json": {"schema": _ERROR}},
            **({"headers": retry} if c in (429, 503) else {}),
        }
        for c in (*codes, 503)
    }


def build_router(
    app_state: Callable[[], Strongroom], settings: Settings, store_threads: ThreadPoolExecutor
) -> APIRouter:
    router = APIRouter(prefix="/api/v2")
    auth_failures = AuthFailureLimiter(settings.auth_failure_limit, settings.auth_failure_window)

    def authenticate(service: Strongroom, token: str | None, request: Request) -> Principal:
        """Resolve the token; past the failure limit a bad token is 429 (a valid one is never limited)."""
        try:
            return service.authenticate(token)
        except Unauthorized:
            raise limited(request) from None

    def limited(request: Request) -> Unauthorized | TooManyRequests:
        """The error for a failed authentication: 401, or 429 once this client is past the failure limit."""
        wait = auth_failures.failed(request.client.host if request.client else "unknown")
        if wait is None:
            return Unauthorized("missing or invalid API token")
        return TooManyRequests(f"too many failed authentications from this client; retry in {wait} s", wait)

    async def principal(service: Strongroom, request: Request) -> Principal:
        """Authenticate where it is cheapest: on the event loop's PostgreSQL connections when it has them."""
        token = _token(request)
        if not service.db.on_loop():
            return await on_store(service, lambda: authenticate(service, token, request))
        try:
            return await service.aauthenticate(token)
        except Unauthorized:
            raise limited(request) from None

    async def run_in_threadpool(fn: Callable[[], T]) -> T:
        # A plain executor: anyio.to_thread's limiter and cancel scope cost 35 us of CPU a call, this 15.
        return await asyncio.get_running_loop().run_in_executor(store_threads, fn)

    async def on_store(service: Strongroom, fn: Callable[[], T]) -> T:
        """Run a read-only use case where it is cheapest.

        SQLite reads in WAL mode never wait for a lock and take tens of microseconds, less than handing them
        to a worker thread, so they run inline; anything that can block (the network to PostgreSQL, a
        writer queueing for SQLite's lock) goes to the thread pool.
        """
        if service.db.is_sqlite:
            return fn()
        return await run_in_threadpool(fn)

    async def call(request: Request, fn: Callable[[Principal], T]) -> T:
        """Authenticate and run a writing use case in one worker-thread hop (the store is synchronous)."""
        service = app_state()
        token = _token(request)
        return await run_in_threadpool(lambda: fn(authenticate(service, token, request)))

    async def call_with_body(
        request: Request, fn: Callable[[Principal, dict[str, Any]], T], *, empty_message: str
    ) -> T:
        """Like `call`, but authenticates before the body is parsed: anonymous callers only ever see 401."""
        service = app_state()
        token = _token(request)
        raw = await _read_body(request, settings.max_body_bytes)

        def run() -> T:
            who = authenticate(service, token, request)
            return fn(who, _json_object(raw, settings.max_body_bytes, empty_message=empty_message))

        return await run_in_threadpool(run)

    @router.get(
        "/version/",
        summary="API version (also verifies the token)",
        responses={
            200: {
                "description": "The API version",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Version"}}},
            },
            **_responses(401, 429),
        },
    )
    async def version(request: Request) -> Response:
        await principal(app_state(), request)
        return JSONResponse(API_VERSION)

    @router.get(
        "/credentials/",
        summary="List the caller's credentials",
        openapi_extra={"parameters": _LIST_PARAMETERS},
        responses={
            200: {
                "description": "A page of credentials",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CredentialList"}}},
            },
            **_responses(401, 403, 422, 429),
        },
    )
    async def list_credentials(request: Request) -> Response:
        # Query parameters are parsed by hand (and documented in `_LIST_PARAMETERS`): FastAPI's generic
        # parameter validation cost a quarter of this route's time. The service checks the ranges.
        query = request.query_params
        service = app_state()
        token = _token(request)
        wanted = [t for value in query.getlist("types") for t in value.split(",") if t] or None
        order_by = query.get("orderBy", "-creationDate")

        # One statement (token and page) when all is well; any miss, or a bad parameter, takes the ordinary
        # path, which authenticates first so an anonymous caller only ever learns 401.
        def ordinary() -> Page:
            who = authenticate(service, token, request)
            offset = _int_param(query, "offset", 0)
            limit = _int_param(query, "limit", DEFAULT_PAGE)
            return service.list_credentials(who, offset=offset, limit=limit, types_filter=wanted, order_by=order_by)

        try:
            offset = _int_param(query, "offset", 0)
            limit = _int_param(query, "limit", DEFAULT_PAGE)
        except InvalidInput:
            page = await on_store(service, ordinary)
        else:
            args: dict[str, Any] = {"offset": offset, "limit": limit, "types_filter": wanted, "order_by": order_by}
            if service.db.on_loop():  # PostgreSQL: on the event loop's own connections
                page = await service.alist_with_token(token, **args) or await on_store(service, ordinary)
            else:
                page = await on_store(service, lambda: service.list_with_token(token, **args) or ordinary())
        offset, limit = page.offset, page.limit

        def link(at: int) -> str:
            kept = [(k, v) for k, v in query.multi_items() if k not in ("offset", "limit")]
            scope = request.scope
            host = request.headers.get("host") or "{}:{}".format(*scope["server"])
            path = scope.get("root_path", "") + scope["path"]
            return f"{scope['scheme']}://{host}{path}?{urlencode([*kept, ('offset', at), ('limit', limit)])}"

        # The items are the credentials' stored JSON: spliced in, not parsed and serialised again.
        data = orjson.Fragment(f"[{','.join(page.items)}]")
        return JSONResponse(
            {
                "count": len(page.items),
                "next": link(offset + limit) if page.has_next else None,
                "previous": link(max(offset - limit, 0)) if offset > 0 else None,
                "data": data,
                "totalCount": page.total,
            }
        )

    @router.post(
        "/credentials/",
        status_code=201,
        summary="Create a credential",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _create_body()}}}},
        responses={
            201: {"description": "Created", "content": {"application/json": {"schema": _CREDENTIAL}}},
            **_responses(400, 401, 403, 409, 422, 429),
        },
    )
    async def create_credential(request: Request) -> Response:
        service = app_state()
        if not service.db.on_loop():
            created = await call_with_body(request, service.create_credential, empty_message="request body is empty")
            return JSONResponse(created, status_code=201)
        # PostgreSQL, on the event loop's own connections: one statement for a token seen before (the insert
        # re-checks it); any miss or error takes the ordinary path, authenticate then insert, which reports it.
        raw = await _read_body(request, settings.max_body_bytes)

        def body() -> dict[str, Any]:
            return _json_object(raw, settings.max_body_bytes, empty_message="request body is empty")

        created = await service.acreate_with_token(_token(request), body)
        if created is None:
            who = await principal(service, request)
            created = await service.acreate_credential(who, body())
        return Response(created, status_code=201, media_type=JSONResponse.media_type)

    @router.get(
        "/credentials/{credentialId}/",
        summary="Get one credential (never its secrets)",
        openapi_extra=_CREDENTIAL_ID,
        responses={
            200: {
                "description": "The credential",
                "headers": _ETAG,
                "content": {"application/json": {"schema": _CREDENTIAL}},
            },
            **_responses(401, 403, 404, 429),
        },
    )
    async def get_credential(request: Request) -> Response:
        credential_id = request.path_params["credentialId"]
        service = app_state()
        token = _token(request)

        def ordinary() -> tuple[str, int]:
            return service.get_versioned(authenticate(service, token, request), credential_id)

        # The commonest call, so one statement when all is well; any miss takes the ordinary path, which tells
        # 401, 403 and 404 apart. PostgreSQL runs the statement on the event loop's own connections.
        if service.db.on_loop():
            answer = await service.aget_with_token(token, credential_id) or await on_store(service, ordinary)
        else:
            answer = await on_store(service, lambda: service.get_with_token(token, credential_id) or ordinary())
        found, revision = answer
        return Response(found, media_type=JSONResponse.media_type, headers=_etag(revision))

    @router.patch(
        "/credentials/{credentialId}/",
        summary="Update name, description or secret fields",
        openapi_extra={
            "parameters": [*_CREDENTIAL_ID["parameters"], _IF_MATCH],
            "requestBody": {"required": True, "content": {"application/json": {"schema": types.update_schema()}}},
        },
        responses={
            200: {
                "description": "Updated",
                "headers": _ETAG,
                "content": {"application/json": {"schema": _CREDENTIAL}},
            },
            **_responses(400, 401, 403, 404, 409, 412, 422, 429),
        },
    )
    async def update_credential(request: Request) -> Response:
        credential_id = request.path_params["credentialId"]
        service = app_state()
        empty = "Must specify at least one field to update"
        if service.db.on_loop():  # PostgreSQL: every statement on the event loop's own connections
            raw = await _read_body(request, settings.max_body_bytes)
            who = await principal(service, request)
            body = _json_object(raw, settings.max_body_bytes, empty_message=empty)
            wire, revision = await service.aupdate_versioned(who, credential_id, body, if_match=_if_match(request))
            return Response(wire, media_type=JSONResponse.media_type, headers=_etag(revision))
        updated, revision = await call_with_body(
            request,
            lambda who, body: service.update_versioned(who, credential_id, body, if_match=_if_match(request)),
            empty_message=empty,
        )
        return JSONResponse(updated, headers=_etag(revision))

    @router.delete(
        "/credentials/{credentialId}/",
        status_code=204,
        summary="Delete a credential",
        openapi_extra={"parameters": [*_CREDENTIAL_ID["parameters"], _IF_MATCH]},
        responses={204: {"description": "Deleted"}, **_responses(400, 401, 403, 404, 412, 429)},
    )
    async def delete_credential(request: Request) -> Response:
        credential_id = request.path_params["credentialId"]
        service = app_state()
        if service.db.on_loop():  # PostgreSQL: on the event loop's own connections
            who = await principal(service, request)
            await service.adelete_credential(who, credential_id, if_match=_if_match(request))
        else:
            await call(request, lambda who: service.delete_credential(who, credential_id, if_match=_if_match(request)))
        return Response(status_code=204)

    return router


def _create_body() -> dict[str, Any]:
    names = {t.name: f"#/components/schemas/{_schema_name(t.name)}" for t in types.TYPES.values()}
    return {
        "oneOf": [{"$ref": ref} for ref in names.values()],
        "discriminator": {"propertyName": "credentialType", "mapping": names},
    }


def _schema_name(type_name: str) -> str:
    return "".join(p.capitalize() for p in type_name.split("_")) + "CredentialCreate"


def _openapi_components() -> dict[str, Any]:
    schemas: dict[str, Any] = {_schema_name(t.name): types.create_schema(t) for t in types.TYPES.values()}
    schemas["Credential"] = types.credential_schema()
    schemas["CredentialList"] = {
        "type": "object",
        "required": ["count", "next", "previous", "data", "totalCount"],
        "properties": {
            "count": {"type": "integer"},
            "next": {"type": "string", "format": "uri", "nullable": True},
            "previous": {"type": "string", "format": "uri", "nullable": True},
            "data": {"type": "array", "items": _CREDENTIAL},
            "totalCount": {"type": "integer"},
        },
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {"type": "string", "minLength": 1},
            "errors": {"type": "object", "additionalProperties": {"type": "string"}, "description": "field: problem"},
        },
    }
    schemas["Version"] = {
        "type": "object",
        "required": ["major", "minor", "versionString"],
        "properties": {
            "major": {"type": "integer"},
            "minor": {"type": "integer"},
            "versionString": {"type": "string"},
            "releasedVersion": {"type": "string"},
        },
    }
    return schemas


def _settle_heap() -> None:
    """Exempt everything built at start-up from the cyclic garbage collector.

    The app, its routes, schemas and the SQLAlchemy metadata are tens of thousands of objects that live as
    long as the process, yet every full collection walked them all: profiling a create under load put 12%
    of the server's CPU in the collector. Frozen, they are never scanned again.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, service: Strongroom | None = None) -> FastAPI:
    """Build the ASGI app. The store opens at startup so a bad key or database fails before serving."""
    settings = settings or Settings()
    holder: dict[str, Strongroom] = {}
    if service is not None:
        holder["service"] = service

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        if "service" not in holder:
            holder["service"] = Strongroom.open(settings)
        holder["service"].db.start_loop_pool(settings.resolved_store_threads)
        _settle_heap()
        yield
        store_threads.shutdown(wait=True)
        holder["service"].db.stop_loop_pool()
        holder["service"].close()

    app = FastAPI(
        title="Strongroom",
        version=__version__,
        summary="Credential store with the DataRobot Credentials API (v2)",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        openapi_url="/api/v2/openapi.json",
        docs_url="/api/v2/docs",
        redoc_url=None,
    )
    errors.install(app)
    app.add_middleware(errors.CatchAll)
    # Store calls run on a bounded pool sized per backend (Settings.resolved_store_threads says why).
    store_threads = ThreadPoolExecutor(settings.resolved_store_threads, thread_name_prefix="strongroom-store")
    app.include_router(build_router(lambda: holder["service"], settings, store_threads))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(_openapi_components())
            # Declared here rather than as a FastAPI dependency: a per-request dependency costs ~20% throughput.
            components["securitySchemes"] = {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <token>`; `Token <token>` is accepted too",
                }
            }
            schema["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
