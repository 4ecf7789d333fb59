"""Reading requests: the token, the body (bounded), JSON objects, query integers and If-Match."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request

from strongroom.errors import InvalidInput, MalformedRequest, StrongroomError

JSON_MAX_DEPTH = 1024  # orjson's nesting limit: deeper documents fail to parse instead of exhausting the stack
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_DIGITS = re.compile("[0-9]+")  # ASCII only: str.isdigit() also takes superscripts, which int() refuses
_OWS = r"[ \t]*"  # RFC 9110 optional whitespace: spaces and tabs only
_TAG = '(W/)?"([0-9]{1,18})"'
_ENTITY_TAG = re.compile(f"{_OWS}{_TAG}{_OWS}")  # one list member, matched whole
# The same grammar for the OpenAPI document, so a generated header the schema allows is one the server accepts.
IF_MATCH_PATTERN = f"^{_OWS}(\\*|{_TAG}({_OWS},{_OWS}{_TAG})*){_OWS}$"
_IF_MATCH_FORMAT = 'expected "*" or quoted revisions from an ETag, such as "3"'
IF_MATCH_MAX = 1024  # characters; a longer header is a 400 that does not quote it
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*\.?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
_DUPLICATE_SCAN_KEYS = 64  # bodies with more keys than this are checked for duplicates by a full parse


def token(request: Request) -> str | None:
    """The bearer token; both `Bearer` (OAuth style) and `Token` (the DataRobot client's default) schemes.
    Read from the raw headers (ASGI servers give their names in lower case): the first `Authorization`."""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            scheme, _, raw = value.decode("latin-1").partition(" ")
            return raw.strip() if scheme.lower() in ("bearer", "token") else None
    return None


def has_header(request: Request, name: bytes) -> bool:
    """Whether the request carries header `name` (lower case), read from the raw headers as `token` reads."""
    return any(key == name for key, _ in request.scope["headers"])


def base_url(request: Request, public_url: str | None) -> str:
    """Scheme and authority for absolute links: the configured public URL, else a well-formed `Host`, else the
    address the server listens on (a malformed Host is never reflected)."""
    if public_url:
        return public_url
    scope = request.scope
    host = request.headers.get("host")
    if not host or len(host) > 260 or not _HOST.fullmatch(host):
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scope['scheme']}://{host}"


# Scope key the server's protocol (`api.serve`) sets once the request's whole body has arrived: reading it then
# cannot wait, so it needs no deadline.
BODY_RECEIVED = "strongroom.body_received"


async def read_body(request: Request, limit: int, timeout: float = 30) -> bytes | None:
    """Read the body, stopping at the size limit (None: over it) or after `timeout` seconds (408)."""
    declared = request.headers.get("content-length")
    if declared and _DIGITS.fullmatch(declared) and (len(declared) > 19 or int(declared) > limit):
        return None
    if request.scope.get(BODY_RECEIVED):  # one message holds it all (the server buffered it)
        message = await request.receive()
        body: bytes = message.get("body", b"")
        if message.get("more_body", False):  # not the server we know: read the rest under the deadline
            rest = await _read_rest(request, limit - len(body), timeout)
            return None if rest is None else body + rest
        return None if len(body) > limit else body
    return await _read_rest(request, limit, timeout)


async def _read_rest(request: Request, limit: int, timeout: float) -> bytes | None:
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {timeout:g} s") from None
    return b"".join(chunks)


class RequestTimeout(StrongroomError):
    """The client did not send its body in time; the connection is closed."""

    status_code = 408


def _shown_key(key: str) -> str:
    """A JSON key as an error may quote it: short and printable, else a placeholder."""
    return key if len(key) <= 64 and key.isprintable() else "(unprintable)"


def _reject_duplicate(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            shown = _shown_key(key)
            raise InvalidInput(f"{shown}: appears more than once in the request body", {shown: "duplicate key"})
        seen[key] = value
    return seen


def _might_repeat_keys(raw: bytes, body: dict[str, Any]) -> bool:
    """Cheap screen: False only when every object key of `body` occurs once in `raw` (orjson keeps the last
    of repeated keys silently). Escaped keys or many keys always go to the exact check."""
    if b"\\" in raw:
        return True
    stack: list[Any] = [body]
    budget = _DUPLICATE_SCAN_KEYS
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            budget -= len(item)
            if budget < 0:
                return True
            for key, value in item.items():
                if raw.count(orjson.dumps(key)) > 1:
                    return True
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return False


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
    if _might_repeat_keys(raw, body):
        # RecursionError: nested past the stdlib's depth (orjson allows more); such a body fails validation anyway.
        with contextlib.suppress(RecursionError, ValueError):
            json.loads(raw, object_pairs_hook=_reject_duplicate)
    return body


def _malformed(exc: orjson.JSONDecodeError) -> MalformedRequest:
    """Say what is wrong and where; orjson's messages are fixed phrases that never quote the input."""
    if "depth" in exc.msg:
        msg = f"nested more than {JSON_MAX_DEPTH} levels deep"
    else:
        msg = f"not valid JSON ({exc.msg} at character {exc.pos})"
    return MalformedRequest(f"request body is {msg}", {"body": msg})


def required_string(body: dict[str, Any], name: str) -> str:
    """The body's `name` as a non-empty string; anything else is a 422 naming it."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name}: must be a non-empty string", {name: "must be a non-empty string"})
    return value


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
    if len(header) > IF_MATCH_MAX:
        msg = f"at most {IF_MATCH_MAX} characters"
        raise MalformedRequest(f"If-Match: {msg}", {"If-Match": msg})
    revisions = set()
    for part in header.split(","):
        tag = _ENTITY_TAG.fullmatch(part)
        if tag is None:
            raise MalformedRequest(f"If-Match: {_IF_MATCH_FORMAT}", {"If-Match": _IF_MATCH_FORMAT})
        if not tag.group(1):
            revisions.add(int(tag.group(2)))
    return frozenset(revisions)
