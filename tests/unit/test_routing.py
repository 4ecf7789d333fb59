"""`api/routing.Routes`: an API request reaches its endpoint with its path parameters in one walk, and anything
the walk does not find goes on, untouched, to the app behind it (Starlette's router and its 404/405/redirect)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from strongroom.api.routing import Routes


def _endpoint(name: str) -> Any:
    async def run(request: Request) -> Response:
        return JSONResponse({"endpoint": name, "params": request.path_params})

    return run


TABLE = {
    "/credentials/": {"GET": _endpoint("list"), "POST": _endpoint("create")},
    "/credentials/{credentialId}/": {"GET": _endpoint("get")},
    "/credentials/associations/{associationId}/": {"GET": _endpoint("associations")},
    "/credentials/{credentialId}/sharedRoles/": {"PATCH": _endpoint("share")},
}


def _call(method: str, path: str) -> tuple[int, bytes]:
    """Status and body of one request through `Routes` in front of an app that answers 418 with its path."""

    async def behind(scope: Any, receive: Any, send: Any) -> None:
        await JSONResponse({"passed on": scope["path"]}, status_code=418)(scope, receive, send)

    routes = Routes(behind, TABLE, prefix="/api/v2")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"", "headers": []}
    asyncio.run(routes(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_literal_and_parameter_segments_reach_their_endpoint() -> None:
    assert _call("GET", "/api/v2/credentials/") == (200, b'{"endpoint":"list","params":{}}')
    assert _call("POST", "/api/v2/credentials/") == (200, b'{"endpoint":"create","params":{}}')
    assert _call("GET", "/api/v2/credentials/abc/") == (200, b'{"endpoint":"get","params":{"credentialId":"abc"}}')
    assert _call("PATCH", "/api/v2/credentials/abc/sharedRoles/")[1].startswith(b'{"endpoint":"share"')


def test_a_literal_segment_wins_over_a_parameter() -> None:
    status, body = _call("GET", "/api/v2/credentials/associations/dataconnection:1/")
    assert (status, body) == (200, b'{"endpoint":"associations","params":{"associationId":"dataconnection:1"}}')


def test_what_the_walk_does_not_find_is_passed_on() -> None:
    for method, path in [
        ("DELETE", "/api/v2/credentials/abc/"),  # another method: Starlette answers 405
        ("HEAD", "/api/v2/credentials/"),  # HEAD: Starlette answers it as GET
        ("GET", "/api/v2/credentials"),  # no trailing slash: Starlette redirects
        ("GET", "/api/v2/credentials//"),  # an empty parameter is no parameter
        ("GET", "/api/v2/credentials/abc/extra/"),
        ("GET", "/api/v2/docs"),
    ]:
        assert _call(method, path)[0] == 418, (method, path)
