"""Users and API tokens: every SQL statement about them.

Every change is one transaction that also appends its audit record (`append_in`), so no change is stored
unaudited and no record describes a change that did not happen.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from strongroom.store.db import Database, Tx
from strongroom.store.models import (
    ApiToken,
    Credential,
    CredentialAccess,
    CredentialCount,
    CredentialRole,
    GroupMember,
    User,
)
from strongroom.store.repositories.audit import Entry, append_in

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
_REVOKE_OWN = (
    update(ApiToken)
    .where(ApiToken.id == bindparam("token_id"), ApiToken.user_id == bindparam("owner"), ApiToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("revoked_at"))
)
_TOKEN_EXISTS = select(ApiToken.id).where(ApiToken.id == bindparam("id"))
_OWN_TOKEN_EXISTS = select(ApiToken.id).where(ApiToken.id == bindparam("id"), ApiToken.user_id == bindparam("owner"))
_USER_NAMED = select(User.id).where(User.username == bindparam("username"))
_INSERT_USER = insert(User).values(
    id=bindparam("id"),
    username=bindparam("username"),
    created_at=bindparam("created_at"),
    is_admin=bindparam("is_admin"),
    disabled_at=None,
    shared=bindparam("shared"),
)
_INSERT_TOKEN = insert(ApiToken).values(
    id=bindparam("id"),
    user_id=bindparam("user_id"),
    name=bindparam("name"),
    token_hash=bindparam("token_hash"),
    prefix=bindparam("prefix"),
    scopes=bindparam("scopes"),
    created_at=bindparam("created_at"),
    expires_at=bindparam("expires_at"),
)
_SET_DISABLED = update(User).where(User.id == bindparam("user_id")).values(disabled_at=bindparam("disabled_at"))
_SET_ADMIN = update(User).where(User.id == bindparam("user_id")).values(is_admin=bindparam("is_admin"))
_LOCK_USER = select(User.id).where(User.id == bindparam("user_id")).with_for_update()
_OWNED = select(func.count()).select_from(Credential).where(Credential.owner_id == bindparam("user_id"))
_DELETE_USER = (
    delete(CredentialRole).where(
        CredentialRole.recipient_type == "user", CredentialRole.recipient_id == bindparam("user_id")
    ),
    delete(GroupMember).where(GroupMember.user_id == bindparam("user_id")),
    delete(CredentialAccess).where(CredentialAccess.user_id == bindparam("user_id")),
    delete(ApiToken).where(ApiToken.user_id == bindparam("user_id")),
    delete(CredentialCount).where(CredentialCount.owner_id == bindparam("user_id")),
    delete(User).where(User.id == bindparam("user_id")),
)
# Parameters are never named after a column the statement changes (SQLAlchemy reserves those names).
# A token's last use, written only when the stored one is more than a minute old (or absent).
_USED = (
    update(ApiToken)
    .where(
        ApiToken.token_hash == bindparam("hash"),
        or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < bindparam("cutoff")),
    )
    .values(last_used_at=bindparam("now"))
)

# (token id, scopes, expires_at, user id, username, is_admin, shared)
TokenOwner = tuple[str, str, Any, str, str, bool, bool]


class UsernameTaken(Exception):
    """Another user already has this name."""


class AccountRepository:
    """Users and their tokens (stored as SHA-256 hashes only)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _append(self, tx: Tx, audit: Entry) -> None:
        append_in(tx, audit, postgres=not self.db.is_sqlite)

    def token_owner(self, token_hash: str) -> TokenOwner | None:
        """The unrevoked token with this hash and its enabled user (expiry is the caller's to check)."""
        rows = self.db.fetch(_AUTH, {"token_hash": token_hash})
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    async def atoken_owner(self, token_hash: str) -> TokenOwner | None:
        rows = await self.db.afetch(_AUTH, {"token_hash": token_hash})
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def add_user(self, user: User, audit: Entry) -> None:
        """Store a new user with its audit record; UsernameTaken if the name is in use (also when a concurrent
        add wins)."""
        values = {
            "id": user.id,
            "username": user.username,
            "created_at": user.created_at,
            "is_admin": bool(user.is_admin),
            "shared": False,
        }

        def add(tx: Tx) -> None:
            if tx.rows(_USER_NAMED, {"username": user.username}):
                raise UsernameTaken
            tx.run(_INSERT_USER, values)
            self._append(tx, audit)

        try:
            self.db.transact(add)
        except IntegrityError:
            raise UsernameTaken from None

    def update_user(self, user_id: str, audit: Entry, *, disabled_at: Any = ..., is_admin: bool | None = None) -> None:
        """Set whether the user is disabled (a time, or None to enable) and/or an administrator, with the record."""

        def change(tx: Tx) -> None:
            if disabled_at is not ...:
                tx.run(_SET_DISABLED, {"user_id": user_id, "disabled_at": disabled_at})
            if is_admin is not None:
                tx.run(_SET_ADMIN, {"user_id": user_id, "is_admin": is_admin})
            self._append(tx, audit)

        self.db.transact(change)

    def delete_user(self, user_id: str, audit: Entry) -> int:
        """Delete the user, their tokens, memberships and roles, with the record, unless they own credentials:
        then nothing changes and the number they own is returned (0: deleted). On PostgreSQL the user's row is
        locked first, so a credential being created for them either counts or fails on its foreign key."""

        def remove(tx: Tx) -> int:
            tx.rows(_LOCK_USER, {"user_id": user_id})
            owned = int(tx.rows(_OWNED, {"user_id": user_id})[0][0])
            if owned:
                return owned
            for statement in _DELETE_USER:
                tx.run(statement, {"user_id": user_id})
            self._append(tx, audit)
            return 0

        return int(self.db.transact(remove))

    def users(self) -> list[User]:
        with self.db.read() as s:
            return list(s.scalars(select(User).order_by(User.created_at, User.id)))

    def users_page(self, offset: int, limit: int) -> tuple[list[User], int]:
        """A page of users, oldest first, and how many there are."""
        with self.db.read() as s:
            page = list(s.scalars(select(User).order_by(User.created_at, User.id).offset(offset).limit(limit)))
            total = int(s.scalar(select(func.count()).select_from(User)) or 0)
        return page, total

    def user_named(self, username: str) -> User | None:
        with self.db.read() as s:
            return s.scalar(select(User).where(User.username == username))

    def add_token(self, token: ApiToken, audit: Entry) -> None:
        """Store a new token (its hash only) with its audit record."""
        values = {
            "id": token.id,
            "user_id": token.user_id,
            "name": token.name,
            "token_hash": token.token_hash,
            "prefix": token.prefix,
            "scopes": token.scopes,
            "created_at": token.created_at,
            "expires_at": token.expires_at,
        }

        def add(tx: Tx) -> None:
            tx.run(_INSERT_TOKEN, values)
            self._append(tx, audit)

        self.db.transact(add)

    def tokens_of(self, user_id: str) -> Sequence[ApiToken]:
        with self.db.read() as s:
            return list(s.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at)))

    def revoke(self, token_id: str, when: datetime, audit: Entry, user_id: str | None = None) -> bool | None:
        """Revoke in one conditional UPDATE (concurrent revocations agree on the first time), audited only when it
        revokes: True if revoked now, False if it already was, None if there is no such token (of `user_id`'s,
        when given)."""
        params = {"token_id": token_id, "revoked_at": when, "owner": user_id}

        def revoke(tx: Tx) -> bool | None:
            if tx.run(_REVOKE if user_id is None else _REVOKE_OWN, params):
                self._append(tx, audit)
                return True
            exists = tx.rows(_TOKEN_EXISTS if user_id is None else _OWN_TOKEN_EXISTS, {"id": token_id, **params})
            return False if exists else None

        result: bool | None = self.db.transact(revoke)
        return result

    def note_use(self, token_hashes: Collection[str], now: datetime, every: timedelta) -> int:
        """Record that these tokens were used at `now`, in one transaction, skipping each whose recorded use is
        less than `every` old; how many rows changed."""
        cutoff = now - every

        def note(tx: Tx) -> int:
            return sum(tx.run(_USED, {"hash": h, "now": now, "cutoff": cutoff}) for h in token_hashes)

        changed: int = self.db.transact(note)
        return changed
