"""`User` and `Group` (administrators) and `ApiKey` (the caller's own tokens), mirroring `/users/`, `/groups/`
and `/account/apiKeys/`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from strongroom.client.client import get_client
from strongroom.client.dates import parse_date, wire_date


def _part(value: str) -> str:
    """A path segment, quoted so a crafted name cannot walk to another route."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class User:
    """A user as an administrator sees it."""

    user_id: str
    username: str
    created_at: datetime | None
    is_admin: bool
    disabled: bool

    @classmethod
    def from_server(cls, data: dict[str, Any]) -> User:
        return cls(
            data["id"],
            data["username"],
            parse_date(data.get("createdAt")),
            bool(data["isAdmin"]),
            bool(data["disabled"]),
        )

    def as_dict(self) -> dict[str, Any]:
        created = wire_date(self.created_at)
        return {
            "id": self.user_id,
            "username": self.username,
            "createdAt": created,
            "isAdmin": self.is_admin,
            "disabled": self.disabled,
        }

    @classmethod
    def list(cls) -> list[User]:
        """Every user, across all pages (administrators)."""
        return [cls.from_server(item) for item in get_client().paginate("users/")]

    @classmethod
    def create(cls, username: str, is_admin: bool = False) -> User:
        """Create a user (an administrator with `is_admin`)."""
        return cls.from_server(get_client().post("users/", json={"username": username, "isAdmin": is_admin}).json())

    @classmethod
    def disable(cls, username: str) -> User:
        """Disable a user: every token of theirs fails from the next request."""
        return cls._patch(username, {"disabled": True})

    @classmethod
    def enable(cls, username: str) -> User:
        """Enable a disabled user again."""
        return cls._patch(username, {"disabled": False})

    @classmethod
    def set_admin(cls, username: str, is_admin: bool) -> User:
        """Make a user an administrator, or no longer one."""
        return cls._patch(username, {"isAdmin": is_admin})

    @classmethod
    def delete(cls, username: str) -> None:
        """Delete a user and their tokens (refused while they own credentials)."""
        get_client().delete(f"users/{_part(username)}/")

    @classmethod
    def _patch(cls, username: str, body: dict[str, Any]) -> User:
        return cls.from_server(get_client().patch(f"users/{_part(username)}/", json=body).json())


@dataclass(frozen=True)
class ApiKey:
    """One of the caller's API tokens; `token` holds the value only on the object `create` returns."""

    key_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_server(cls, data: dict[str, Any]) -> ApiKey:
        return cls(
            data["id"],
            data["name"],
            data["prefix"],
            list(data["scopes"]),
            parse_date(data.get("createdAt")),
            parse_date(data.get("expiresAt")),
            parse_date(data.get("lastUsedAt")),
            bool(data["revoked"]),
            data.get("token"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The key's description (never its value)."""

        def when(value: datetime | None) -> str | None:
            return wire_date(value)

        return {
            "id": self.key_id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": self.scopes,
            "createdAt": when(self.created_at),
            "expiresAt": when(self.expires_at),
            "lastUsedAt": when(self.last_used_at),
            "revoked": self.revoked,
        }

    @classmethod
    def list(cls) -> list[ApiKey]:
        """The caller's tokens (revoked and expired ones included), across all pages."""
        return [cls.from_server(item) for item in get_client().paginate("account/apiKeys/")]

    @classmethod
    def create(cls, name: str, scopes: list[str] | None = None, expires_at: datetime | str | None = None) -> ApiKey:
        """A new token for the caller; its value is in `.token`, shown by the server only this once."""
        body: dict[str, Any] = {"name": name}
        if scopes is not None:
            body["scopes"] = list(scopes)
        if expires_at is not None:
            body["expiresAt"] = expires_at.isoformat() if isinstance(expires_at, datetime) else expires_at
        return cls.from_server(get_client().post("account/apiKeys/", json=body).json())

    @classmethod
    def revoke(cls, key_id: str) -> None:
        """Revoke one of the caller's tokens; it fails from the next request."""
        get_client().delete(f"account/apiKeys/{_part(key_id)}/")


@dataclass(frozen=True)
class Group:
    """A group of users and its members (administrators)."""

    group_id: str
    name: str
    members: list[str]

    @classmethod
    def list(cls) -> list[Group]:
        data = get_client().get("groups/").json()["data"]
        return [cls(g["id"], g["name"], list(g["members"])) for g in data]

    @classmethod
    def create(cls, name: str) -> Group:
        made = get_client().post("groups/", json={"name": name}).json()
        return cls(made["id"], made["name"], list(made["members"]))

    @classmethod
    def add_member(cls, group: str, username: str) -> None:
        """Add a user to the group (by the group's id or name)."""
        get_client().post(f"groups/{_part(group)}/members/", json={"username": username})

    @classmethod
    def remove_member(cls, group: str, username: str) -> None:
        """Remove a user from the group: their access through it ends at once."""
        get_client().delete(f"groups/{_part(group)}/members/{_part(username)}/")

    @classmethod
    def delete(cls, group: str) -> None:
        """Delete the group and every role given to it."""
        get_client().delete(f"groups/{_part(group)}/")
