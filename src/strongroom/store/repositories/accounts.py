"""Users and API tokens: every SQL statement about them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError

from strongroom.store.db import Database
from strongroom.store.models import ApiToken, User

_AUTH = (
    select(
        ApiToken.id,
        ApiToken.scopes,
        ApiToken.expires_at,
        User.id.label("user_id"),
        User.username,
        User.is_admin,
        User.shared,
    )
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None), User.disabled_at.is_(None))
)
_REVOKE = (
    update(ApiToken)
    .where(ApiToken.id == bindparam("token_id"), ApiToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("revoked_at"))
)
_TOKEN_EXISTS = select(ApiToken.id).where(ApiToken.id == bindparam("id"))

# (token id, scopes, expires_at, user id, username, is_admin, shared)
TokenOwner = tuple[str, str, Any, str, str, bool, bool]


class UsernameTaken(Exception):
    """Another user already has this name."""


class AccountRepository:
    """Users and their tokens (stored as SHA-256 hashes only)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def token_owner(self, token_hash: str) -> TokenOwner | None:
        """The unrevoked token with this hash and its enabled user (expiry is the caller's to check)."""
        rows = self.db.fetch(_AUTH, {"token_hash": token_hash})
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    async def atoken_owner(self, token_hash: str) -> TokenOwner | None:
        rows = await self.db.afetch(_AUTH, {"token_hash": token_hash})
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def add_user(self, user: User) -> None:
        """Store a new user; UsernameTaken if the name is in use (also when a concurrent add wins)."""
        try:
            with self.db.write() as s:
                if s.scalar(select(User.id).where(User.username == user.username)):
                    raise UsernameTaken
                s.add(user)
        except IntegrityError:
            raise UsernameTaken from None

    def set_disabled(self, user_id: str, when: datetime | None) -> None:
        with self.db.write() as s:
            s.execute(update(User).where(User.id == user_id).values(disabled_at=when))

    def set_admin(self, user_id: str, admin: bool) -> None:
        with self.db.write() as s:
            s.execute(update(User).where(User.id == user_id).values(is_admin=admin))

    def users(self) -> list[User]:
        with self.db.read() as s:
            return list(s.scalars(select(User).order_by(User.created_at, User.id)))

    def user_named(self, username: str) -> User | None:
        with self.db.read() as s:
            return s.scalar(select(User).where(User.username == username))

    def add_token(self, token: ApiToken) -> None:
        with self.db.write() as s:
            s.add(token)

    def tokens_of(self, user_id: str) -> Sequence[ApiToken]:
        with self.db.read() as s:
            return list(s.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at)))

    def revoke(self, token_id: str, when: datetime) -> bool | None:
        """Revoke in one conditional UPDATE (concurrent revocations agree on the first time): True if revoked
        now, False if it already was, None if there is no such token."""
        with self.db.write() as s:
            if s.execute(_REVOKE, {"token_id": token_id, "revoked_at": when}).rowcount:  # type: ignore[attr-defined]
                return True
            return False if s.scalar(_TOKEN_EXISTS, {"id": token_id}) is not None else None
