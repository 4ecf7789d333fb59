"""The roles a user or group can hold on a credential, as names on the wire and ranks in the store."""

from __future__ import annotations

from typing import Any

from strongroom.errors import InvalidInput
from strongroom.store.repositories.sharing import CONSUMER, EDITOR, OWNER

ROLE_NAMES = {OWNER: "OWNER", EDITOR: "EDITOR", CONSUMER: "CONSUMER"}
RANKS = {name: rank for rank, name in ROLE_NAMES.items()}
NO_ROLE = "NO_ROLE"

__all__ = ["CONSUMER", "EDITOR", "NO_ROLE", "OWNER", "RANKS", "ROLE_NAMES", "role_rank"]


def role_rank(value: Any, *, field: str, allow_none: bool = False) -> int | None:
    """The rank of a role name (OWNER, EDITOR, CONSUMER; NO_ROLE -> None when `allow_none`); 422 naming `field`."""
    if allow_none and value == NO_ROLE:
        return None
    if isinstance(value, str) and value in RANKS:
        return RANKS[value]
    names = ", ".join([*RANKS, *([NO_ROLE] if allow_none else [])])
    raise InvalidInput(f"{field}: must be one of {names}", {field: f"must be one of {names}"})
