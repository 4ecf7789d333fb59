"""Finds an API request's endpoint in one walk over its path segments, instead of trying every route in turn.

What the walk does not find — another method (HEAD, a 405), a path without its trailing slash (the redirect),
the docs — goes on to Starlette's router, which answers exactly as it would have. Path parameters match one
non-empty segment, as Starlette's default `{name}` convertor does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class _Node:
    """One path segment: the literal segments after it, at most one parameter, and the endpoints ending here."""

    __slots__ = ("literal", "methods", "param", "param_name")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name = ""
        self.methods: Mapping[str, Endpoint] = {}


class Routes:
    """ASGI middleware: runs the endpoint a path and method name, or passes the request on to `app`."""

    def __init__(self, app: ASGIApp, table: Mapping[str, Mapping[str, Endpoint]], prefix: str = "") -> None:
        self.app = app
        self.root = _Node()
        for path, methods in table.items():
            node = self.root
            for part in (prefix + path).split("/"):
                if part.startswith("{") and part.endswith("}"):
                    if node.param is None:
                        node.param, node.param_name = _Node(), part[1:-1]
                    elif node.param_name != part[1:-1]:
                        raise ValueError(f"{path}: parameter {part} where another route names {node.param_name}")
                    node = node.param
                else:
                    node = node.literal.setdefault(part, _Node())
            node.methods = methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            endpoint, params = self.find(scope["path"], scope["method"])
            if endpoint is not None:
                scope["path_params"] = params
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def find(self, path: str, method: str) -> tuple[Endpoint | None, dict[str, str]]:
        """The endpoint and path parameters, walking literal segments before parameters without backtracking
        (a path only a backtracking walk would match is left to Starlette, which finds it)."""
        node, params = self.root, {}
        for part in path.split("/"):
            step = node.literal.get(part)
            if step is None:
                if node.param is None or not part:
                    return None, params
                params[node.param_name] = part
                step = node.param
            node = step
        return node.methods.get(method), params
