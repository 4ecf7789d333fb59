"""The audit trail: one record per change, secret use, denial and failed authentication, in a tamper-evident chain.

A change's record is written in the same transaction as the change (the repositories take an `Entry`), so
no change is acknowledged unaudited; events that change nothing (a denial, a failed authentication) are
appended on their own. Records never hold a secret, token or password: only who, from where, what, on which
target, and how it ended.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from strongroom.errors import InvalidInput
from strongroom.representation import compact_json, in_utc, iso
from strongroom.services.accounts import Principal
from strongroom.store.models import utcnow
from strongroom.store.repositories.audit import GENESIS, AuditRepository, Entry, chain_hash

MAX_PAGE = 1000
_RELATIVE = re.compile(r"(\d{1,6})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_moment(value: str, name: str, now: datetime | None = None) -> datetime:
    """A point in time from ISO 8601 (naive means UTC; a moment that in UTC falls beyond either end of the
    calendar is that end) or a span before `now` (`90s`, `30m`, `12h`, `1d`, `2w`); 422 naming `name` otherwise."""
    text = value.strip()
    if match := _RELATIVE.fullmatch(text):
        try:
            return (now or utcnow()) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        except OverflowError:
            message = "is further back than the calendar goes"
            raise InvalidInput(f"{name}: {message}", {name: message}) from None
    try:
        moment = datetime.fromisoformat(text) if 0 < len(text) <= 64 else None
    except ValueError:
        moment = None
    if moment is None:
        message = "must be an ISO 8601 date or time, or a span such as 1d, 12h, 30m"
        raise InvalidInput(f"{name}: {message}", {name: message})
    return in_utc(moment)  # in UTC, as stored; a bound beyond either end of the calendar is the calendar's end


@dataclass(frozen=True)
class Event:
    """Something to audit. `outcome` is "success", "denied" (authorisation) or "failed" (anything else)."""

    action: str
    status: int
    who: Principal | None = None
    outcome: str = "success"
    credential_id: str | None = None
    credential_name: str | None = None
    owner_id: str | None = None
    address: str | None = None
    request_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def entry(self, at: datetime | None = None) -> Entry:
        """The record to store: canonical JSON (sorted keys, no spaces) and the columns copied from it."""
        at = at or utcnow()
        who = self.who
        content = {
            "time": iso(at),
            "action": self.action,
            "outcome": self.outcome,
            "status": self.status,
            "actor": None
            if who is None
            else {"userId": who.user_id, "username": who.username, "tokenId": who.token_id},
            "address": self.address if self.address is not None else (who.address if who else None),
            "requestId": self.request_id if self.request_id is not None else (who.request_id if who else None),
            "target": None
            if self.credential_id is None
            else {"credentialId": self.credential_id, "name": self.credential_name, "ownerId": self.owner_id},
            "detail": dict(self.detail),
        }
        return Entry(
            at=at,
            actor=who.username if who else None,
            action=self.action,
            credential_id=self.credential_id,
            owner_id=self.owner_id,
            status=self.status,
            content=compact_json(content, sort_keys=True),
        )


@dataclass(frozen=True)
class Verdict:
    """What `verify` found: how many records it checked, and the first that does not verify (or None)."""

    checked: int
    first_bad: str | None


class AuditService:
    """Recording events, reading the log, and verifying its chains."""

    def __init__(self, audit: AuditRepository) -> None:
        self.audit = audit

    def record(self, event: Event) -> None:
        """Append an event that changes nothing else (a denial, a failed authentication); a record about a
        credential names its owner and name, so the owner sees it too."""
        if event.credential_id is not None and event.owner_id is None:
            found = self.audit.owner_of(event.credential_id)
            if found is not None:
                event = replace(event, owner_id=found[0], credential_name=event.credential_name or found[1])
        self.audit.append(event.entry())

    def list(
        self,
        who: Principal | None,
        *,
        credential_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int]:
        """Records oldest first, and how many match: admins (and local administration, `who` None) see all;
        anyone else the records about credentials they own."""
        if who is not None:
            who.require("read")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}", {"limit": f"must be 1 to {MAX_PAGE}"})
        if offset < 0:
            raise InvalidInput("offset: must be 0 or more", {"offset": "must be 0 or more"})
        owner = None if who is None or who.admin else who.user_id
        contents, total = self.audit.records(
            credential_id=credential_id,
            actor=actor,
            action=action,
            owner_id=owner,
            since=since,
            until=until,
            offset=offset,
            limit=limit,
        )
        return [json.loads(c) for c in contents], total

    def export(self, *, since: datetime | None = None, until: datetime | None = None) -> Iterator[str]:
        """Every record's JSON (one line each), oldest first, for a SIEM (local administration)."""
        offset = 0
        while True:
            contents, _ = self.audit.records(since=since, until=until, offset=offset, limit=MAX_PAGE)
            yield from contents
            if len(contents) < MAX_PAGE:
                return
            offset += len(contents)

    def verify(self) -> Verdict:
        """Walk every chain: each record's hash must follow from the previous one and its content, its columns
        must match its content, its seq must follow the previous one, and the chain must end at its head."""
        checked = 0
        for shard, (head_seq, head_hash) in sorted(self.audit.heads().items()):
            previous, expected_seq = GENESIS, 1
            for seq, content, digest, at, actor, action, credential_id, owner_id, status in self.audit.chain(shard):
                where = f"record {shard}/{seq}"
                if seq != expected_seq:
                    return Verdict(checked, f"{where}: expected {shard}/{expected_seq} (a record was deleted or moved)")
                if chain_hash(previous, content) != digest:
                    return Verdict(checked, f"{where}: its hash does not match its content and its predecessor")
                data = json.loads(content)
                target = data.get("target") or {}
                columns = (iso(at), actor, action, credential_id, owner_id, status)
                stated = (
                    data["time"],
                    (data.get("actor") or {}).get("username"),
                    data["action"],
                    target.get("credentialId"),
                    target.get("ownerId"),
                    data["status"],
                )
                if columns != stated:
                    return Verdict(checked, f"{where}: its columns differ from its content")
                previous, expected_seq = digest, seq + 1
                checked += 1
            if (head_seq, head_hash) != (expected_seq - 1, previous):
                missing = f"record {shard}/{expected_seq}"
                return Verdict(checked, f"{missing}: missing (chain {shard} ends before its head, {shard}/{head_seq})")
        return Verdict(checked, None)
