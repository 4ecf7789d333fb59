"""Every SQL statement about credentials, including the hot paths that fold the token check into a read.

Statements are built once at import: constructing a SQLAlchemy statement costs more than running it. Which
backend takes which path (one statement with the token, a group commit, a data-modifying CTE) is decided
here, never by a use case. Rows come back as the store holds them; dates via `Database.as_datetime`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    Executable,
    LargeBinary,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

from strongroom.store.db import Database, Tx, count_shard
from strongroom.store.models import ApiToken, Credential, CredentialCount, StoreState, UTCDateTime

COLUMNS = tuple(Credential.__table__.c)  # a credential row, in table order (`row` and `current` use it)
FIXED = ("id", "owner_id", "credential_type", "created_at")  # never changed by an update
WIRE_COLUMNS = ("id", "name", "credential_type", "description", "public_data", "created_at")  # what `wire` shows
_SEP = "\x1e"  # ASCII record separator: JSON text never holds it unescaped, so it splits a page's items


class NameTaken(Exception):
    """The write broke the one-name-per-owner rule."""


@dataclass(frozen=True)
class Page:
    """One page of a list: `items` are the credentials' stored API JSON, for the server to send untouched."""

    items: list[str]
    total: int
    offset: int
    limit: int

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.items) < self.total

    def credentials(self) -> list[dict[str, Any]]:
        """The items as dicts, for callers that read them rather than forward them."""
        return [orjson.loads(item) for item in self.items]


@dataclass(frozen=True)
class TokenRow:
    """A token's scopes and expiry as read alongside a credential or page (the fast paths)."""

    scopes: str
    expires_at: datetime | str | None


_GET = select(Credential.wire, Credential.revision).where(
    Credential.id == bindparam("id"), Credential.owner_id == bindparam("owner")
)
_GET_WITH_TOKEN = (
    select(Credential.wire, Credential.revision, ApiToken.scopes, ApiToken.expires_at)
    .join(ApiToken, ApiToken.user_id == Credential.owner_id)
    .where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        Credential.id == bindparam("id"),
    )
)
_MINE = (Credential.id == bindparam("id"), Credential.owner_id == bindparam("owner"))
_INSERT = insert(Credential).values({c.name: bindparam(c.name) for c in COLUMNS})
_CURRENT = select(*COLUMNS).where(*_MINE)
_UPDATE = (  # compare-and-swap on the revision read: a concurrent change makes it match no row
    update(Credential)
    .where(Credential.id == bindparam("target"), Credential.revision == bindparam("read_revision"))
    .values({c.name: bindparam(f"new_{c.name}") for c in COLUMNS if c.name not in FIXED})
)
_PG_UPDATE = _UPDATE.returning(Credential.revision)  # one autocommit statement: atomic on its own
_DELETE = delete(Credential).where(*_MINE).returning(Credential.credential_type)
_DELETE_AT = (
    delete(Credential).where(*_MINE, Credential.revision == bindparam("revision")).returning(Credential.credential_type)
)
_REVISION = select(Credential.revision).where(*_MINE).with_for_update()
_STALE = (
    select(
        Credential.id,
        Credential.owner_id,
        Credential.credential_type,
        Credential.seal_generation,
        Credential.public_data,
        Credential.key_version,
        Credential.wrapped_key,
    )
    .where(Credential.key_version != bindparam("active"), Credential.id > bindparam("after"))
    .order_by(Credential.id)
    .limit(bindparam("limit"))
)
_REWRAP = (
    update(Credential)
    .where(
        Credential.id == bindparam("target"),
        Credential.key_version == bindparam("old_version"),
        Credential.wrapped_key == bindparam("old_wrapped"),
    )
    .values(key_version=bindparam("new_version"), wrapped_key=bindparam("new_wrapped"))
)


def _pg_counted(change: Any, delta: int) -> Any:
    """PostgreSQL: a create or delete and its count change in one statement (a data-modifying CTE)."""
    changed = change.returning(Credential.owner_id, Credential.credential_type).cte("changed")
    rows = select(changed.c.owner_id, changed.c.credential_type, count_shard(postgresql), literal(delta))
    stmt = postgresql.insert(CredentialCount).from_select(["owner_id", "credential_type", "shard", "n"], rows)
    return stmt.on_conflict_do_update(
        index_elements=["owner_id", "credential_type", "shard"], set_={"n": CredentialCount.n + stmt.excluded.n}
    ).returning(CredentialCount.n)


_PG_CREATE = _pg_counted(_INSERT, +1)
# The insert happens only if the token is still valid for that owner: a revocation or expiry since the
# token was last authenticated takes effect at once, and no separate lookup is needed.
_TOKEN_STILL_VALID = exists().where(
    ApiToken.token_hash == bindparam("token_hash"),
    ApiToken.user_id == bindparam("owner_id"),
    ApiToken.revoked_at.is_(None),
    or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("now", type_=UTCDateTime())),
)
_PG_CREATE_CHECKED = _pg_counted(
    insert(Credential).from_select(
        [c.name for c in COLUMNS],
        select(
            *(
                cast(bindparam(c.name), c.type) if isinstance(c.type, LargeBinary) else bindparam(c.name, type_=c.type)
                for c in COLUMNS
            )
        ).where(_TOKEN_STILL_VALID),
    ),
    +1,
)
_PG_DELETE = _pg_counted(delete(Credential).where(*_MINE), -1)
_TOTAL = select(func.coalesce(func.sum(CredentialCount.n), 0))
_COUNT = _TOTAL.where(CredentialCount.owner_id == bindparam("owner"))
_COUNT_TYPES = _COUNT.where(CredentialCount.credential_type.in_(bindparam("types", expanding=True)))
_LEGACY = (
    select(*COLUMNS)
    .where(Credential.seal_generation == 0, Credential.id > bindparam("after"))
    .order_by(Credential.id)
    .limit(bindparam("limit"))
)
_SEALS_UPGRADED = "seals_upgraded_at"
_UPGRADED = select(StoreState.value).where(StoreState.name == _SEALS_UPGRADED)
_BY_KEY_VERSION = select(Credential.key_version, func.count()).group_by(Credential.key_version)
_NOT_ON = select(func.count()).where(Credential.key_version != bindparam("version"))
_ON = select(func.count()).where(Credential.key_version == bindparam("version"))


@cache
def _page(postgres: bool, newest_first: bool, filtered: bool, with_token: bool = False) -> Executable:
    """One list page in one statement: the credentials' stored API JSON and the owner's total from the counts.

    `with_token` finds the owner from the token in the same statement and puts the token's scopes, expiry
    and user id first, for the caller to check. The page is served by the (owner, [type,] created_at, id)
    indexes. SQLite returns one row `([token...,] joined, total)`: group_concat joins the page in C (SQLite
    aggregates a LIMIT subquery in its order; a test walks pages with ties in both orders to hold it to that).
    PostgreSQL returns one row per credential; with the token, a header row `(scopes, expires_at, user_id,
    NULL, total)` (none if the token is not valid), then rows `(NULL, NULL, NULL, wire, NULL)`.
    docs/performance.md has the measurements behind each shape.
    """
    token = (ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
    owner: Any
    if not with_token:
        owner = bindparam("owner")
    elif postgres:
        owner = select(ApiToken.user_id).where(*token).scalar_subquery()
    else:
        owner = ApiToken.user_id  # a column of the outer statement's one token row
    mine = [Credential.owner_id == owner]
    counted = [CredentialCount.owner_id == owner]
    if filtered:
        mine.append(Credential.credential_type.in_(bindparam("types", expanding=True)))
        counted.append(CredentialCount.credential_type.in_(bindparam("types", expanding=True)))
    if newest_first:
        ordering = (Credential.created_at.desc(), Credential.id.desc())
    else:
        ordering = (Credential.created_at.asc(), Credential.id.asc())
    if postgres and with_token:  # the total, correlated to the header row's token
        counted[0] = CredentialCount.owner_id == ApiToken.user_id
    total = _TOTAL.where(*counted).scalar_subquery()
    if postgres and with_token:
        header = select(ApiToken.scopes, ApiToken.expires_at, ApiToken.user_id, null(), total).where(*token)
        rows = select(null(), null(), null(), Credential.wire, null()).where(*mine).order_by(*ordering)
        return union_all(header, rows.limit(bindparam("limit")).offset(bindparam("offset")))
    page = select(Credential.wire, total) if postgres else select(Credential.wire).correlate(ApiToken)
    page = page.where(*mine).order_by(*ordering).limit(bindparam("limit")).offset(bindparam("offset"))
    if postgres:
        return page
    rows = page.subquery("page")
    joined = select(func.group_concat(rows.c.wire, literal(_SEP))).scalar_subquery()
    if not with_token:
        return select(joined, total)
    return select(ApiToken.scopes, ApiToken.expires_at, ApiToken.user_id, joined, total).where(*token)


def _is_name_clash(exc: IntegrityError) -> bool:
    """Whether a failed write hit the (owner, name) uniqueness rule, as SQLite or PostgreSQL words it."""
    text = str(exc.orig)
    return "uq_credentials_owner_name" in text or "credentials.owner_id, credentials.name" in text


class _NamesUnique:
    """Turn the driver's unique-name violation into NameTaken; any other integrity error passes unchanged."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, IntegrityError) and _is_name_clash(exc):
            raise NameTaken from None


class CredentialRepository:
    """Credentials and their per-owner counts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def on_loop(self) -> bool:
        """Whether the async methods run on the event loop's own connections (PostgreSQL)."""
        return self.db.on_loop()

    # ---- reads ------------------------------------------------------------------------------------------

    def get(self, credential_id: str, owner_id: str) -> tuple[str, int] | None:
        """The credential's stored JSON and revision, if `owner_id` owns it."""
        rows = self.db.fetch(_GET, {"id": credential_id, "owner": owner_id})
        return (rows[0][0], int(rows[0][1])) if rows else None

    def get_for_token(self, token_hash: str, credential_id: str) -> tuple[str, int, TokenRow] | None:
        """The credential with the scopes of an unrevoked token of its owner, in one statement."""
        return _got(self.db.fetch(_GET_WITH_TOKEN, {"token_hash": token_hash, "id": credential_id}))

    async def aget_for_token(self, token_hash: str, credential_id: str) -> tuple[str, int, TokenRow] | None:
        return _got(await self.db.afetch(_GET_WITH_TOKEN, {"token_hash": token_hash, "id": credential_id}))

    def page(self, owner_id: str, params: Mapping[str, Any], newest_first: bool) -> Page:
        """A page of the owner's credentials (`params`: offset, limit and optionally types)."""
        sqlite = self.db.is_sqlite
        query = {**params, "owner": owner_id}
        rows = self.db.fetch(_page(not sqlite, newest_first, "types" in params), query)
        if sqlite:
            text, total = rows[0]
            return Page(text.split(_SEP) if text else [], int(total), params["offset"], params["limit"])
        if rows:
            return Page([row[0] for row in rows], int(rows[0][1]), params["offset"], params["limit"])
        total = self.db.fetch(_COUNT_TYPES if "types" in params else _COUNT, query)[0][0]
        return Page([], int(total), params["offset"], params["limit"])

    def page_for_token(
        self, token_hash: str, params: Mapping[str, Any], newest_first: bool
    ) -> tuple[Page, TokenRow] | None:
        """A page of the token's user's credentials and the token's scopes, in one statement."""
        query = {**params, "token_hash": token_hash}
        statement = _page(not self.db.is_sqlite, newest_first, "types" in params, True)
        return self._token_page(self.db.fetch(statement, query), params)

    async def apage_for_token(
        self, token_hash: str, params: Mapping[str, Any], newest_first: bool
    ) -> tuple[Page, TokenRow] | None:
        query = {**params, "token_hash": token_hash}
        statement = _page(not self.db.is_sqlite, newest_first, "types" in params, True)
        return self._token_page(await self.db.afetch(statement, query), params)

    def _token_page(self, rows: Sequence[Sequence[Any]], params: Mapping[str, Any]) -> tuple[Page, TokenRow] | None:
        # PostgreSQL: the header row is the one with the token's scopes (page rows have NULL there; nothing here
        # relies on UNION ALL's order); SQLite: one row, the page joined in a column.
        header = next((row for row in rows if row[0] is not None), None)
        if header is None:
            return None
        scopes, expires_at, _, joined, total = header
        if self.db.is_sqlite:
            items = joined.split(_SEP) if joined else []
        else:
            items = [row[3] for row in rows if row[0] is None]
        return Page(items, int(total), params["offset"], params["limit"]), TokenRow(scopes, expires_at)

    def current(self, credential_id: str, owner_id: str) -> dict[str, Any] | None:
        """Every column of the credential, if `owner_id` owns it."""
        return _row(self.db.fetch(_CURRENT, {"id": credential_id, "owner": owner_id}))

    async def acurrent(self, credential_id: str, owner_id: str) -> dict[str, Any] | None:
        return _row(await self.db.afetch(_CURRENT, {"id": credential_id, "owner": owner_id}))

    # ---- writes -----------------------------------------------------------------------------------------

    def insert(self, row: Mapping[str, Any]) -> None:
        """Add a credential (all `COLUMNS`) and count it; NameTaken if its owner already uses the name."""
        with _NamesUnique():
            if self.db.is_sqlite:
                self.db.transact(lambda tx: _insert_counted(tx, row), one_change=True)
            else:
                self.db.write_one(_PG_CREATE, row)

    async def ainsert(self, row: Mapping[str, Any]) -> None:
        with _NamesUnique():
            await self.db.awrite_one(_PG_CREATE, row)

    async def ainsert_if_token(self, row: Mapping[str, Any], token_hash: str, now: datetime) -> bool:
        """PostgreSQL: insert only while `token_hash` is a valid token of the row's owner; False if it is not."""
        with _NamesUnique():
            return bool(await self.db.awrite_one(_PG_CREATE_CHECKED, {**row, "token_hash": token_hash, "now": now}))

    def swap(self, read_revision: int, row: Mapping[str, Any]) -> bool:
        """Write the changed row if the credential is still at `read_revision` (compare-and-swap)."""
        params = _swap_params(read_revision, row)
        with _NamesUnique():
            if self.db.is_sqlite:
                return bool(self.db.transact(lambda tx: tx.run(_UPDATE, params), one_change=True))
            return bool(self.db.write_one(_PG_UPDATE, params))

    async def aswap(self, read_revision: int, row: Mapping[str, Any]) -> bool:
        with _NamesUnique():
            return bool(await self.db.awrite_one(_PG_UPDATE, _swap_params(read_revision, row)))

    def delete(self, credential_id: str, owner_id: str) -> bool:
        """Delete the owner's credential and uncount it; False if there is none."""
        mine = {"id": credential_id, "owner": owner_id}
        if not self.db.is_sqlite:
            return bool(self.db.write_one(_PG_DELETE, mine))

        def remove(tx: Tx) -> bool:
            gone = tx.rows(_DELETE, mine)
            if gone:
                tx.count(owner_id, gone[0][0], -1)
            return bool(gone)

        return self.db.transact(remove)

    async def adelete(self, credential_id: str, owner_id: str) -> bool:
        return bool(await self.db.awrite_one(_PG_DELETE, {"id": credential_id, "owner": owner_id}))

    def delete_at(self, credential_id: str, owner_id: str, revisions: Collection[int]) -> tuple[str, int | None]:
        """Delete only while the stored revision is one of `revisions`. The outcome and the revision found:
        ("deleted", r), ("missing", None), ("stale", r), or ("raced", None) when it changed meanwhile."""
        mine = {"id": credential_id, "owner": owner_id}

        def remove_at_revision(tx: Tx) -> tuple[str, int | None]:
            found = tx.rows(_REVISION, mine)
            if not found:
                return "missing", None
            revision = int(found[0][0])
            if revision not in revisions:
                return "stale", revision
            gone = tx.rows(_DELETE_AT, {**mine, "revision": revision})
            if not gone:
                return "raced", None
            tx.count(owner_id, gone[0][0], -1)
            return "deleted", revision

        return self.db.transact(remove_at_revision)

    # ---- key rotation and upkeep ------------------------------------------------------------------------

    def count_by_key_version(self) -> dict[int, int]:
        """How many credentials' data keys each master-key version wraps."""
        return {int(v): int(n) for v, n in self.db.fetch(_BY_KEY_VERSION, {})}

    def count_not_on(self, version: int) -> int:
        return int(self.db.fetch(_NOT_ON, {"version": version})[0][0])

    def count_on(self, version: int) -> int:
        return int(self.db.fetch(_ON, {"version": version})[0][0])

    def not_on(self, version: int, after: str, limit: int) -> Sequence[Sequence[Any]]:
        """Up to `limit` (id, owner, type, seal_generation, public_data, key_version, wrapped_key) with ids after
        `after`, whose data key is wrapped by another version than `version`."""
        return self.db.fetch(_STALE, {"active": version, "after": after, "limit": limit})

    def rewrap(self, changes: Sequence[Mapping[str, Any]]) -> int:
        """Apply re-wrapped data keys (target, old_version, old_wrapped, new_version, new_wrapped) where the row
        still holds the key that was read; returns how many applied (a concurrent change wins)."""
        return self.db.transact(lambda tx: sum(tx.run(_REWRAP, change) for change in changes))

    def legacy_seals(self, after: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` credentials with ids after `after` sealed before seal generations existed (generation
        0), every column."""
        rows = self.db.fetch(_LEGACY, {"after": after, "limit": limit})
        return [{c.name: v for c, v in zip(COLUMNS, row, strict=True)} for row in rows]

    def seals_upgraded(self) -> bool:
        """Whether every pre-generation seal has been re-sealed (recorded once, by `mark_seals_upgraded`)."""
        return bool(self.db.fetch(_UPGRADED, {}))

    def mark_seals_upgraded(self, when: datetime) -> None:
        with self.db.write() as s:
            if s.get(StoreState, _SEALS_UPGRADED) is None:
                s.add(StoreState(name=_SEALS_UPGRADED, value=when.isoformat()))

    def rebuild_counts(self) -> None:
        """Recompute every count from the credentials (after a bulk import that bypassed create)."""
        with self.db.write() as s:
            s.execute(CredentialCount.__table__.delete())
            totals = select(Credential.owner_id, Credential.credential_type, func.count()).group_by(
                Credential.owner_id, Credential.credential_type
            )
            s.execute(CredentialCount.__table__.insert().from_select(["owner_id", "credential_type", "n"], totals))


def _insert_counted(tx: Tx, row: Mapping[str, Any]) -> None:
    tx.run(_INSERT, row)  # a duplicate name fails here, on the (owner, name) unique index
    tx.count(row["owner_id"], row["credential_type"], +1)


def _swap_params(read_revision: int, row: Mapping[str, Any]) -> dict[str, Any]:
    new = {f"new_{c.name}": row[c.name] for c in COLUMNS if c.name not in FIXED}
    new["new_updated_at"] = Database.as_datetime(new["new_updated_at"])  # as read from SQLite: text
    return {"target": row["id"], "read_revision": read_revision, **new}


def _got(rows: Sequence[Sequence[Any]]) -> tuple[str, int, TokenRow] | None:
    if not rows:
        return None
    wire, revision, scopes, expires_at = rows[0]
    return wire, int(revision), TokenRow(scopes, expires_at)


def _row(rows: Sequence[Sequence[Any]]) -> dict[str, Any] | None:
    return {c.name: value for c, value in zip(COLUMNS, rows[0], strict=True)} if rows else None
