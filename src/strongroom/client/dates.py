"""Dates on the wire, both ways: the server writes RFC 3339 in UTC with microseconds and a Z, and so does
every `as_dict` of the SDK (the CLI's remote output then matches its local one)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_date(value: Any) -> datetime | None:
    """The server's date (trailing Z included) as an aware datetime; None when absent or unparseable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def wire_date(value: datetime | None) -> str | None:
    """A datetime as the server writes it (naive means UTC); None stays None."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
