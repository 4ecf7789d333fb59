"""`AuditRecord`: reading the server's audit trail (`GET auditLog/`), across all pages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from strongroom.client.client import get_client
from strongroom.client.dates import parse_date
from strongroom.client.errors import StrongroomSDKError

_PATH = "auditLog/"


def _moment(value: datetime | str) -> str:
    """A datetime as ISO 8601 (naive means UTC), or a string passed on as given (`1d`, `12h`, a date)."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


class AuditRecord:
    """One audit record as the server returns it: never a secret, token or password."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data: dict[str, Any] = dict(data)
        actor = data.get("actor") or {}
        target = data.get("target") or {}
        self.time: datetime | None = parse_date(data.get("time"))
        self.action: str | None = data.get("action")
        self.outcome: str | None = data.get("outcome")
        self.status: int | None = data.get("status")
        self.actor: str | None = actor.get("username")
        self.token_id: str | None = actor.get("tokenId")
        self.address: str | None = data.get("address")
        self.request_id: str | None = data.get("requestId")
        self.credential_id: str | None = target.get("credentialId")
        self.credential_name: str | None = target.get("name")
        self.detail: dict[str, Any] = dict(data.get("detail") or {})

    def __repr__(self) -> str:
        return (
            f"AuditRecord({self.action!r}, {self.outcome!r}, actor={self.actor!r}, credential={self.credential_id!r})"
        )

    @classmethod
    def list(
        cls,
        credential_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> list[AuditRecord]:
        """Every matching record, oldest first, across all pages; `since`/`until` take a datetime, an ISO 8601
        string or a span before now (`1d`, `12h`)."""
        params = {
            key: value
            for key, value in (
                ("credentialId", credential_id),
                ("actor", actor),
                ("action", action),
                ("since", _moment(since) if since is not None else None),
                ("until", _moment(until) if until is not None else None),
            )
            if value is not None
        }
        items = get_client().paginate(_PATH, params or None)
        records = []
        for item in items:
            if not isinstance(item, Mapping):
                raise StrongroomSDKError("the server returned an audit record that is not an object")
            records.append(cls(item))
        return records
