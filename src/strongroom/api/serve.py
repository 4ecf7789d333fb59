"""Running the server: the uvicorn options of `strongroom serve` in one place (the bench floor uses them too),
with limits on what one connection may cost before it is cut off.

uvicorn's httptools protocol (the fast one) has no cap on header size or count and no deadline for a request's
headers; h11 caps the size but not the count and is slower. So the server runs httptools with those limits added
here: request line plus headers over `max_header_bytes` or `max_headers` lines is answered 431 and the
connection closed; a connection whose headers are not complete `header_timeout` seconds after it opened (or after
a request's first byte) is answered 408 and closed; idle keep-alive connections close after `keepalive_timeout`;
beyond `limit_concurrency` connections or requests in flight, new requests get 503. Forwarded addresses are
never taken from uvicorn (its default trusts 127.0.0.1): `api.boundary` believes only `trusted_proxies`.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from strongroom.api.http import BODY_RECEIVED
from strongroom.config import Settings


@dataclass(frozen=True)
class Limits:
    """What one HTTP/1.1 request's head may cost."""

    max_header_bytes: int
    max_headers: int
    header_timeout: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_header_bytes, settings.max_headers, settings.header_timeout)


_REFUSED = {
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
    408: b"HTTP/1.1 408 Request Timeout\r\n",
}


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a request whose head is over a limit."""


class _HeadDeadlines:
    """The connections of one event loop whose head is still arriving, each with its deadline, and one timer that
    answers the late ones every `tick` seconds (a deadline is kept to within a tick): a dictionary entry per
    request instead of a timer armed and cancelled per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop, self.timeout = loop, timeout
        self.tick = min(1.0, timeout / 4)
        self.waiting: dict[GuardedHttpToolsProtocol, float] = {}
        self.timer: asyncio.TimerHandle | None = None

    def arm(self, protocol: GuardedHttpToolsProtocol) -> None:
        self.waiting[protocol] = self.loop.time() + self.timeout
        if self.timer is None:
            self.timer = self.loop.call_later(self.tick, self._sweep)

    def disarm(self, protocol: GuardedHttpToolsProtocol) -> None:
        self.waiting.pop(protocol, None)

    def _sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        for protocol in [p for p, deadline in self.waiting.items() if deadline <= now]:
            del self.waiting[protocol]
            protocol.head_timed_out()
        if self.waiting:
            self.timer = self.loop.call_later(self.tick, self._sweep)


_DEADLINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HeadDeadlines] = weakref.WeakKeyDictionary()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the head's bytes and lines and a deadline for the head."""

    limits: ClassVar[Limits | None] = None  # set by run(); worker processes read the environment instead

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.limits is None:
            cls.limits = Limits.of(Settings())
        self._limits: Limits = cls.limits
        self._head_bytes = 0
        self._head_lines = 0
        self._refusal: int | None = None
        deadlines = _DEADLINES.get(self.loop)
        if deadlines is None:
            deadlines = _DEADLINES[self.loop] = _HeadDeadlines(self.loop, self._limits.header_timeout)
        self._deadlines = deadlines

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadlines.arm(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadlines.disarm(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._head_lines = 0
        if self not in self._deadlines.waiting:  # a connection's first request: its deadline runs from the open
            self._deadlines.arm(self)

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._deadlines.disarm(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.scope[BODY_RECEIVED] = True  # the app reads a buffered body without a deadline (`api.http`)
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """The parser stopped: with 431 when a callback refused the head, else uvicorn's 400."""
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal)

    def _count(self, size: int, lines: int) -> None:
        self._head_bytes += size
        self._head_lines += lines
        if self._head_bytes > self._limits.max_header_bytes or self._head_lines > self._limits.max_headers:
            self._refusal = 431
            raise _HeadRefused

    def head_timed_out(self) -> None:
        """The head did not arrive in time (`_HeadDeadlines`): 408 and close."""
        if not self.transport.is_closing():
            self._refuse(408)

    def _refuse(self, status: int) -> None:
        self._deadlines.disarm(self)
        self.transport.write(_REFUSED[status] + b"content-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()


def options(settings: Settings) -> dict[str, Any]:
    """uvicorn's keyword arguments for these settings: host, port, logging and the boundary's limits."""
    import uvicorn

    GuardedHttpToolsProtocol.limits = Limits.of(settings)
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": uvicorn.config.LOGGING_CONFIG,
        "http": GuardedHttpToolsProtocol,
        "proxy_headers": False,
        "timeout_keep_alive": settings.keepalive_timeout,
        "limit_concurrency": settings.limit_concurrency,
        "server_header": False,
        "access_log": False,  # the app writes its own, with the request id (api/boundary.py)
    }


def run(settings: Settings, app: Any = None) -> None:
    """Serve `app` (default: Strongroom's own, in `settings.workers` processes) until stopped."""
    import uvicorn

    if app is not None:
        uvicorn.run(app, **options(settings))
    elif settings.workers > 1:
        # Each worker process builds its app (and its limits) from the same STRONGROOM_* environment.
        os.environ.update({"STRONGROOM_HOST": settings.host, "STRONGROOM_PORT": str(settings.port)})
        uvicorn.run("strongroom.api:create_app", factory=True, workers=settings.workers, **options(settings))
    else:
        from strongroom.api import create_app

        uvicorn.run(create_app(settings), **options(settings))
