"""The ASGI application: every endpoint under /api/v2 through the one pipeline, plus health and docs."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles

from strongroom.api import http, openapi, routes
from strongroom.api.boundary import AccessLog, Boundary
from strongroom.api.errors import JSONResponse, error_response
from strongroom.api.pipeline import Pipeline
from strongroom.api.routing import Routes
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.services import heap

PREFIX = "/api/v2"
_log = logging.getLogger("strongroom.server")
STATIC = Path(__file__).parent / "static"
# Swagger UI (swagger-ui-dist 5.35.0, Apache-2.0) ships inside the package, so the docs page works offline;
# the page's own script is a file too, because the CSP allows no inline script.
_DOCS = """<!doctype html>
<html><head><meta charset="utf-8"><title>Strongroom API</title>
<link rel="stylesheet" href="%(prefix)s/docs/swagger-ui.css"></head>
<body><div id="ui" data-url="%(prefix)s/openapi.json"></div>
<script src="%(prefix)s/docs/swagger-ui-bundle.js"></script>
<script src="%(prefix)s/docs/init.js"></script>
</body></html>"""
_DOCS_INIT = 'SwaggerUIBundle({url: document.getElementById("ui").dataset.url, dom_id: "#ui"});\n'


def create_app(settings: Settings | None = None, services: Services | None = None) -> Boundary:
    """Build the ASGI app. The store opens at startup so a bad key or database fails before serving."""
    settings = settings or Settings()
    holder: dict[str, Services] = {}
    if services is not None:
        holder["services"] = services
    # Store calls that may block run on a bounded pool sized per backend (Settings.resolved_store_threads).
    executor = ThreadPoolExecutor(settings.resolved_store_threads, thread_name_prefix="strongroom-store")
    pipeline = Pipeline(lambda: holder["services"], settings, executor)
    document: dict[str, Any] = {}
    access_log = AccessLog() if settings.access_log else None

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if "services" not in holder:
            holder["services"] = Services.open(settings)
        holder["services"].db.start_loop_pool(settings.resolved_store_threads)
        holder["services"].db.start_hot_reads()
        heap.settle()
        recorder = asyncio.create_task(_record_token_use(holder["services"], executor, settings.last_used_flush))
        jobs = holder["services"].jobs
        await asyncio.get_running_loop().run_in_executor(executor, _sweep_spools, holder["services"])
        expiry = asyncio.create_task(_expire_uploads(holder["services"], executor, settings))
        queue_app, orphans = None, None
        if jobs.uses_queue():
            queue_app = await asyncio.get_running_loop().run_in_executor(executor, _open_queue, holder["services"])
            orphans = asyncio.create_task(_fail_orphans(holder["services"], executor, settings))
        else:
            jobs.start_runner(settings.job_threads, f"{socket.gethostname()}:{os.getpid()}")
        yield
        jobs.stop_runner()
        if orphans is not None:
            orphans.cancel()
        expiry.cancel()
        if queue_app is not None:
            queue_app.close()
        recorder.cancel()
        await _flush_token_use(holder["services"], executor)
        if access_log is not None:
            access_log.flush()
        executor.shutdown(wait=True)
        holder["services"].db.stop_loop_pool()
        holder["services"].close()

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi_json(_: Request) -> Response:
        if not document:
            document.update(openapi.document(routes.ALL, PREFIX))
        return JSONResponse(document)

    async def docs(_: Request) -> Response:
        return HTMLResponse(_DOCS % {"prefix": PREFIX})

    async def docs_init(_: Request) -> Response:
        return Response(_DOCS_INIT, media_type="text/javascript")

    async def not_found(request: Request, __: Exception) -> Response:
        """404, or a 307 to the same path with a trailing slash when that exists (built from the public URL or a
        well-formed Host, never from a malformed one)."""
        scope = request.scope
        path = scope["path"]
        if not path.endswith("/") and any(
            r.matches({**scope, "path": path + "/"})[0] != Match.NONE for r in api_routes
        ):
            query = scope.get("query_string", b"").decode("latin-1")
            target = f"{http.base_url(request, settings.public_url)}{path}/" + (f"?{query}" if query else "")
            return RedirectResponse(target, status_code=307)
        return error_response(404, "not found")

    async def not_allowed(_: Request, __: Exception) -> Response:
        return error_response(405, "method not allowed")

    table: dict[str, dict[str, Any]] = {}
    for endpoint in routes.ALL:
        table.setdefault(endpoint.path, {})[endpoint.method] = pipeline.endpoint(endpoint)
    api_routes = [Route(PREFIX + path, _dispatch(methods), methods=list(methods)) for path, methods in table.items()]
    fallback = Starlette(
        routes=[  # what `Routes` does not find: Starlette tries these in order
            Route("/healthz", healthz, include_in_schema=False),
            *api_routes,
            Route(f"{PREFIX}/openapi.json", openapi_json, include_in_schema=False),
            Route(f"{PREFIX}/docs", docs, include_in_schema=False),
            Route(f"{PREFIX}/docs/init.js", docs_init, include_in_schema=False),
            Mount(f"{PREFIX}/docs", StaticFiles(directory=STATIC / "swagger-ui"), name="docs-assets"),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
        lifespan=lifespan,
    )
    fallback.router.redirect_slashes = False  # not_found redirects, without reflecting the Host header
    # The boundary wraps everything once; the API's endpoints are found by `Routes`, the rest (health, docs,
    # 404/405 and redirects, the lifespan) by Starlette.
    return Boundary(Routes(fallback, table, PREFIX), proxies=settings.proxy_networks, access_log=access_log)


async def _record_token_use(services: Services, executor: ThreadPoolExecutor, every: float) -> None:
    """Write the tokens used since the last pass, every `every` seconds, off the event loop (each token's
    `last_used_at` at most once a minute: the UPDATE skips fresher ones)."""
    while True:
        await asyncio.sleep(every)
        await _flush_token_use(services, executor)


async def _flush_token_use(services: Services, executor: ThreadPoolExecutor) -> None:
    """One pass: take the set on the loop (where requests add to it), write it in a store thread; a failure
    (the database away) loses that pass's times only, and is logged without any token."""
    batch = services.accounts.take_used()
    if not batch:
        return
    try:
        await asyncio.get_running_loop().run_in_executor(executor, services.accounts.record_use, batch)
    except Exception as exc:
        _log.warning("could not record the last use of %d token(s): %s", len(batch), type(exc).__name__)


def _open_queue(services: Services) -> Any:
    """Send this server's jobs to `strongroom worker` processes through procrastinate; the app to close."""
    from strongroom.services import queue
    from strongroom.services.runners import QueuedJobs

    queue.ensure_schema(services)
    defer, app = queue.deferrer(services.jobs.settings)
    services.jobs.queued = QueuedJobs(services.jobs, defer, queue.worker_name())
    return app


def _sweep_spools(services: Services) -> None:
    """Delete what jobs that ended while no server or worker could clean up left on disk (logged, never fatal)."""
    try:
        swept = services.jobs.sweep_spools()
    except Exception as exc:
        _log.warning("could not sweep the spools of ended batch jobs: %s", type(exc).__name__)
        return
    if swept:
        _log.info("removed the spools of %d ended batch job(s)", swept)


async def _expire_uploads(services: Services, executor: ThreadPoolExecutor, settings: Settings) -> None:
    """Now and then, FAIL the jobs whose upload was not finished within `job_upload_expiry` seconds."""
    every = max(0.5, min(60.0, settings.job_upload_expiry / 3))
    while True:
        await asyncio.sleep(every)
        try:
            expired = await asyncio.get_running_loop().run_in_executor(executor, services.jobs.expire_uploads)
        except Exception as exc:
            _log.warning("could not expire waiting batch job uploads: %s", type(exc).__name__)
            continue
        if expired:
            _log.info("failed %d batch job(s) whose upload was not finished in time", len(expired))


async def _fail_orphans(services: Services, executor: ThreadPoolExecutor, settings: Settings) -> None:
    """Every few seconds, FAIL the RUNNING jobs that no live worker has touched for `job_orphan_after` seconds."""
    queued = services.jobs.queued
    assert queued is not None
    every = max(1.0, min(10.0, settings.job_orphan_after / 3))
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.get_running_loop().run_in_executor(
                executor, queued.fail_orphans, settings.worker_stalled_after, settings.job_orphan_after
            )
        except Exception as exc:
            _log.warning("could not check for orphaned batch jobs: %s", type(exc).__name__)


def _dispatch(methods: dict[str, Any]) -> Any:
    """One Starlette endpoint for a path: the pipeline endpoint of the request's method."""
    if len(methods) == 1:
        return next(iter(methods.values()))

    async def by_method(request: Request) -> Response:
        handler = methods.get(request.method) or methods["GET"]  # HEAD is answered as GET
        return await handler(request)  # type: ignore[no-any-return]

    return by_method
