"""DataRobot's paginated list envelope: count, next, previous, data, totalCount."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.responses import Response

from strongroom.api import http
from strongroom.api.errors import JSONResponse
from strongroom.api.pipeline import Call
from strongroom.errors import InvalidInput

MAX_PAGE = 1000


def window(call: Call, default: int = 100) -> tuple[int, int]:
    """The request's offset and limit (0..2^31, 1..1000); 422 naming the parameter otherwise."""
    query = call.request.query_params
    offset = http.int_param(query, "offset", 0)
    limit = http.int_param(query, "limit", default)
    if not 0 <= offset <= 2**31 - 1:
        raise InvalidInput("offset: must be between 0 and 2147483647", {"offset": "out of range"})
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}", {"limit": f"must be 1 to {MAX_PAGE}"})
    return offset, limit


def unpaged(call: Call) -> None:
    """A list that answers everything at once (DataRobot's `{data}` lists) takes no paging: `offset` or `limit`
    is a 422 naming it, not a page the client would wrongly believe it got. Other unknown query parameters are
    ignored, as everywhere in the API."""
    query = call.request.query_params
    for name in ("offset", "limit"):
        if name in query:
            msg = "this list is not paged: it answers every item at once"
            raise InvalidInput(f"{name}: {msg}", {name: msg})


def paged(call: Call, data: Any, count: int, total: int, offset: int, limit: int) -> Response:
    """The envelope around `data` (a list, or an orjson.Fragment of one), with links built from the public URL."""
    request = call.request
    base = http.base_url(request, call.pipeline.settings.public_url)

    def link(at: int) -> str:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("offset", "limit")]
        path = request.scope.get("root_path", "") + request.scope["path"]
        return f"{base}{path}?{urlencode([*kept, ('offset', at), ('limit', limit)])}"

    return JSONResponse(
        {
            "count": count,
            "next": link(offset + limit) if offset + count < total else None,
            "previous": link(max(offset - limit, 0)) if offset > 0 else None,
            "data": data,
            "totalCount": total,
        }
    )
