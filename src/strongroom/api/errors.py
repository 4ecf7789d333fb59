"""Every error is JSON `{"message": …}` with `Content-Type: application/json`; no client mistake is a 500.

A `StrongroomError` carries its own status (see `strongroom.errors`); anything else is a 500 whose log line
names only the exception's type and where it was raised, never its text (which could quote request data).
Whatever a message quotes, an answer stays small: at most MESSAGE_MAX characters of message, ERRORS_LISTED
entries of `errors` (then one saying how many more) and FIELD_MAX characters of each key and value.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import starlette.responses

from strongroom.credential_types import ERRORS_LISTED
from strongroom.errors import PreconditionFailed, ServiceUnavailable, StrongroomError, TooManyRequests, clipped

log = logging.getLogger("strongroom.server")
MESSAGE_MAX = 2000
FIELD_MAX = 200


class JSONResponse(starlette.responses.JSONResponse):
    """orjson-rendered JSON, always with the exact media type the DataRobot client checks for."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, message: str, errors: dict[str, str] | None = None, **headers: str) -> JSONResponse:
    """`{"message": …, "errors": {…}}`, capped (see the module's docstring)."""
    body: dict[str, Any] = {"message": clipped(message, MESSAGE_MAX)}
    if errors:
        kept = list(errors.items())[: ERRORS_LISTED + 1]
        listed = {clipped(k, FIELD_MAX): clipped(str(v), FIELD_MAX) for k, v in kept}
        if len(errors) > ERRORS_LISTED + 1:
            listed = dict(list(listed.items())[:ERRORS_LISTED])
            listed["…"] = f"and {len(errors) - ERRORS_LISTED} more"
        body["errors"] = listed
    return JSONResponse(body, status_code=status, headers=headers or None)


def response_for(exc: StrongroomError) -> JSONResponse:
    """The answer to a domain error: its status, message, field errors and the headers its kind calls for."""
    if isinstance(exc, ServiceUnavailable | TooManyRequests):
        return error_response(exc.status_code, exc.message, **{"Retry-After": str(exc.retry_after)})
    headers = {"WWW-Authenticate": 'Bearer realm="strongroom"'} if exc.status_code == 401 else {}
    if isinstance(exc, PreconditionFailed) and exc.current_revision is not None:
        headers["ETag"] = f'"{exc.current_revision}"'
    if exc.status_code >= 500:
        log.error("%s: %s", type(exc).__name__, clipped(exc.message, MESSAGE_MAX))
    return error_response(exc.status_code, exc.message, exc.errors, **headers)


def unhandled(exc: BaseException) -> None:
    """Log an unexpected exception by type and place only."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
    log.error("unhandled %s at %s", type(exc).__name__, where)
