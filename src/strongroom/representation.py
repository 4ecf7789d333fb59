"""How things look on the wire: the one date format and a credential's API JSON.

A credential's JSON is rendered at every write and stored (`credentials.wire`), so reads send it untouched.
It holds only what every viewer sees alike; per-viewer fields (such as a sharing role) are added when read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson


def compact_json(value: Any, *, sort_keys: bool = False) -> str:
    """JSON with no spaces and non-ASCII as is (orjson; what it refuses, such as an integer beyond 64 bits or
    a lone surrogate, goes through the standard library's encoder instead). Stored text: parse, never compare."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)


# 19 digits in a row: possibly an integer beyond 64 bits, which orjson reads as a float (losing digits) or refuses.
_LONG_DIGITS = re.compile(r"\d{19}")
_LONG_DIGIT_BYTES = re.compile(rb"\d{19}")


def parse_json(text: str | bytes) -> Any:
    """JSON text as `compact_json` writes it: orjson, and the standard library for text that may hold an integer
    beyond 64 bits (which `compact_json` stored through the standard library) or that orjson refuses."""
    long_digits = _LONG_DIGITS if isinstance(text, str) else _LONG_DIGIT_BYTES
    if long_digits.search(text) is not None:  # type: ignore[arg-type]
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def in_utc(moment: datetime) -> datetime:
    """`moment` in UTC (naive means UTC already); a moment that in UTC falls beyond either end of the calendar
    (year 1 with a positive offset, year 9999 with a negative one) is that end."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (datetime.max if moment.year == datetime.max.year else datetime.min).replace(tzinfo=UTC)


def iso(value: datetime | str) -> str:
    """RFC 3339 in UTC with a Z and microseconds, as DataRobot emits; a SQLite date string is reformatted."""
    if value.__class__ is str:
        return f"{value[:10]}T{value[11:26]}Z"  # type: ignore[index]
    return value.isoformat(timespec="microseconds")[:26] + "Z"  # type: ignore[union-attr]


def credential(row: Sequence[Any]) -> dict[str, Any]:
    """A credential as the API shows it, from (id, name, type, description, public JSON, created_at)."""
    credential_id, name, credential_type, description, public_data, created_at = row
    out = {
        "credentialId": credential_id,
        "name": name,
        "credentialType": credential_type,
        "description": description or "",
        "creationDate": iso(created_at),
    }
    if public_data and public_data != "{}":
        out.update(parse_json(public_data))
    return out


def render_credential(row: Sequence[Any]) -> str:
    """`credential` as JSON text, for storing in `credentials.wire`."""
    return orjson.dumps(credential(row)).decode()


def with_role(wire: str, role: str) -> str:
    """A credential's stored JSON (an object) with the viewer's `role` added as its last field."""
    return f'{wire[:-1]},"role":"{role}"}}'
