"""The ASGI wrapper around the whole app: the client's real address, security headers, and no 500 with a traceback.

- Client address: `X-Forwarded-For` is believed only from a peer in `trusted_proxies` (none by default). Its
  hops are read right to left, each parsed with `ipaddress`; the first address that is not a trusted proxy is
  the client. A malformed hop, or a header over `MAX_FORWARDED_BYTES`, ends the walk at the last believable hop,
  so no unparsed string ever becomes the address the limiter keys on or the log prints.
- Every response carries `Cache-Control: no-store`, `X-Content-Type-Options: nosniff` and a CSP that lets only
  the packaged docs page run its own scripts and styles.
- An unhandled exception becomes a JSON 500; only its type and place are logged (see `errors.unhandled`).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.api.errors import error_response, unhandled

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


class Boundary:
    """Wraps the app once: real client address (when proxies are trusted), security headers, catch-all 500."""

    def __init__(self, app: ASGIApp, proxies: Networks = ()) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.proxies and scope.get("client"):
            self._rewrite_client(scope)
        started = False

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, secured_send)
        except Exception as exc:
            unhandled(exc)
            if not started:
                await error_response(500, "internal error")(scope, receive, secured_send)

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
