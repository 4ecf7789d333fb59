"""The ASGI wrapper around the whole app: the client's real address, security headers, and no 500 with a traceback.

- Client address: `X-Forwarded-For` is believed only from a peer in `trusted_proxies` (none by default). Its
  hops are read right to left, each parsed with `ipaddress`; the first address that is not a trusted proxy is
  the client. A malformed hop, or a header over `MAX_FORWARDED_BYTES`, ends the walk at the last believable hop,
  so no unparsed string ever becomes the address the limiter keys on or the log prints.
- Every response carries `Cache-Control: no-store`, `X-Content-Type-Options: nosniff` and a CSP that lets only
  the packaged docs page run its own scripts and styles.
- An unhandled exception becomes a JSON 500; only its type and place are logged (see `errors.unhandled`).
- Every request gets an id, answered in `X-Request-Id`, kept in the scope for the audit trail, and written in
  its access-log line (`AccessLog`, on unless `STRONGROOM_ACCESS_LOG=false`; uvicorn's own is off).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sys
import time
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.api.errors import error_response, unhandled
from strongroom.services.accounts import TOKEN_PREFIX

MAX_FORWARDED_BYTES = 1024
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
]
Networks = tuple[IPv4Network | IPv6Network, ...]


def _trusted(address: IPv4Address | IPv6Address, proxies: Networks) -> bool:
    return any(address in network for network in proxies)


def forwarded_client(peer: str, forwarded: bytes | None, proxies: Networks) -> str:
    """The client's address: `peer` unless it is a trusted proxy that forwarded the request (see module doc)."""
    if not proxies or forwarded is None or len(forwarded) > MAX_FORWARDED_BYTES:
        return peer
    try:
        if not _trusted(ip_address(peer), proxies):
            return peer
    except ValueError:
        return peer
    current = peer
    for hop in reversed(forwarded.decode("latin-1").split(",")):
        try:
            address = ip_address(hop.strip())
        except ValueError:
            return current
        current = str(address)
        if not _trusted(address, proxies):
            return current
    return current


REQUEST_ID = "strongroom.request_id"  # scope key: this request's id (also its X-Request-Id answer header)
USER = "strongroom.user"  # scope key: the authenticated username, once the pipeline knows it
_PATH_MAX = 200
_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"[^/]+")


class AccessLog:
    """One line per request on stderr (client, user, method, path, status, duration, request id), written in
    batches: at most every `interval` seconds or `batch` lines, so a line costs a list append, not a write."""

    def __init__(self, stream: TextIO | None = None, *, batch: int = 256, interval: float = 0.2) -> None:
        self.stream = stream or sys.stderr
        self.batch = batch
        self.interval = interval
        self.lines: list[str] = []
        self.scheduled = False
        self._second = -1
        self._stamp = ""

    def add(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        """Queue the request's line; a path with control characters or quotes is escaped, so one request is
        always one line."""
        client = scope.get("client")
        path = scope.get("path", "")
        if TOKEN_PREFIX in path:  # a token pasted where an id belongs (`/account/apiKeys/sr_…/`) is not logged
            path = _TOKEN.sub(TOKEN_PREFIX + "…", path)
        if len(path) > _PATH_MAX:
            path = path[:_PATH_MAX] + "..."
        if not path.isprintable() or '"' in path:
            path = path.encode("unicode_escape").decode("ascii").replace('"', '\\"')
        now = int(time.time())
        if now != self._second:  # the timestamp is formatted once a second
            self._second, self._stamp = now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self.lines.append(
            f"{self._stamp} {client[0] if client else '-'} "
            f'{scope.get(USER) or "-"} "{scope.get("method", "-")} {path}" {status} {seconds * 1000:.1f}ms '
            f"rid={request_id}\n"
        )
        if len(self.lines) >= self.batch:
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            try:
                asyncio.get_running_loop().call_later(self.interval, self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write what is pending (also at shutdown)."""
        self.scheduled = False
        if self.lines:
            text, self.lines = "".join(self.lines), []
            self.stream.write(text)
            self.stream.flush()


class Boundary:
    """Wraps the app once: real client address (when proxies are trusted), security headers, catch-all 500."""

    def __init__(self, app: ASGIApp, proxies: Networks = (), access_log: AccessLog | None = None) -> None:
        self.app = app
        self.proxies = proxies
        self.access_log = access_log
        # Request ids: random per process, then counted (a system call per request would hand the GIL over).
        self._id_prefix = os.urandom(4).hex()
        self._ids = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.proxies and scope.get("client"):
            self._rewrite_client(scope)
        started = False
        status = 500
        request_id = f"{self._id_prefix}{next(self._ids):08x}"
        scope[REQUEST_ID] = request_id
        began = time.perf_counter()

        async def secured_send(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    *SECURITY_HEADERS,
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, secured_send)
        except Exception as exc:
            unhandled(exc)
            if not started:
                await error_response(500, "internal error")(scope, receive, secured_send)
        finally:
            if self.access_log is not None:
                self.access_log.add(scope, status, time.perf_counter() - began, request_id)

    def _rewrite_client(self, scope: Scope) -> None:
        forwarded = proto = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded = value if forwarded is None else forwarded + b"," + value
            elif name == b"x-forwarded-proto":
                proto = value
        if forwarded is None:
            return
        peer = scope["client"][0]
        client = forwarded_client(peer, forwarded, self.proxies)
        if client != peer:
            scope["client"] = (client, 0)
            if proto in (b"http", b"https"):
                scope["scheme"] = proto.decode()
