"""Reading a request body under `strongroom serve`'s protocol: a body that arrived with its head is read at
once (no deadline timer), one still on its way is read under the deadline; both read whole and equal."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.requests import Request

from strongroom.api import serve
from strongroom.api.http import BODY_RECEIVED, read_body
from strongroom.config import Settings
from tests.support import free_port

seen: list[tuple[bool, bytes | None]] = []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    received_first = bool(scope.get(BODY_RECEIVED))
    body = await read_body(Request(scope, receive), limit=1000, timeout=5)
    seen.append((received_first, body))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    settings = Settings(port=free_port())
    server = uvicorn.Server(uvicorn.Config(_app, **serve.options(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield settings.port
    server.should_exit = True
    thread.join(10)


def _post(port: int, parts: list[bytes], pause: float = 0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
        return sock.recv(1000)


def test_a_body_sent_with_its_head_is_read_without_waiting(port: int) -> None:
    seen.clear()
    body = b'{"name": "together"}'
    answer = _post(port, [b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)])
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert seen == [(True, body)]


def test_a_body_still_coming_is_read_whole_under_the_deadline(port: int) -> None:
    seen.clear()
    body = b'{"name": "in two parts"}'
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    answer = _post(port, [head + body[:5], body[5:]], pause=0.2)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert seen == [(False, body)]


def test_a_buffered_body_over_the_limit_is_refused() -> None:
    """The limit holds on the quick path too (a chunked body declares no length to refuse it by)."""
    big = b"x" * 1001

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": big, "more_body": False}

    scope = {"type": "http", "method": "POST", "headers": [], BODY_RECEIVED: True}
    assert asyncio.run(read_body(Request(scope, receive), limit=1000)) is None
