"""Reading requests: the token, the body (bounded), JSON objects, query integers and If-Match."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request

from strongroom.errors import InvalidInput, MalformedRequest

JSON_MAX_DEPTH = 1024  # orjson's nesting limit: deeper documents fail to parse instead of exhausting the stack
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_OWS = r"[ \t]*"  # RFC 9110 optional whitespace: spaces and tabs only
_TAG = '(W/)?"([0-9]{1,18})"'
_ENTITY_TAG = re.compile(f"{_OWS}{_TAG}{_OWS}")  # one list member, matched whole
# The same grammar for the OpenAPI document, so a generated header the schema allows is one the server accepts.
IF_MATCH_PATTERN = f"^{_OWS}(\\*|{_TAG}({_OWS},{_OWS}{_TAG})*){_OWS}$"
_IF_MATCH_FORMAT = 'expected "*" or quoted revisions from an ETag, such as "3"'


def token(request: Request) -> str | None:
    """The bearer token; both `Bearer` (OAuth style) and `Token` (the DataRobot client's default) schemes."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") else None


async def read_body(request: Request, limit: int) -> bytes | None:
    """Read the body, stopping at the size limit; None means "over the limit"."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(raw: bytes | None, limit: int, *, empty_message: str) -> dict[str, Any]:
    """Parse a request body into a JSON object; 422 (not 413, which the DataRobot client retries) when too big."""
    if raw is None:
        raise InvalidInput(f"request body exceeds the limit of {limit} bytes", {"body": f"over {limit} bytes"})
    if not raw.strip():
        raise InvalidInput(empty_message, {"body": "empty"})
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _malformed(exc) from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", {"body": "must be a JSON object"})
    return body


def _malformed(exc: orjson.JSONDecodeError) -> MalformedRequest:
    """Say what is wrong and where; orjson's messages are fixed phrases that never quote the input."""
    if "depth" in exc.msg:
        msg = f"nested more than {JSON_MAX_DEPTH} levels deep"
    else:
        msg = f"not valid JSON ({exc.msg} at character {exc.pos})"
    return MalformedRequest(f"request body is {msg}", {"body": msg})


def int_param(query: QueryParams, name: str, default: int) -> int:
    """A whole-number query parameter; anything else is a 422 naming it."""
    raw = query.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        msg = "must be a whole number"
        raise InvalidInput(f"{name}: {msg}", {name: msg})
    return int(raw)


def if_match(request: Request) -> frozenset[int] | None:
    """The revisions an If-Match header accepts; None for none or `*` (any). Weak tags never match (RFC 9110)."""
    header = request.headers.get("if-match")
    if header is None or header.strip(" \t") == "*":
        return None
    revisions = set()
    for part in header.split(","):
        tag = _ENTITY_TAG.fullmatch(part)
        if tag is None:
            raise MalformedRequest(f"If-Match: {_IF_MATCH_FORMAT}", {"If-Match": _IF_MATCH_FORMAT})
        if not tag.group(1):
            revisions.add(int(tag.group(2)))
    return frozenset(revisions)


def etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"'}
