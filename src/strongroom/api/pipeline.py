"""The one request pipeline every route of every resource runs through: authenticate -> limit -> scope -> handler.

- Authenticate: the bearer token is checked before the body is read, so an anonymous caller costs no more
  than its headers and only ever learns 401.
- Limit: a failed authentication counts against the client address; past the limit the answer is 429.
- Scope: the endpoint declares the token scope it needs (`read`, `write`, `use`, `admin`); without it, 403.
- Handler: gets a `Call` (the principal, the services, the bounded body) and returns a response.

An endpoint may also declare a `fused` handler: a read whose repository checks the token, its expiry and
the `read` scope inside the same statement (one round trip instead of two). It answers only when all is
well; on any miss the ordinary pipeline runs and explains the failure. Domain errors become their JSON
answers here, so handlers only raise.

If-Match (RFC 9110 §13.1.1) is evaluated here for every state-changing route (POST, PUT, PATCH, DELETE) whose
operation does not document the header itself (`Endpoint.evaluates_if_match`: a credential's PATCH and DELETE
compare it with the credential's revision). Such a resource has no entity tags, so a list of tags can never
match: after authentication and the scope check, and before the handler, the answer is 412 and nothing changes;
`*` passes on to the handler (which answers 404 if there is nothing there), and a malformed or over-long header
is the 400 the credentials answer. The 412 comes before the handler's own checks, so it says nothing about
whether the id exists or what the caller's role on it is. Such a request never takes a fused path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from strongroom.api import http
from strongroom.api.boundary import REQUEST_ID, USER
from strongroom.api.errors import response_for
from strongroom.api.ratelimit import AuthFailureLimiter
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import (
    Forbidden,
    Hidden,
    PreconditionFailed,
    ServiceUnavailable,
    StrongroomError,
    TooManyRequests,
    Unauthorized,
)
from strongroom.services.accounts import Principal, token_hash_of
from strongroom.services.audit import Event
from strongroom.services.credentials import is_id

T = TypeVar("T")
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Handler = Callable[["Call"], Awaitable[Response]]
Fused = Callable[["Call"], Awaitable[Response | None]]


@dataclass(frozen=True)
class Endpoint:
    """A route: method, path under /api/v2, the scope it needs, its handler(s) and its OpenAPI operation."""

    method: str
    path: str
    scope: str | None  # None: any valid token
    handler: Handler
    fused: Fused | None = None
    doc: dict[str, Any] = field(default_factory=dict)
    # The audit action of a change this endpoint makes (its success is audited by the service, in the same
    # transaction); failures and denials are audited here. None: a read, whose denials only are audited.
    action: str | None = None

    @property
    def evaluates_if_match(self) -> bool:
        """Whether the handler compares If-Match with the resource's ETag (its operation documents the header)."""
        return any(p.get("in") == "header" and p.get("name") == "If-Match" for p in self.doc.get("parameters", ()))


class Call:
    """One request as a handler sees it."""

    __slots__ = ("_hash", "_raw", "_token", "pipeline", "request", "who")

    def __init__(self, pipeline: Pipeline, request: Request) -> None:
        self.pipeline = pipeline
        self.request = request
        self.who: Principal | None = None
        self._raw: bytes | bool | None = False  # False: not read yet
        self._token: str | bool | None = False  # False: not parsed yet
        self._hash: str | bool | None = False  # False: not hashed yet

    @property
    def services(self) -> Services:
        return self.pipeline.services()

    @property
    def principal(self) -> Principal:
        assert self.who is not None, "only fused handlers run before authentication"
        return self.who

    @property
    def token(self) -> str | None:
        if self._token is False:
            self._token = http.token(self.request)
        return self._token  # type: ignore[return-value]

    @property
    def token_hash(self) -> str | None:
        """The bearer token's stored form (`token_hash_of`), computed once per request; None: not one of ours."""
        if self._hash is False:
            self._hash = token_hash_of(self.token)
        return self._hash  # type: ignore[return-value]

    @property
    def on_loop(self) -> bool:
        """Whether the store answers on the event loop's own connections (PostgreSQL's async path)."""
        return self.services.db.on_loop()

    @property
    def writes_on_loop(self) -> bool:
        """Whether a change is awaited on the event loop rather than in a worker thread: PostgreSQL's loop
        connections, or SQLite's group committer (which the loop hands writes to directly)."""
        db = self.services.db
        return db.is_sqlite or db.on_loop()

    @property
    def address(self) -> str | None:
        """The client's address (after `Boundary`'s trusted-proxy rewrite), for the audit trail."""
        return _address(self.request)

    @property
    def request_id(self) -> str | None:
        return self.request.scope.get(REQUEST_ID)

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])

    async def body(self, *, empty_message: str = "request body is empty") -> dict[str, Any]:
        """The JSON object body, read once and at most `max_body_bytes` of it."""
        settings = self.pipeline.settings
        limit = settings.max_body_bytes
        if self._raw is False:
            self._raw = await http.read_body(self.request, limit, settings.body_timeout)
        return http.json_object(self._raw, limit, empty_message=empty_message)  # type: ignore[arg-type]

    async def read(self, fn: Callable[[], T]) -> T:
        """Run read-only store work where it is cheapest: inline on SQLite (WAL reads never wait for a lock
        and take less than a thread hand-off), in a worker thread otherwise."""
        if self.services.db.is_sqlite:
            return fn()
        return await self.write(fn)

    async def scan(self, fn: Callable[[], T]) -> T:
        """Run a read whose cost grows with what it matches (a `search`) in a worker thread on every backend, so a
        long one never holds the event loop: sqlite3 lets go of the GIL while SQLite works."""
        return await self.write(fn)

    async def write(self, fn: Callable[[], T]) -> T:
        """Run store work that may block (a writer queueing for a commit, the network) in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pipeline.executor, fn)


def _has_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


class Pipeline:
    """Authenticates, limits, checks scopes and turns domain errors into answers, for every endpoint."""

    def __init__(self, services: Callable[[], Services], settings: Settings, executor: ThreadPoolExecutor) -> None:
        self.services = services
        self.settings = settings
        self.executor = executor
        self.failures = AuthFailureLimiter(settings.auth_failure_limit, settings.auth_failure_window)

    def endpoint(self, spec: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        """The Starlette endpoint that runs `spec` through the pipeline."""
        handler, fused, scope, action = spec.handler, spec.fused, spec.scope, spec.action
        untagged = spec.method in _STATE_CHANGING and not spec.evaluates_if_match

        async def run(request: Request) -> Response:
            call = Call(self, request)
            conditional = untagged and http.has_header(request, b"if-match")
            try:
                if fused is not None and not conditional:
                    answer = await fused(call)
                    if answer is not None:  # only ever for a valid token
                        call.services.accounts.used(call.token_hash)
                        return answer
                call.who = await self.authenticate(call)
                if scope is not None:
                    call.who.require(scope)
                if conditional and http.if_match(request) is not None:
                    raise _no_tag_matches()
                return await handler(call)
            except StrongroomError as exc:
                await self._audit_refusal(call, exc, action)
                answer = response_for(exc)
                if call._raw is False and _has_body(request):
                    # Answered without reading the body (a bad token, a timeout): close rather than drain it.
                    answer.headers["Connection"] = "close"
                return answer

        run.__name__ = handler.__name__
        return run

    async def authenticate(self, call: Call) -> Principal:
        """The caller's principal, with their address and this request's id for the audit trail; past the
        failure limit a bad token is 429 (a valid one is never limited)."""
        accounts = call.services.accounts
        token = call.token
        try:
            if call.on_loop:
                who = await accounts.aauthenticate(token)
            else:
                who = await call.read(lambda: accounts.authenticate(token))
        except Unauthorized:
            raise self._failed(call.request) from None
        accounts.used(call.token_hash)
        call.request.scope[USER] = who.username
        return who.at(call.address, call.request_id)

    async def _audit_refusal(self, call: Call, exc: StrongroomError, action: str | None) -> None:
        """Audit a failed authentication, an authorisation denial, or a change that failed; reads that fail
        for other reasons (a bad parameter, an unknown id) are not audit events."""
        denied = isinstance(exc, Forbidden | Hidden)
        if isinstance(exc, Unauthorized):
            event = Event("auth.failed", 401, outcome="failed", detail={"path": call.request.url.path[:200]})
        elif isinstance(exc, TooManyRequests | ServiceUnavailable) or (action is None and not denied):
            return
        else:
            event = Event(
                action or "credential.read",
                exc.status_code,
                call.who,
                outcome="denied" if denied else "failed",
                credential_id=getattr(exc, "target", None) or _path_id(call),
                detail={"reason": exc.message[:200]},
            )
        event = replace(event, address=call.address, request_id=call.request_id)
        audit = call.services.audit
        await call.write(lambda: audit.record(event))

    def _failed(self, request: Request) -> Unauthorized | TooManyRequests:
        wait = self.failures.failed(request.client.host if request.client else "unknown")
        if wait is None:
            return Unauthorized("missing or invalid API token")
        return TooManyRequests(f"too many failed authentications from this client; retry in {wait} s", wait)


def _no_tag_matches() -> PreconditionFailed:
    """The 412 of an If-Match listing entity tags on a resource that has none."""
    return PreconditionFailed(
        'If-Match: this resource has no entity tags, so none can match; send no If-Match, or "*"',
        {"If-Match": "no entity tag matches"},
        current_revision=None,
    )


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _path_id(call: Call) -> str | None:
    """The credential id in the path, if the route has one and it has the form of an id."""
    value = call.request.path_params.get("credentialId")
    return value if isinstance(value, str) and is_id(value) else None
