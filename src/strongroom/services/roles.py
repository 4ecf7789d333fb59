"""The roles a user or group can hold on a credential, as names on the wire and ranks in the store."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from strongroom.errors import InvalidInput
from strongroom.store.repositories.sharing import CONSUMER, EDITOR, OWNER

ROLE_NAMES = {OWNER: "OWNER", EDITOR: "EDITOR", CONSUMER: "CONSUMER"}
RANKS = {name: rank for rank, name in ROLE_NAMES.items()}
NO_ROLE = "NO_ROLE"

__all__ = ["CONSUMER", "EDITOR", "NO_ROLE", "OWNER", "RANKS", "ROLE_NAMES", "access_entries", "role_rank"]


def access_entries(
    owner_id: str, owner_name: str, roles: Iterable[tuple[str, str, int, bool, str | None]]
) -> list[dict[str, Any]]:
    """DataRobot's sharedRoles items: the owner first, then each `(kind, id, role, can share, name)` held."""
    entries = [{"id": owner_id, "name": owner_name, "role": "OWNER", "shareRecipientType": "user", "canShare": True}]
    for kind, rid, role, can_share, name in roles:
        entries.append(
            {
                "id": rid,
                "name": name or rid,
                "role": ROLE_NAMES[role],
                "shareRecipientType": kind,
                "canShare": can_share or role == OWNER,
            }
        )
    return entries


def role_rank(value: Any, *, field: str, allow_none: bool = False) -> int | None:
    """The rank of a role name (OWNER, EDITOR, CONSUMER; NO_ROLE -> None when `allow_none`); 422 naming `field`."""
    if allow_none and value == NO_ROLE:
        return None
    if isinstance(value, str) and value in RANKS:
        return RANKS[value]
    names = ", ".join([*RANKS, *([NO_ROLE] if allow_none else [])])
    raise InvalidInput(f"{field}: must be one of {names}", {field: f"must be one of {names}"})
