"""Every error is JSON `{"message": …}` with `Content-Type: application/json`; no client mistake is a 500."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import starlette.responses
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.crypto import DecryptionError
from strongroom.errors import PreconditionFailed, ServiceUnavailable, StrongroomError, TooManyRequests
from strongroom.store.db import unavailable

log = logging.getLogger("strongroom.server")


class JSONResponse(starlette.responses.JSONResponse):
    """orjson-rendered JSON, always with the exact media type the DataRobot client checks for.

    A subclass of Starlette's JSONResponse so FastAPI documents routes answering it as JSON, not as a string.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, message: str, errors: dict[str, str] | None = None, **headers: str) -> JSONResponse:
    body: dict[str, Any] = {"message": message}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers or None)


def _validation_message(exc: RequestValidationError) -> tuple[str, dict[str, str]]:
    """Name the parameter in the message; never echo the input (pydantic's `input` may hold a secret)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header")]
        errors[".".join(loc) or "request"] = str(err.get("msg", "invalid"))
    return "; ".join(f"{k}: {v}" for k, v in errors.items()), errors


def install(app: FastAPI) -> None:
    @app.exception_handler(StrongroomError)
    async def _domain(_: Request, exc: StrongroomError) -> Response:
        if isinstance(exc, ServiceUnavailable | TooManyRequests):
            return error_response(exc.status_code, exc.message, **{"Retry-After": str(exc.retry_after)})
        headers = {"WWW-Authenticate": 'Bearer realm="strongroom"'} if exc.status_code == 401 else {}
        if isinstance(exc, PreconditionFailed) and exc.current_revision is not None:
            headers["ETag"] = f'"{exc.current_revision}"'
        return error_response(exc.status_code, exc.message, exc.errors, **headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        message, errors = _validation_message(exc)
        return error_response(422, message, errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = "not found"
        return error_response(exc.status_code, message, **(exc.headers or {}))

    @app.exception_handler(DecryptionError)
    async def _tampered(_: Request, exc: DecryptionError) -> Response:
        log.error("a stored secret failed authentication (tampered, copied, or sealed under another key)")
        return error_response(500, "the stored secret of this credential failed its integrity check")

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    async def _db_error(_: Request, exc: Exception) -> Response:
        """A driver error that escaped `Database`'s own mapping: an outage is still a 503, anything else a 500."""
        error = unavailable(exc)
        if error is not None:
            log.warning("database unavailable: %s", type(exc).__name__)
            return error_response(error.status_code, error.message, **{"Retry-After": str(error.retry_after)})
        log.error("database error: %s", type(getattr(exc, "orig", None) or exc).__name__)
        return error_response(500, "internal error")


class CatchAll:
    """Turn any unhandled exception into a JSON 500 without re-raising it.

    Starlette's own last-resort handler re-raises so the server logs the full traceback and exception text,
    which could carry request data; this logs only the exception type and where it was raised.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("unhandled %s at %s", type(exc).__name__, _where(exc))
            if not started:
                await error_response(500, "internal error")(scope, receive, send)


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
