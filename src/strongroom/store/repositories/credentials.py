"""Every SQL statement about credentials, including the hot paths that fold the token check into a read.

Statements are built once at import: constructing a SQLAlchemy statement costs more than running it. Which
backend takes which path (one statement with the token, a group commit, a data-modifying CTE) is decided
here, never by a use case. Rows come back as the store holds them; dates via `Database.as_datetime`.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    Executable,
    LargeBinary,
    Select,
    TextClause,
    bindparam,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    table,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.expression import false

from strongroom.store.db import Database, Together, Tx, count_shard
from strongroom.store.models import (
    COUNT_SHARDS,
    ApiToken,
    Credential,
    CredentialAccess,
    CredentialCount,
    StoreState,
    User,
    UTCDateTime,
)
from strongroom.store.repositories.audit import (
    ENTRY_TYPES,
    Entry,
    append_in,
    entry_values,
    name_in_content,
    pg_audited,
    pg_audited_many,
)
from strongroom.store.repositories.sharing import OWNER, role_of

COLUMNS = tuple(Credential.__table__.c)  # a credential row, in table order (`row` and `current` use it)
FIXED = ("id", "owner_id", "credential_type", "created_at")  # never changed by an update
WIRE_COLUMNS = ("id", "name", "credential_type", "description", "public_data", "created_at")  # what `wire` shows
_LIKE_SPECIAL = re.compile(r"[\\%_]")  # escaped in a `search`, so it matches as typed
_SEP = "\x1e"  # ASCII record separator: JSON text never holds it unescaped, so it splits a page's items


class NameTaken(Exception):
    """The write broke the one-name-per-owner rule."""


@dataclass(frozen=True)
class Page:
    """One page of a list: `items` are the credentials' stored API JSON; `roles` the caller's role rank on each
    (None: all OWNER, the caller's own credentials)."""

    items: list[str]
    total: int
    offset: int
    limit: int
    roles: list[int] | None = None

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


# Fast paths for a token: the token's user must be enabled. Their role on the credential comes in the same row
# (OWNER for its owner without a lookup; else the highest shared with them or their groups; NULL: none).
_ENABLED = exists().where(User.id == ApiToken.user_id, User.disabled_at.is_(None))
_GET_WITH_TOKEN = select(
    Credential.wire,
    Credential.revision,
    ApiToken.scopes,
    ApiToken.expires_at,
    role_of(Credential.id, Credential.owner_id, ApiToken.user_id),
).where(
    ApiToken.token_hash == bindparam("token_hash"),
    ApiToken.revoked_at.is_(None),
    _ENABLED,
    Credential.id == bindparam("id"),
)


def _read_many(statement: Select[Any], types: Mapping[str, Any]) -> Executable:
    """PostgreSQL: `statement` (a read by the parameters named in `types`, with their SQL types) for several
    readers at once, as `Together.many`: each reader's rows, after its `ord`."""
    given = (
        func.json_to_recordset(bindparam("given"))
        .table_valued(*(column(name, type_) for name, type_ in types.items()), column("ord", BigInteger))
        .render_derived(name="given", with_types=True)
    )

    def by_column(element: Any) -> Any:
        return given.c[element.key] if isinstance(element, BindParameter) and element.key in types else None

    found = visitors.replacement_traverse(statement, {}, by_column).lateral("found")
    return select(given.c.ord, found).select_from(given).join(found, true())


def _by_ord(rows: Sequence[Sequence[Any]], n: int) -> list[Any]:
    """Each reader's rows from `_read_many`'s (`ord` first)."""
    out: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
    for ord_, *values in rows:
        out[ord_ - 1].append(tuple(values))
    return out


_GETS_WITH_TOKEN = Together(
    one=lambda params: _GET_WITH_TOKEN,
    many=_read_many(_GET_WITH_TOKEN, {"token_hash": ApiToken.token_hash.type, "id": Credential.id.type}),
    fields=("token_hash", "id"),
    outcomes=_by_ord,
)
_CALLER_ROLE = role_of(Credential.id, Credential.owner_id, bindparam("user"))
_GET = select(Credential.wire, Credential.revision, _CALLER_ROLE).where(Credential.id == bindparam("id"))
_ONE = Credential.id == bindparam("id")
_MINE = (_ONE, Credential.owner_id == bindparam("owner"))
_INSERT = insert(Credential).values({c.name: bindparam(c.name) for c in COLUMNS})
_CURRENT = select(*COLUMNS, _CALLER_ROLE).where(_ONE)
_CURRENTS = Together(
    one=lambda params: _CURRENT,
    many=_read_many(_CURRENT, {"id": Credential.id.type, "user": Credential.owner_id.type}),
    fields=("id", "user"),
    outcomes=_by_ord,
)
# Compare-and-swap on the revision and master-key version read: a concurrent change, or a rotation's re-wrap
# (which leaves the revision alone), makes an update match no row; else it would put back the old wrapped key.
_CAS = (
    Credential.id == bindparam("target"),
    Credential.revision == bindparam("read_revision"),
    Credential.key_version == bindparam("read_key_version"),
)
_DELETE = delete(Credential).where(_ONE).returning(Credential.owner_id, Credential.credential_type)
_DELETE_AT = (
    delete(Credential)
    .where(_ONE, Credential.revision == bindparam("revision"))
    .returning(Credential.owner_id, Credential.credential_type)
)
_REVISION = select(Credential.revision).where(_ONE).with_for_update()
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


def _pg_counted(change: Any, delta: int) -> Executable:
    """PostgreSQL: a create or delete, its count change and its audit record in one statement (data-modifying
    CTEs); the statement returns the count's row, or nothing when no credential changed."""
    changed = change.returning(Credential.owner_id, Credential.credential_type, Credential.name).cte("changed")
    rows = select(changed.c.owner_id, changed.c.credential_type, count_shard(postgresql), literal(delta))
    stmt = postgresql.insert(CredentialCount).from_select(["owner_id", "credential_type", "shard", "n"], rows)
    counted = (
        stmt.on_conflict_do_update(
            index_elements=["owner_id", "credential_type", "shard"], set_={"n": CredentialCount.n + stmt.excluded.n}
        )
        .returning(CredentialCount.n)
        .cte("counted")
    )
    return pg_audited(select(counted.c.n), changed, changed.c.name)


_PG_CREATE = _pg_counted(_INSERT, +1)


# The insert happens only if the token is still valid for that owner: a revocation, expiry or disabling since
# the token was last authenticated takes effect at once, and no separate lookup is needed.
def _token_still_valid(token_hash: Any, owner_id: Any, now: Any) -> Any:
    """Whether `token_hash` is a token of user `owner_id` that is valid at `now` (each a bind or a column)."""
    return exists().where(
        ApiToken.token_hash == token_hash,
        ApiToken.user_id == owner_id,
        ApiToken.revoked_at.is_(None),
        or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        _ENABLED,
    )


_TOKEN_STILL_VALID = _token_still_valid(
    bindparam("token_hash"), bindparam("owner_id"), bindparam("now", type_=UTCDateTime())
)
_INSERT_CHECKED = insert(Credential).from_select(
    [c.name for c in COLUMNS],
    select(
        *(
            cast(bindparam(c.name), c.type) if isinstance(c.type, LargeBinary) else bindparam(c.name, type_=c.type)
            for c in COLUMNS
        )
    ).where(_TOKEN_STILL_VALID),
)
_PG_CREATE_CHECKED = _pg_counted(_INSERT_CHECKED, +1)


_PG_TOKEN_TYPES = {
    "token_hash": ApiToken.token_hash.type.compile(dialect=postgresql.dialect()),
    "owner_id": ApiToken.user_id.type.compile(dialect=postgresql.dialect()),
    "now": ApiToken.expires_at.type.compile(dialect=postgresql.dialect()),
}


def _pg_given(types: Mapping[str, str]) -> str:
    """SQL: the rows of `Together`'s parameter `given`, with the columns and types of `types` and `ord`."""
    columns = ", ".join(f"{name} {type_}" for name, type_ in types.items())
    return f"SELECT * FROM json_to_recordset(CAST(:given AS json)) AS given({columns}, ord BIGINT)"


def _pg_allowed() -> str:
    """SQL: the `ord` of each row of `given` whose write needs no token (`token_hash` null) or whose token is
    still valid for user `owner_id` at `now`, as `_TOKEN_STILL_VALID` checks one."""
    given = table("given", column("ord"), column("token_hash"), column("owner_id"), column("now"))
    token = given.c.token_hash
    allowed = select(given.c.ord).where(or_(token.is_(None), _token_still_valid(token, given.c.owner_id, given.c.now)))
    return str(allowed.compile(dialect=postgresql.dialect()))  # no parameter: every value is a column of `given`


def _pg_done(content: str, joined: str) -> str:
    """SQL: the audit entries (`pg_audited_many`'s `done`) of the rows of `given` (as `g`) that `changed` holds,
    `joined` by the condition given, with `content` (SQL) as each entry's content."""
    return f"""SELECT row_number() OVER (ORDER BY g.ord) AS k, {entry_values("g")}, {content} AS content
    FROM given AS g JOIN changed ON {joined}"""


_PG_TYPES = {c.name: c.type.compile(dialect=postgresql.dialect()) for c in COLUMNS}
_CREATE_TYPES = {**_PG_TYPES, "token_hash": _PG_TOKEN_TYPES["token_hash"], "now": _PG_TOKEN_TYPES["now"], **ENTRY_TYPES}
_UPDATE_TYPES = {
    "target": _PG_TYPES["id"],
    "read_revision": _PG_TYPES["revision"],
    "read_key_version": _PG_TYPES["key_version"],
    **{f"new_{name}": type_ for name, type_ in _PG_TYPES.items() if name not in FIXED},
    **_PG_TOKEN_TYPES,
    **ENTRY_TYPES,
}


def _pg_create_many() -> TextClause:
    """PostgreSQL: several creates as one statement, each as `_PG_CREATE` (no `token_hash`) or
    `_PG_CREATE_CHECKED` would make it: its row where the owner has not used its name (a name used twice among
    them goes to the first), its count and its audit entry. Rows go in in name order, so two such statements
    wait on each other's names in one order and cannot deadlock. One row per create, in order: whether it was
    inserted, and whether its token was valid."""
    columns = ", ".join(c.name for c in COLUMNS)
    return text(f"""WITH RECURSIVE given AS (
    {_pg_given(_CREATE_TYPES)}
), allowed AS (
    {_pg_allowed()}
), changed AS (
    INSERT INTO credentials ({columns})
    SELECT {columns} FROM given WHERE ord IN (SELECT ord FROM allowed) ORDER BY owner_id, name, ord
    ON CONFLICT (owner_id, name) DO NOTHING
    RETURNING id, owner_id, credential_type
), done AS (
    {_pg_done(name_in_content("g.a_content", "g.name"), "changed.id = g.id")}
), {pg_audited_many("done")}, counted AS (
    INSERT INTO credential_counts (owner_id, credential_type, shard, n)
    SELECT owner_id, credential_type, pg_backend_pid() % {COUNT_SHARDS}, count(*) FROM changed
    GROUP BY owner_id, credential_type
    ON CONFLICT (owner_id, credential_type, shard) DO UPDATE SET n = credential_counts.n + excluded.n
    RETURNING n
)
SELECT changed.id IS NOT NULL, allowed.ord IS NOT NULL
FROM given LEFT JOIN changed ON changed.id = given.id LEFT JOIN allowed ON allowed.ord = given.ord
ORDER BY given.ord""")


def _pg_update_many() -> TextClause:
    """PostgreSQL: several compare-and-swap updates as one statement, each as `_PG_UPDATE` (no `token_hash`) or
    `_PG_UPDATE_CHECKED` would make it, with its audit entry. The rows are locked in id order first, so two such
    statements cannot deadlock. One row per update, in order: the new revision, or null if it was not written
    (the revision or key version moved, or the token is no longer valid); of two updates of one row read at the
    same revision one is written."""
    sets = ", ".join(f"{name} = given.new_{name}" for name in _PG_TYPES if name not in FIXED)
    return text(f"""WITH RECURSIVE given AS (
    {_pg_given(_UPDATE_TYPES)}
), allowed AS (
    {_pg_allowed()}
), locked AS MATERIALIZED (
    SELECT id FROM credentials WHERE id IN (SELECT target FROM given) ORDER BY id FOR UPDATE
), changed AS (
    UPDATE credentials SET {sets} FROM given
    WHERE credentials.id = given.target AND credentials.revision = given.read_revision
      AND credentials.key_version = given.read_key_version
      AND credentials.id IN (SELECT id FROM locked) AND given.ord IN (SELECT ord FROM allowed)
    RETURNING given.ord, credentials.revision
), done AS (
    {_pg_done("g.a_content", "changed.ord = g.ord")}
), {pg_audited_many("done")}
SELECT changed.revision FROM given LEFT JOIN changed ON changed.ord = given.ord ORDER BY given.ord""")


def _created(rows: Sequence[Sequence[Any]], n: int) -> list[Any]:
    """Each create's result as its statement alone returns it (a row if inserted, none if its token was no
    longer valid), or NameTaken."""
    return [[(1,)] if inserted else (NameTaken() if allowed else []) for inserted, allowed in rows]


_PG_CREATES = Together(
    one=lambda params: _PG_CREATE if params.get("token_hash") is None else _PG_CREATE_CHECKED,
    many=_pg_create_many(),
    fields=tuple(_CREATE_TYPES),
    outcomes=_created,
)


@cache
def _update(kept: frozenset[str] = frozenset(), checked: bool = False) -> Any:
    """The compare-and-swap update of every column but the fixed ones and the `kept` (SQLite rewrites an index
    entry for every indexed column assigned, even to the value it had); with `checked`, only while the caller's
    token (`token_hash`, of user `owner_id`) is still valid."""
    values = {c.name: bindparam(f"new_{c.name}") for c in COLUMNS if c.name not in FIXED and c.name not in kept}
    return update(Credential).where(*_CAS, *((_TOKEN_STILL_VALID,) if checked else ())).values(values)


_PG_DELETE = _pg_counted(delete(Credential).where(*_MINE), -1)  # the owner's, in one statement
_PG_DELETE_ANY = _pg_counted(delete(Credential).where(_ONE), -1)  # after the caller's role was checked
_SWAPPED = _update().returning(Credential.revision).cte("changed")
_PG_UPDATE = pg_audited(select(_SWAPPED.c.revision), _SWAPPED)  # one autocommit statement: atomic on its own
_SWAPPED_CHECKED = _update(checked=True).returning(Credential.revision).cte("changed")  # while the token is valid
_PG_UPDATE_CHECKED = pg_audited(select(_SWAPPED_CHECKED.c.revision), _SWAPPED_CHECKED)
_PG_UPDATES = Together(
    one=lambda params: _PG_UPDATE if params.get("token_hash") is None else _PG_UPDATE_CHECKED,
    many=_pg_update_many(),
    fields=tuple(_UPDATE_TYPES),
    outcomes=lambda rows, n: [[] if revision is None else [(revision,)] for (revision,) in rows],
)
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
    # The owner-only page serves a token whose user is enabled and sees nothing beyond their own credentials;
    # anyone else takes `shared_page`.
    owner_only = exists().where(User.id == ApiToken.user_id, User.disabled_at.is_(None), User.shared.is_(false()))
    token = (ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None), owner_only)
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


_SIZED = ("name", "description", "public_data", "wire", "wrapped_key", "ciphertext")  # a kept row's large columns
_WRITTEN_BYTES = 8 << 20  # what `last_written` keeps at most, in bytes of its rows' text (then it starts over)
_WRITTEN_ROW_BYTES = 64 << 10  # a larger row is not kept


class CredentialRepository:
    """Credentials and their per-owner counts."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._written: dict[str, dict[str, Any]] = {}  # SQLite: rows as this process's updates wrote them, by id
        self._written_bytes = 0  # their size as `_wrote` counted it (a row forgotten since still counts)
        if db.is_sqlite:
            db.keep_up("credential names", index_names)

    def last_written(self, credential_id: str, owner_id: str) -> dict[str, Any] | None:
        """SQLite (one server process): the credential as this process's last update wrote it, if `owner_id` owns
        it; None if it was not kept. A guess, not a read: an update from it must compare-and-swap on its revision
        and key version, which every other change moves (a miss means: read the row and start again)."""
        row = self._written.get(credential_id)
        return row if row is not None and row["owner_id"] == owner_id else None

    def _forget_written(self, credential_id: str) -> None:
        """Drop what `last_written` kept of the credential (from any thread: one atomic step)."""
        self._written.pop(credential_id, None)

    def _wrote(self, row: Mapping[str, Any]) -> None:
        """Keep `row` for `last_written` (SQLite; on the event loop only, the one thread that adds rows)."""
        size = sum(len(row[c] or "") for c in _SIZED)
        if size > _WRITTEN_ROW_BYTES:
            self._forget_written(row["id"])
            return
        if self._written_bytes + size > _WRITTEN_BYTES:
            self._written.clear()  # one atomic step: a worker thread may be forgetting a row meanwhile
            self._written_bytes = 0
        self._written[row["id"]] = dict(row)
        self._written_bytes += size

    @property
    def on_loop(self) -> bool:
        """Whether the async methods run on the event loop's own connections (PostgreSQL)."""
        return self.db.on_loop()

    # ---- reads ------------------------------------------------------------------------------------------

    def get(self, credential_id: str, user_id: str) -> tuple[str, int, int | None] | None:
        """The credential's stored JSON, revision and the user's role rank on it (None: no role); None if there
        is no such credential."""
        rows = self.db.fetch(_GET, {"id": credential_id, "user": user_id})
        return (rows[0][0], int(rows[0][1]), rows[0][2]) if rows else None

    def get_for_token(self, token_hash: str, credential_id: str) -> tuple[str, int, TokenRow, int | None] | None:
        """The credential, the scopes of an unrevoked token of an enabled user, and that user's role rank, in one
        statement; None if either is missing."""
        return _got(self.db.fetch_hot(_GET_WITH_TOKEN, {"token_hash": token_hash, "id": credential_id}))

    async def aget_for_token(self, token_hash: str, credential_id: str) -> tuple[str, int, TokenRow, int | None] | None:
        return _got(await self.db.afetch_together(_GETS_WITH_TOKEN, {"token_hash": token_hash, "id": credential_id}))

    def page(self, owner_id: str, params: Mapping[str, Any], newest_first: bool) -> Page:
        """A page of the owner's credentials (`params`: offset, limit and optionally types)."""
        query = {**params, "owner": owner_id}
        page = self._owned_page(self.db.fetch(_page(not self.db.is_sqlite, newest_first, "types" in params), query))
        if page is None:  # PostgreSQL, past the end: the total alone
            page = Page([], int(self.db.fetch(_COUNT_TYPES if "types" in params else _COUNT, query)[0][0]), 0, 0)
        return Page(page.items, page.total, params["offset"], params["limit"])

    async def apage(self, owner_id: str, params: Mapping[str, Any], newest_first: bool) -> Page:
        query = {**params, "owner": owner_id}
        statement = _page(not self.db.is_sqlite, newest_first, "types" in params)
        page = self._owned_page(await self.db.afetch(statement, query))
        if page is None:
            total = await self.db.afetch(_COUNT_TYPES if "types" in params else _COUNT, query)
            page = Page([], int(total[0][0]), 0, 0)
        return Page(page.items, page.total, params["offset"], params["limit"])

    def _owned_page(self, rows: Sequence[Sequence[Any]]) -> Page | None:
        """The items and total of `_page`'s rows (offset and limit left at 0); None: PostgreSQL found no row."""
        if self.db.is_sqlite:
            text, total = rows[0]
            return Page(text.split(_SEP) if text else [], int(total), 0, 0)
        return Page([row[0] for row in rows], int(rows[0][1]), 0, 0) if rows else None

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

    def shared_page(
        self, user_id: str, params: Mapping[str, Any], newest_first: bool, owner_only: bool = False
    ) -> Page:
        """A page of everything the user has a role on (owned, shared with them or with their groups), each with
        that role (`Page.roles`), in one statement; `params` may hold `types`, `role` (a rank), `name` (exact)
        and `search` (a case-insensitive substring) filters. `owner_only`: the user sees nothing beyond their
        own credentials (`Principal.shared` is false), so only those are read."""
        statement, query, hot = self._shared_query(user_id, params, newest_first, owner_only)
        if statement is None:
            return Page([], 0, params["offset"], params["limit"], [])
        rows = self.db.fetch_hot(statement, query) if hot else self.db.fetch_planned(statement, query)
        return self._shared_result(rows, params)

    async def ashared_page(
        self, user_id: str, params: Mapping[str, Any], newest_first: bool, owner_only: bool = False
    ) -> Page:
        statement, query, hot = self._shared_query(user_id, params, newest_first, owner_only)
        if statement is None:
            return Page([], 0, params["offset"], params["limit"], [])
        rows = self.db.fetch_hot(statement, query) if hot else await self.db.afetch_planned(statement, query)
        return self._shared_result(rows, params)

    def _shared_query(
        self, user_id: str, params: Mapping[str, Any], newest_first: bool, owner_only: bool
    ) -> tuple[Executable | None, dict[str, Any], bool]:
        """`shared_page`'s statement (None: nothing can match), its values, and whether SQLite may answer it from
        memory (the same page again, while nothing changed)."""
        offset, limit = params["offset"], params["limit"]
        query = {**params, "user": user_id}
        by_role = "role" in params
        if owner_only and by_role:  # every credential they see is their own: OWNER keeps all, any other none
            if query.pop("role") != OWNER:
                return None, query, False
            by_role = False
        search = params.get("search")
        if search is not None:
            query["search"] = "%" + _LIKE_SPECIAL.sub(r"\\\g<0>", search) + "%"
        # SQLite: the trigram table finds the candidates of a search of three characters or more, as a phrase
        # (consecutive trigrams: the names holding the text, in any case); PostgreSQL's ILIKE finds its trigram
        # index by itself.
        narrowed = self.db.is_sqlite and search is not None and len(search) >= 3 and "name" not in params
        if narrowed:
            query["phrase"] = '"' + search.replace('"', '""') + '"'
        statement = _shared_page(
            newest_first,
            "types" in params,
            by_role,
            "name" in params,
            search is not None,
            narrowed,
            owner_only,
            self.db.is_sqlite,
        )
        if not self.db.is_sqlite:
            query["reach"] = offset + limit
        return statement, query, self.db.is_sqlite and "types" not in query

    def _shared_result(self, rows: Sequence[Sequence[Any]], params: Mapping[str, Any]) -> Page:
        offset, limit = params["offset"], params["limit"]
        if self.db.is_sqlite:
            total, joined, roles = rows[0]
            items = joined.split(_SEP) if joined else []
            return Page(items, int(total), offset, limit, [int(r) for r in roles.split(",")] if roles else [])
        found = [row for row in rows if row[1] is not None]
        return Page([r[1] for r in found], int(rows[0][0]), offset, limit, [int(r[2]) for r in found])

    def current(self, credential_id: str, user_id: str) -> tuple[dict[str, Any], int | None] | None:
        """Every column of the credential and the user's role rank on it; None if there is no such credential."""
        return _row(self.db.fetch(_CURRENT, {"id": credential_id, "user": user_id}))

    async def acurrent(self, credential_id: str, user_id: str) -> tuple[dict[str, Any], int | None] | None:
        return _row(await self.db.afetch_together(_CURRENTS, {"id": credential_id, "user": user_id}))

    # ---- writes (each with its audit record, in the same transaction or statement) -----------------------

    def insert(self, row: Mapping[str, Any], audit: Entry) -> None:
        """Add a credential (all `COLUMNS`), count it and audit it; NameTaken if its owner already uses the name."""
        with _NamesUnique():
            if self.db.is_sqlite:
                self.db.transact(lambda tx: _insert_counted(tx, row, audit), one_change=True)
            else:
                self.db.write_one(_PG_CREATE, {**row, **audit.params()})

    async def ainsert(self, row: Mapping[str, Any], audit: Entry) -> None:
        with _NamesUnique():
            if self.db.is_sqlite:
                await self.db.atransact(lambda tx: _insert_counted(tx, row, audit), one_change=True)
            else:
                await self.db.awrite_together(_PG_CREATES, {**row, **audit.params()})

    async def ainsert_if_token(self, row: Mapping[str, Any], token_hash: str, now: datetime, audit: Entry) -> bool:
        """Insert only while `token_hash` is a valid token of the row's owner, checked in the same transaction
        (PostgreSQL: the same statement); False if it is not."""
        with _NamesUnique():
            if self.db.is_sqlite:
                checked = {**row, "token_hash": token_hash, "now": now}
                return await self.db.atransact(lambda tx: _insert_counted(tx, checked, audit), one_change=True)
            params = {**row, **audit.params(), "token_hash": token_hash, "now": now}
            return bool(await self.db.awrite_together(_PG_CREATES, params))

    def swap(self, read_revision: int, row: Mapping[str, Any], audit: Entry, before: Mapping[str, Any]) -> bool:
        """Write the changed row, and its audit record, if the credential is still at `read_revision` and under the
        master-key version of `before`, the row as read (which also lets SQLite leave alone the indexes of columns
        that did not change)."""
        params = _swap_params(read_revision, row, before)
        self._forget_written(row["id"])
        with _NamesUnique():
            if self.db.is_sqlite:
                kept = _kept(before, row)
                return bool(self.db.transact(lambda tx: _swap_audited(tx, params, audit, kept), one_change=True))
            return bool(self.db.write_one(_PG_UPDATE, {**params, **audit.params()}))

    async def aswap(self, read_revision: int, row: Mapping[str, Any], audit: Entry, before: Mapping[str, Any]) -> bool:
        params = _swap_params(read_revision, row, before)
        with _NamesUnique():
            if self.db.is_sqlite:
                kept = _kept(before, row)
                swap = lambda tx: _swap_audited(tx, params, audit, kept)  # noqa: E731
                return self._swapped(row, bool(await self.db.atransact(swap, one_change=True)))
            return bool(await self.db.awrite_together(_PG_UPDATES, {**params, **audit.params()}))

    async def aswap_if_token(
        self,
        read_revision: int,
        row: Mapping[str, Any],
        audit: Entry,
        token_hash: str,
        user_id: str,
        now: datetime,
        before: Mapping[str, Any],
    ) -> bool:
        """`aswap` only while `token_hash` is a valid token of user `user_id`, checked in the same transaction
        (PostgreSQL: the same statement); False if it is not, or if the revision or key version moved (the caller
        cannot tell which: it starts over on the ordinary path)."""
        params = _swap_params(read_revision, row, before)
        check = {"token_hash": token_hash, "owner_id": user_id, "now": now}
        with _NamesUnique():
            if self.db.is_sqlite:
                checked, kept = {**params, **check}, _kept(before, row)
                swap = lambda tx: _swap_audited(tx, checked, audit, kept)  # noqa: E731
                return self._swapped(row, bool(await self.db.atransact(swap, one_change=True)))
            return bool(await self.db.awrite_together(_PG_UPDATES, {**params, **check, **audit.params()}))

    def _swapped(self, row: Mapping[str, Any], written: bool) -> bool:
        """Keep a row an update wrote for `last_written`; forget what was kept of one whose update found it moved."""
        if written:
            self._wrote(row)
        else:
            self._forget_written(row["id"])
        return written

    def delete(self, credential_id: str, owner_id: str | None, audit: Entry) -> bool:
        """Delete and uncount the credential (only if `owner_id` owns it, when given) with its audit record;
        False if there is no such credential."""
        self._forget_written(credential_id)
        if not self.db.is_sqlite:
            if owner_id is None:
                return bool(self.db.write_one(_PG_DELETE_ANY, {"id": credential_id, **audit.params()}))
            return bool(self.db.write_one(_PG_DELETE, {"id": credential_id, "owner": owner_id, **audit.params()}))

        def remove(tx: Tx) -> bool:
            gone = tx.rows(_DELETE, {"id": credential_id})
            if not gone or (owner_id is not None and gone[0][0] != owner_id):
                if gone:  # not the owner's: undo (the savepoint of this write rolls back on the raise)
                    raise _NotOwner
                return False
            tx.count(gone[0][0], gone[0][1], -1)
            append_in(tx, audit, postgres=False)
            return True

        try:
            return self.db.transact(remove)
        except _NotOwner:
            return False

    async def adelete(self, credential_id: str, owner_id: str, audit: Entry) -> bool:
        """PostgreSQL: `delete` of the owner's credential on the event loop."""
        return bool(await self.db.awrite_one(_PG_DELETE, {"id": credential_id, "owner": owner_id, **audit.params()}))

    def delete_at(self, credential_id: str, revisions: Collection[int], audit: Entry) -> tuple[str, int | None]:
        """Delete only while the stored revision is one of `revisions`. The outcome and the revision found:
        ("deleted", r), ("missing", None), ("stale", r), or ("raced", None) when it changed meanwhile."""
        one = {"id": credential_id}
        postgres = not self.db.is_sqlite
        self._forget_written(credential_id)

        def remove_at_revision(tx: Tx) -> tuple[str, int | None]:
            found = tx.rows(_REVISION, one)
            if not found:
                return "missing", None
            revision = int(found[0][0])
            if revision not in revisions:
                return "stale", revision
            gone = tx.rows(_DELETE_AT, {**one, "revision": revision})
            if not gone:
                return "raced", None
            tx.count(gone[0][0], gone[0][1], -1)
            append_in(tx, audit, postgres=postgres)
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
        self._written.clear()  # the compare-and-swap would refuse them anyway: spare it the misses
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


class _NotOwner(Exception):
    """A delete limited to an owner found another owner's credential (its savepoint rolls it back)."""


def _insert_counted(tx: Tx, row: Mapping[str, Any], audit: Entry) -> bool:
    """SQLite: insert, count and audit the row; with `token_hash` and `now` in `row`, only while that token is
    a valid token of the row's owner (False if not). Its first change is the only step that can fail for a
    reason of its own (a duplicate name, on the (owner, name) unique index): a `one_change` write."""
    if not tx.run(_INSERT_CHECKED if "token_hash" in row else _INSERT, row):
        return False
    tx.count(row["owner_id"], row["credential_type"], +1)
    append_in(tx, audit, postgres=False)
    return True


def _swap_audited(tx: Tx, params: Mapping[str, Any], audit: Entry, kept: frozenset[str] = frozenset()) -> int:
    """SQLite: the compare-and-swap update and its audit record (while the token in `params` is valid, when
    there is one); a `one_change` write like `_insert_counted`. The `kept` indexed columns are left out of the
    update: SQLite rewrites an index entry for every indexed column assigned, even to the value it had."""
    swapped = tx.run(_update(kept, "token_hash" in params), params)
    if swapped:
        append_in(tx, audit, postgres=False)
    return swapped


_INDEXED = ("name", "key_version")  # updatable columns with an index of their own (the name's: two, and a trigger)


def _kept(before: Mapping[str, Any], row: Mapping[str, Any]) -> frozenset[str]:
    """The indexed columns an update leaves as they were read."""
    return frozenset(c for c in _INDEXED if before[c] == row[c])


def _swap_params(read_revision: int, row: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    new = {f"new_{c.name}": row[c.name] for c in COLUMNS if c.name not in FIXED}
    new["new_updated_at"] = Database.as_datetime(new["new_updated_at"])  # as read from SQLite: text
    return {"target": row["id"], "read_revision": read_revision, "read_key_version": before["key_version"], **new}


def _got(rows: Sequence[Sequence[Any]]) -> tuple[str, int, TokenRow, int | None] | None:
    if not rows:
        return None
    wire, revision, scopes, expires_at, role = rows[0]
    return wire, int(revision), TokenRow(scopes, expires_at), None if role is None else int(role)


def _row(rows: Sequence[Sequence[Any]]) -> tuple[dict[str, Any], int | None] | None:
    if not rows:
        return None
    *values, role = rows[0]
    return {c.name: value for c, value in zip(COLUMNS, values, strict=True)}, None if role is None else int(role)


# SQLite's trigram index of names (migrations 0013, 0017) holds every credential whose rowid is at most
# `credential_names_indexed.through`; a search reads the rows above it directly until the committer indexes them
# in bulk (`index_names`): indexed one create at a time, names cost a create more than all its other statements.
_NAMES = table("credential_names", column("rowid"), column("name"))
_INDEXED_THROUGH = select(column("through")).select_from(table("credential_names_indexed")).scalar_subquery()
NAMES_BULK = 512  # names waiting that make the committer index them after its batch
NAMES_CHUNK = 4096  # rowids indexed in one transaction at most
_HIGHEST = "(SELECT coalesce(max(rowid), 0) FROM credentials)"
_THROUGH = "(SELECT through FROM credential_names_indexed)"
_NAMES_BEHIND = f"SELECT {_HIGHEST} - {_THROUGH}"
_NAMES_FROM = f"SELECT rowid, name FROM credentials WHERE rowid > {_THROUGH}"
_NAMES_INDEX = f"INSERT INTO credential_names (rowid, name) {_NAMES_FROM} AND rowid <= ? + {_THROUGH}"
_NAMES_THROUGH = f"UPDATE credential_names_indexed SET through = min(through + ?, {_HIGHEST})"


def index_names(conn: sqlite3.Connection, idle: bool) -> bool:
    """The SQLite committer's upkeep (`Database.keep_up`): index the names of up to `NAMES_CHUNK` new
    credentials in one transaction once `NAMES_BULK` wait, or any number when `idle`; True while some wait."""
    behind = conn.execute(_NAMES_BEHIND).fetchone()[0]
    if behind <= 0 or (behind < NAMES_BULK and not idle):
        return behind > 0
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(_NAMES_INDEX, (NAMES_CHUNK,))
    conn.execute(_NAMES_THROUGH, (NAMES_CHUNK,))
    conn.execute("COMMIT")
    return behind > NAMES_CHUNK


def index_all_names(conn: Connection) -> None:
    """SQLite: index every name still waiting, in the caller's transaction (a restore's)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"INSERT INTO credential_names (rowid, name) {_NAMES_FROM}")
        conn.exec_driver_sql(f"UPDATE credential_names_indexed SET through = {_HIGHEST}")


@cache
def _shared_page(
    newest_first: bool,
    filtered: bool,
    by_role: bool,
    by_name: bool = False,
    by_search: bool = False,
    narrowed: bool = False,
    owner_only: bool = False,
    sqlite: bool = False,
) -> Executable:
    """A page of every credential the user (`user`) has a role on, with that role, and their count, in one
    statement: rows `(total, wire, role)`, the first of which always holds the total (a page past the end is the
    one row `(total, NULL, NULL)`).

    The matching credentials (`hits`: id, creation time, role) are found once, then counted and paged; only the
    page's rows are read in full. The visible set is the user's own credentials (owner index) and the derived
    `credential_access` rows of what is shared with them or their groups (each credential once, with its
    highest role, never one of their own: the two parts never overlap); `owner_only` reads the user's own
    alone. A `name` filter reaches the user's own credentials through the (owner, name) unique index, so it
    stays flat however many they own; a `search` (a LIKE pattern, `search`) is checked on the names of the
    owner's rows and, `narrowed` (SQLite), only on the rows whose name the trigram table `credential_names`
    (migration 0013) finds for the phrase `phrase`. Both parts are in creation order in their indexes, (owner,
    type, created_at) and (user, created_at, credential).
    """
    user = bindparam("user")
    by_names = []
    if by_name:
        by_names.append(Credential.name == bindparam("name"))
    if by_search:  # SQLite's LIKE ignores the case of ASCII letters (and lower() knows no other)
        pattern = bindparam("search")
        like = Credential.name.like if sqlite else Credential.name.ilike
        by_names.append(like(pattern, escape="\\"))
    by_type = [Credential.credential_type.in_(bindparam("types", expanding=True))] if filtered else []
    key = literal_column("credentials.rowid") if sqlite else Credential.id  # how the page's rows are read back
    owner: Any = Credential.owner_id
    if narrowed:  # the trigram table drives; `+` keeps SQLite from walking the owner's rows instead
        owner = literal_column("+credentials.owner_id")
    owned = select(
        Credential.id.label("pid"),
        Credential.created_at.label("pat"),
        literal(OWNER).label("prole"),
        key.label("pkey"),
    ).where(owner == user, *by_names, *by_type)
    if narrowed:  # the names the index finds, and those it does not hold yet
        rowid = literal_column("credentials.rowid")
        indexed = owned.select_from(_NAMES.join(Credential, rowid == _NAMES.c.rowid)).where(
            literal_column("credential_names").op("MATCH")(bindparam("phrase"))
        )
        both = union_all(indexed, owned.where(rowid > _INDEXED_THROUGH)).subquery("named")
        owned = select(both.c.pid, both.c.pat, both.c.prole, both.c.pkey)
    visible: Any = owned
    if not owner_only:
        if by_role:  # the owner's rows are all OWNER
            owned = owned.where(literal(OWNER) == bindparam("role"))
        # What is shared with the user (derived rows, never their own): read alone on PostgreSQL, where the
        # page's rows are read back by id; joined to the credential for a filter or for SQLite's rowid.
        access = CredentialAccess
        shared = select(
            access.credential_id.label("pid"),
            access.created_at.label("pat"),
            access.role.label("prole"),
            (key if sqlite else access.credential_id).label("pkey"),
        ).where(access.user_id == user)
        if by_role:
            shared = shared.where(access.role == bindparam("role"))
        if sqlite or by_names or by_type:
            shared = shared.join_from(access, Credential, Credential.id == access.credential_id).where(
                *by_names, *by_type
            )
        visible = union_all(owned, shared)
    # SQLite, and a search by name, read the matches once (a CTE) for the count and the page. Otherwise
    # PostgreSQL counts each part from its index alone, takes the page from the first `reach` (offset + limit)
    # rows of each part in its index's order, and reads each of the page's credentials by its key.
    parts = [owned] if owner_only else [owned, shared]
    if sqlite or by_names:
        hits = ordered = visible.cte("hits")
        total: Any = select(func.count()).select_from(hits).scalar_subquery()
    else:
        counts = [select(func.count()).select_from(part.subquery()).scalar_subquery() for part in parts]
        total = counts[0] if owner_only else counts[0] + counts[1]
        firsts = [part.order_by(*_by_creation(part.selected_columns, newest_first)) for part in parts]
        ordered = firsts[0] if owner_only else union_all(*(first.limit(bindparam("reach")) for first in firsts))
        ordered = ordered.subquery("ordered")
    chosen = (
        select(ordered)
        .order_by(*_by_creation(ordered.c, newest_first))
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
        .subquery("chosen")
    )
    again = _by_creation(chosen.c, newest_first)
    if sqlite:  # one row, the page joined in its order (as `_page` does): one step of SQLite, one GIL hand-back
        page = select(Credential.wire, chosen.c.prole).join(chosen, key == chosen.c.pkey).order_by(*again)
        rows = page.subquery("page")
        joined = (func.group_concat(rows.c.wire, literal(_SEP)), func.group_concat(rows.c.prole, literal(",")))
        return select(total, *joined).select_from(rows)
    counted = select(total.label("n")).subquery("total")
    wire = select(Credential.wire).where(Credential.id == chosen.c.pkey).scalar_subquery()
    page = counted.outerjoin(chosen, true())
    return select(counted.c.n, wire, chosen.c.prole).select_from(page).order_by(*again)


def _by_creation(hit: Any, newest_first: bool) -> tuple[Any, Any]:
    """The order of a page over `hit` columns (`pat`, `pid`): creation time, then id, either way."""
    if newest_first:
        return hit.pat.desc(), hit.pid.desc()
    return hit.pat.asc(), hit.pid.asc()
