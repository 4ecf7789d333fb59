"""The bare-framework floor: a trivial Starlette app with no middleware, served as `strongroom serve` serves.

Routes: `GET /floor` (a small JSON object), `POST /floor` (parses the JSON body, answers 201), and
`GET /floor/page` (a 100-item page shaped like a credential list). Run as `python -m bench.floor PORT`; the
server settings come from the same `STRONGROOM_*` environment and the same function as `strongroom serve`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_ITEM = {
    "credentialId": "0" * 24,
    "name": "floor",
    "credentialType": "basic",
    "description": "",
    "creationDate": "2026-12-02T00:00:00.000000Z",
}
_PAGE = {
    "count": 100,
    "next": None,
    "previous": None,
    "data": [{**_ITEM, "name": f"floor-{i}"} for i in range(100)],
    "totalCount": 100,
}


async def floor_get(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def floor_post(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({**_ITEM, "name": body.get("name", "")}, status_code=201)


async def floor_page(_: Request) -> Response:
    return JSONResponse(_PAGE)


app = Starlette(
    routes=[Route("/floor", floor_get), Route("/floor", floor_post, methods=["POST"]), Route("/floor/page", floor_page)]
)


class FloorServer:
    """The floor app in its own process on `port`, with `launcher` (e.g. taskset) and the given environment."""

    def __init__(self, port: int, env: dict[str, str], launcher: list[str], log: Path) -> None:
        self.port, self.env, self.launcher, self.log = port, env, launcher, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.database_url: str | None = None  # the floor uses no database

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FloorServer:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.launcher, sys.executable, "-m", "bench.floor", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/floor", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"floor server did not start:\n{self.log.read_text()}")

    def __exit__(self, *_: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


def main() -> None:
    from strongroom.api import serve
    from strongroom.config import Settings

    settings = Settings(port=int(sys.argv[1]))
    serve.run(settings, app=app)


if __name__ == "__main__":
    main()
