"""A refresh goes to the address the SSRF rules checked: the token endpoint's host is resolved once, by the
connector, and the request is pinned to that address (a second lookup could answer another one: DNS rebinding).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from strongroom.config import Settings
from strongroom.services.connections import Connector
from strongroom.services.oauth import OAuthService


class _TokenEndpoint(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.seen.append({"host": self.headers["Host"], "body": self.rfile.read(length).decode()})
        body = json.dumps({"access_token": "a", "token_type": "Bearer", "expires_in": 60}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet: the test reads what `seen` recorded, not the server's log."""


@pytest.fixture
def endpoint() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_refresh_goes_to_the_address_the_rules_checked(endpoint: int) -> None:
    # `rebind.invalid` resolves nowhere but in the connector (RFC 6761): a request that looked the host up again
    # would fail; the pinned one reaches the checked address and still names the host.
    asked: list[str] = []
    connector = Connector(Settings(), resolve=lambda host, port: asked.append(host) or ["127.0.0.1"])
    oauth = OAuthService(None, None, None, Settings(), connector)  # type: ignore[arg-type]
    provider = {
        "id": "p",
        "token_url": f"http://rebind.invalid:{endpoint}/token",
        "auth_method": "client_secret_post",
        "client_id": "c",
    }
    _TokenEndpoint.seen.clear()
    token = oauth._refresh(provider, "refresh-me", ("c", "s"))
    assert token["access_token"] == "a"
    assert asked == ["rebind.invalid"]
    assert _TokenEndpoint.seen[0]["host"] == f"rebind.invalid:{endpoint}"
    assert "refresh_token=refresh-me" in _TokenEndpoint.seen[0]["body"]
