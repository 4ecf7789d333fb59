"""Use cases: authenticate, create/list/get/update/delete credentials, manage users and tokens.

The server and the CLI call only this module; it owns authorisation, validation and encryption so no
route can forget one of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from types import SimpleNamespace
from typing import Any, TypeVar

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
from sqlalchemy.orm import Session

from strongroom import types
from strongroom.config import Settings
from strongroom.crypto import DecryptionError, Envelope, KeyProvider, Sealed, load_keyring
from strongroom.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MasterKeyError,
    NotFound,
    PreconditionFailed,
    StrongroomError,
    Unauthorized,
)
from strongroom.store import Database, Tx
from strongroom.store.db import count_shard
from strongroom.store.models import (
    ApiToken,
    Credential,
    CredentialCount,
    KeyVersion,
    User,
    UTCDateTime,
    new_id,
    utcnow,
)

SCOPES = ("read", "write", "use", "admin")
T = TypeVar("T")
TOKEN_PREFIX = "sr_"  # noqa: S105 (a public prefix, not a secret)
MAX_PAGE = 1000
MAX_OFFSET = 2**31 - 1  # beyond any store; keeps OFFSET within the databases' integer range
DEFAULT_PAGE = 100
_ID = re.compile(r"^[0-9a-f]{24}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_KEY_CHECK = b"strongroom key check v1"
_KEY_REFRESH_SECONDS = 1.0  # how soon a running server writes with a version added by `keys rotate`
_UPDATE_TRIES = 20  # optimistic PATCH attempts (with jitter) against concurrent changes to one credential


@dataclass(frozen=True)
class Principal:
    """Who is calling, from a verified token."""

    user_id: str
    username: str
    token_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this token lacks the {scope!r} scope")


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


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, as DataRobot emits (isoformat is several times faster than strftime)."""
    return value.isoformat(timespec="microseconds")[:26] + "Z"


def credential_aad(credential_id: str, owner_id: str, credential_type: str) -> bytes:
    """Associated data binding a ciphertext to its row: copied elsewhere, it no longer decrypts."""
    return f"strongroom/credential/v1|{credential_id}|{owner_id}|{credential_type}".encode()


def _key_check_aad(version: int) -> bytes:
    return f"strongroom/key-check/v1|{version}".encode()


_LIST_COLUMNS = (
    Credential.id,
    Credential.name,
    Credential.credential_type,
    Credential.description,
    Credential.public_data,
    Credential.created_at,
)


def render_wire(row: Sequence[Any]) -> str:
    """A credential's API JSON from its `_LIST_COLUMNS` values: stored in `credentials.wire` at every write."""
    return orjson.dumps(_wire(row)).decode()


def _render(cred: Any) -> None:
    """Render a credential record's API JSON into its `wire` field, after any change to what it shows."""
    cred.wire = render_wire(tuple(getattr(cred, column.key) for column in _LIST_COLUMNS))


# Hot-path statements are built once: constructing a SQLAlchemy statement costs more than running it.
_AUTH = (
    select(ApiToken.id, ApiToken.scopes, ApiToken.expires_at, User.id.label("user_id"), User.username)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
)
# Reads select the stored API JSON (`wire`, rendered from `_LIST_COLUMNS` at every write), not the columns
# it is made of: one text value per row instead of six, and no per-row dict or date formatting.
_GET = select(Credential.wire, Credential.revision).where(
    Credential.id == bindparam("id"), Credential.owner_id == bindparam("owner")
)
# GET's fast path: the token and the credential in one statement (one round trip to PostgreSQL, not two).
_GET_WITH_TOKEN = (
    select(Credential.wire, Credential.revision, ApiToken.scopes, ApiToken.expires_at)
    .join(ApiToken, ApiToken.user_id == Credential.owner_id)
    .where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        Credential.id == bindparam("id"),
    )
)
_ALL_COLUMNS = tuple(Credential.__table__.c)
_MINE = (Credential.id == bindparam("id"), Credential.owner_id == bindparam("owner"))
_INSERT = insert(Credential).values({c.name: bindparam(c.name) for c in _ALL_COLUMNS})
_FIXED = ("id", "owner_id", "credential_type", "created_at")  # never changed by an update
_CURRENT = select(*_ALL_COLUMNS).where(*_MINE)
_UPDATE = (  # compare-and-swap on the revision read: a concurrent change makes it match no row
    update(Credential)
    .where(Credential.id == bindparam("target"), Credential.revision == bindparam("read_revision"))
    .values({c.name: bindparam(f"new_{c.name}") for c in _ALL_COLUMNS if c.name not in _FIXED})
)
_PG_UPDATE = _UPDATE.returning(Credential.revision)  # one autocommit statement: atomic on its own
_DELETE = delete(Credential).where(*_MINE).returning(Credential.credential_type)
_DELETE_AT = (
    delete(Credential).where(*_MINE, Credential.revision == bindparam("revision")).returning(Credential.credential_type)
)
_REVISION = select(Credential.revision).where(*_MINE).with_for_update()
_REVOKE = (
    update(ApiToken)
    .where(ApiToken.id == bindparam("token_id"), ApiToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("revoked_at"))
)
_TOKEN_EXISTS = select(ApiToken.id).where(ApiToken.id == bindparam("id"))
_STALE = (
    select(
        Credential.id, Credential.owner_id, Credential.credential_type, Credential.key_version, Credential.wrapped_key
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
# A create by a token this process authenticated before: the insert happens only if the token is still valid
# for that owner, so a revocation or expiry since then takes effect at once, and no separate lookup is needed.
_TOKEN_STILL_VALID = exists().where(
    ApiToken.token_hash == bindparam("token_hash"),
    ApiToken.user_id == bindparam("owner_id"),
    ApiToken.revoked_at.is_(None),
    or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("now", type_=UTCDateTime())),
)
_PG_CREATE_CHECKED = _pg_counted(
    insert(Credential).from_select(
        [c.name for c in _ALL_COLUMNS],
        select(
            *(
                cast(bindparam(c.name), c.type) if isinstance(c.type, LargeBinary) else bindparam(c.name, type_=c.type)
                for c in _ALL_COLUMNS
            )
        ).where(_TOKEN_STILL_VALID),
    ),
    +1,
)
_KNOWN_TOKENS_MAX = 10_000  # principals remembered for `acreate_with_token` (forgotten all at once beyond)
_PG_DELETE = _pg_counted(delete(Credential).where(*_MINE), -1)


_SEP = "\x1e"  # ASCII record separator: JSON text never holds it unescaped, so it splits a page's items
_TOTAL = select(func.coalesce(func.sum(CredentialCount.n), 0))
_COUNT = _TOTAL.where(CredentialCount.owner_id == bindparam("owner"))
_COUNT_TYPES = _COUNT.where(CredentialCount.credential_type.in_(bindparam("types", expanding=True)))


@cache
def _page(postgres: bool, newest_first: bool, filtered: bool, with_token: bool = False) -> Executable:
    """One list page in one statement: the credentials' stored API JSON and the owner's total from the counts.

    `with_token` finds the owner from the token in the same statement and puts the token's scopes, expiry
    and user id first, for the caller to check. The page is served by the (owner, [type,] created_at, id)
    indexes, and each backend gets the shape its measurements favoured:

    - SQLite, one row `([token...,] joined, total)`: group_concat joins the page in C, so Python builds one
      string instead of a hundred rows (a page 89 -> 46 us). SQLite aggregates a LIMIT subquery in its order
      (such a subquery is never flattened); a test walks pages with ties in both orders to hold it to that.
    - PostgreSQL, one row per credential: aggregating there cost PostgreSQL twice the CPU of sending rows
      (string_agg: 180 us a page, rows 105 us). Without the token, rows `(wire, total)` (none for an empty
      page). With it, a header row `(scopes, expires_at, user_id, NULL, total)` (none if the token is not
      valid), then rows `(NULL, NULL, NULL, wire, NULL)`: the token is read twice, not five times, and its
      columns are not repeated on every row (PostgreSQL 123 -> 100 us a page). The hot-path connections
      forbid sorting (`Database._pg_connect`), so no cached plan reads the owner's rows unordered.
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
        # A header row (the token, and the owner's total: present even for an empty page), then the page.
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


def _page_of(rows: Sequence[Sequence[Any]], params: Mapping[str, Any], *, joined: bool) -> Page | None:
    """The Page from a `_page` statement's rows (token columns removed); None when the total is not in them
    (a PostgreSQL page with no rows)."""
    if joined:
        text, total = rows[0]
        items = text.split(_SEP) if text else []
    elif rows:
        items, total = [row[0] for row in rows], rows[0][1]
    else:
        return None
    return Page(items, int(total), params["offset"], params["limit"])


def _list_params(offset: int, limit: int, types_filter: list[str] | None, order_by: str) -> dict[str, Any]:
    """Check a list request's paging, order and type filter; the statement parameters they make."""
    if not 0 <= offset <= MAX_OFFSET:
        msg = f"must be between 0 and {MAX_OFFSET}"
        raise InvalidInput(f"offset: {msg}", {"offset": msg})
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}", {"limit": f"must be 1 to {MAX_PAGE}"})
    if order_by not in ("creationDate", "-creationDate"):
        msg = "must be creationDate or -creationDate"
        raise InvalidInput(f"orderBy: {msg}", {"orderBy": msg})
    for name in types_filter or ():
        types.get_type(name, field="types")  # raises for an unknown type, naming the valid ones
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if types_filter:
        params["types"] = sorted(set(types_filter))
    return params


def _wire(row: Sequence[Any]) -> dict[str, Any]:
    """A credential as the API returns it (from a `_LIST_COLUMNS` row): DataRobot's keys plus public fields."""
    credential_id, name, credential_type, description, public_data, created_at = row
    out = {
        "credentialId": credential_id,
        "name": name,
        "credentialType": credential_type,
        "description": description or "",
        # SQLite hands back its stored text; inlined because it runs for every row of every page.
        "creationDate": f"{created_at[:10]}T{created_at[11:26]}Z"
        if created_at.__class__ is str
        else Database.as_wire_date(created_at),
    }
    if public_data != "{}" and public_data:
        out.update(json.loads(public_data))
    return out


def _auth_params(raw: str | None) -> dict[str, str]:
    if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 128:
        raise Unauthorized("missing or invalid API token")
    return {"token_hash": hash_token(raw)}


def _principal(rows: Sequence[Sequence[Any]]) -> Principal:
    if not rows:
        raise Unauthorized("missing or invalid API token")
    token_id, scopes, expires_at, user_id, username = rows[0]
    if expires_at is not None and Database.as_datetime(expires_at) <= utcnow():  # type: ignore[operator]
        raise Unauthorized("missing or invalid API token")
    return Principal(user_id=user_id, username=username, token_id=token_id, scopes=frozenset(scopes.split()))


def _get_with_token_params(raw: str | None, credential_id: str) -> dict[str, str] | None:
    if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 128 or not _ID.match(credential_id):
        return None
    return {"token_hash": hash_token(raw), "id": credential_id}


def _got_with_token(rows: Sequence[Sequence[Any]]) -> tuple[str, int] | None:
    if not rows:
        return None
    wire, revision, scopes, expires_at = rows[0]
    if expires_at is not None and Database.as_datetime(expires_at) <= utcnow():  # type: ignore[operator]
        return None
    if "read" not in scopes.split():
        return None
    return wire, int(revision)


class Strongroom:
    """The application: one instance per process, shared by all requests."""

    def __init__(self, db: Database, keys: KeyProvider) -> None:
        self.db = db
        self.keys = keys
        self.envelope = Envelope(keys)
        self._refreshed_at = time.monotonic()
        self._refresh_lock = threading.Lock()
        # token hash -> principal, for creates whose insert re-checks the token (never trusted on its own)
        self._known_tokens: dict[str, Principal] = {}

    @classmethod
    def open(cls, settings: Settings) -> Strongroom:
        """Connect, migrate, load the master key and verify it against the database; fail fast if wrong."""
        db = Database.from_settings(settings)
        try:
            db.migrate()
            keys = _key_provider(settings, db)
            app = cls(db, keys)
            app.verify_keys()
        except BaseException:
            db.dispose()
            raise
        return app

    def close(self) -> None:
        self.db.dispose()

    # ---- keys -------------------------------------------------------------------------------------

    def verify_keys(self) -> None:
        """Every key version the data needs must be present and be the very key that sealed it."""
        source = self.keys.source
        available = self.keys.versions()
        with self.db.write() as s:
            stored = {kv.version: kv for kv in s.scalars(select(KeyVersion))}
            counts = dict(
                s.execute(select(Credential.key_version, func.count()).group_by(Credential.key_version)).all()
            )
            for version, count in sorted(counts.items()):
                if version not in available:
                    raise MasterKeyError(
                        f"master key version {version} is missing from {source}; "
                        f"{count} credential(s) are sealed with it"
                    )
            for version in sorted(available & stored.keys()):
                try:
                    ok = self.keys.unwrap(version, stored[version].check_value, _key_check_aad(version)) == _KEY_CHECK
                except DecryptionError:
                    ok = False
                if not ok:
                    raise MasterKeyError(
                        f"master key version {version} from {source} does not match: "
                        "it is not the key this database was sealed with"
                    )
            active = self.keys.active_version()
            if active not in stored:
                version, check = self.keys.wrap(_KEY_CHECK, _key_check_aad(active))
                s.add(KeyVersion(version=version, check_value=check, key_ref=self.keys.key_ref(version)))

    def _fresh_keys(self) -> None:
        """Re-read the key source at most once per interval, so a running server adopts a rotated version."""
        now = time.monotonic()
        if now - self._refreshed_at < _KEY_REFRESH_SECONDS:
            return
        with self._refresh_lock:
            if now - self._refreshed_at >= _KEY_REFRESH_SECONDS:
                self.keys.refresh()
                self._refreshed_at = time.monotonic()

    def _know_version(self, version: int) -> None:
        """A version this process has not loaded (added by a rotation elsewhere) triggers one re-read."""
        if version not in self.keys.versions():
            with self._refresh_lock:
                self.keys.refresh()
                self._refreshed_at = time.monotonic()

    def _unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes:
        self._know_version(version)
        return self.keys.unwrap(version, wrapped, aad)

    def key_status(self) -> dict[str, Any]:
        """The active version and, per version, how many credentials' data keys it wraps."""
        self.keys.refresh()
        active = self.keys.active_version()
        with self.db.read() as s:
            counts = dict(
                s.execute(select(Credential.key_version, func.count()).group_by(Credential.key_version)).all()
            )
            stored = {kv.version: kv for kv in s.scalars(select(KeyVersion))}
        versions = []
        for version in sorted(set(counts) | set(stored) | self.keys.versions()):
            kv = stored.get(version)
            versions.append(
                {
                    "version": version,
                    "credentials": counts.get(version, 0),
                    "active": version == active,
                    "retired": bool(kv and kv.retired_at),
                    "keyRef": kv.key_ref if kv else self.keys.key_ref(version),
                }
            )
        older = sum(n for v, n in counts.items() if v != active)
        return {"active": active, "source": self.keys.source, "onOlderVersions": older, "versions": versions}

    def start_rotation(self, *, key_ref: str | None = None, resume_only: bool = False) -> int | None:
        """Add and activate a new master-key version, unless an earlier rotation is unfinished.

        Returns the new version, or None when there is one to finish (or nothing to do with `resume_only`):
        rotation progress is only "rows still on other versions", so a rerun after a crash resumes it.
        """
        self.keys.refresh()
        active = self.keys.active_version()
        if resume_only or self._count_not_on(active):
            with self.db.write() as s:  # a crash between the key file and this row: record the check now
                if s.get(KeyVersion, active) is None:
                    _, check = self.keys.wrap(_KEY_CHECK, _key_check_aad(active))
                    s.add(KeyVersion(version=active, check_value=check, key_ref=self.keys.key_ref(active)))
            return None
        with self.db.read() as s:
            newest = s.scalar(select(func.max(KeyVersion.version))) or 0
        version = max(newest, *self.keys.versions()) + 1
        ref = self.keys.add_version(version, key_ref)
        wrapped_under, check = self.keys.wrap(_KEY_CHECK, _key_check_aad(version))
        if wrapped_under != version:
            raise MasterKeyError(f"{self.keys.source} did not activate master key version {version}")
        with self.db.write() as s:
            s.add(KeyVersion(version=version, check_value=check, key_ref=ref, created_at=utcnow()))
        return version

    def _count_not_on(self, version: int) -> int:
        with self.db.read() as s:
            return s.scalar(select(func.count()).where(Credential.key_version != version)) or 0

    def rewrap(
        self,
        *,
        batch_size: int = 500,
        pause: float = 0.0,
        max_passes: int = 20,
        settle: float = 2 * _KEY_REFRESH_SECONDS,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Re-wrap every data key still under another version with the active one, in short batches.

        Only the wrapped data keys change; ciphertexts are untouched. Each batch is one short transaction whose
        updates apply only if the row still holds the wrapped key that was read (`WHERE key_version = old AND
        wrapped_key = old`), so a concurrent PATCH or DELETE always wins and is never undone; such rows are
        picked up again by the next pass. KMS calls happen before the transaction, never inside it.
        """
        if batch_size < 1:
            raise InvalidInput("batch-size: must be at least 1", {"batchSize": "must be at least 1"})
        target = self.keys.active_version()
        with self.db.read() as s:
            activated = s.scalar(select(KeyVersion.created_at).where(KeyVersion.version == target))
        age = (utcnow() - activated).total_seconds() if activated is not None else 0.0
        waited = max(0.0, settle - age)
        time.sleep(waited)  # let running servers adopt the version before judging what is left
        rewrapped = conflicts = passes = 0
        failed: set[str] = set()
        settled = age > 2 * settle  # activated long ago: no request can still be sealing under the old version
        while passes < max_passes:
            passes += 1
            after = ""
            while rows := self.db.fetch(_STALE, {"active": target, "after": after, "limit": batch_size}):
                after = rows[-1][0]
                changes = []
                for credential_id, owner_id, credential_type, version, wrapped in rows:
                    if credential_id in failed:
                        continue
                    aad = credential_aad(credential_id, owner_id, credential_type)
                    try:
                        data_key = self._unwrap(version, bytes(wrapped), aad)
                    except DecryptionError:
                        failed.add(credential_id)  # tampered or corrupt: reported, never rewritten
                        continue
                    new_version, new_wrapped = self.keys.wrap(data_key, aad)
                    if new_version != target:
                        raise MasterKeyError(
                            f"the active master key changed to version {new_version} during the rotation "
                            "(another rotation?); run `strongroom keys rotate` again"
                        )
                    changes.append(
                        {"target": credential_id, "old_version": version, "old_wrapped": bytes(wrapped)}
                        | {"new_version": target, "new_wrapped": new_wrapped}
                    )
                if changes:
                    done = self.db.transact(lambda tx, changes=changes: sum(tx.run(_REWRAP, c) for c in changes))
                    rewrapped += done
                    conflicts += len(changes) - done
                if on_batch is not None:
                    on_batch(rewrapped, len(changes))
                if pause:
                    time.sleep(pause)
            if self._count_not_on(target) <= len(failed):
                if settled:
                    break
                # A request that sealed under the old version just before its server re-read the keys may
                # commit after this pass: look once more after it must have landed.
                time.sleep(settle)
                waited += settle
                settled = True
        left = self._count_not_on(target)
        return {
            "rewrapped": rewrapped,
            "retried": conflicts,
            "failed": len(failed),
            "left": left,
            "passes": passes,
            "settleSeconds": round(waited, 3),
        }

    def retire_key(self, version: int) -> None:
        """Forget an old master-key version; refused while it is active or any credential still uses it."""
        self.keys.refresh()
        if version == self.keys.active_version():
            raise Conflict(f"master key version {version} is active; rotate to a new version before retiring it")
        with self.db.write() as s:
            kv = s.get(KeyVersion, version)
            if kv is None and version not in self.keys.versions():
                raise NotFound(f"master key version {version} does not exist")
            used = s.scalar(select(func.count()).where(Credential.key_version == version)) or 0
            if used:
                raise Conflict(
                    f"master key version {version} still wraps the data keys of {used} credential(s); "
                    "run `strongroom keys rotate` to finish re-wrapping them first"
                )
            if kv is not None and kv.retired_at is None:
                kv.retired_at = utcnow()
        self.keys.remove_version(version)

    # ---- users and tokens (local administration) ----------------------------------------------------

    def create_user(self, username: str) -> User:
        if not _USERNAME.match(username):
            raise InvalidInput(
                "username: 1-64 characters of letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
                {"username": "invalid"},
            )
        taken = Conflict(f"username: user {username!r} already exists")
        try:
            with self.db.write() as s:
                if s.scalar(select(User.id).where(User.username == username)):
                    raise taken
                user = User(id=new_id(), username=username, created_at=utcnow())
                s.add(user)
        except IntegrityError:  # a concurrent create of the same name committed between the check and ours
            raise taken from None
        return user

    def list_users(self) -> list[User]:
        with self.db.read() as s:
            return list(s.scalars(select(User).order_by(User.created_at, User.id)))

    def _user(self, s: Session, username: str) -> User:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"user {username!r} not found")
        return user

    def create_token(
        self, username: str, name: str = "default", scopes: tuple[str, ...] = SCOPES, expires_at: datetime | None = None
    ) -> tuple[ApiToken, str]:
        """Mint a token; the raw value is returned once and only its hash is stored."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise InvalidInput(f"scopes: expected some of {', '.join(SCOPES)}", {"scopes": "invalid"})
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as s:
            user = self._user(s, username)
            token = ApiToken(
                id=new_id(),
                user_id=user.id,
                name=types.check_name(name),
                token_hash=hash_token(raw),
                prefix=raw[:8],
                scopes=" ".join(sc for sc in SCOPES if sc in scopes),
                created_at=utcnow(),
                expires_at=expires_at,
            )
            s.add(token)
        return token, raw

    def list_tokens(self, username: str) -> list[ApiToken]:
        with self.db.read() as s:
            user = self._user(s, username)
            return list(s.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)))

    def revoke_token(self, token_id: str) -> None:
        """Revoke in one conditional UPDATE: concurrent revocations agree on the first revocation time."""
        with self.db.write() as s:
            revoked = s.execute(_REVOKE, {"token_id": token_id, "revoked_at": utcnow()}).rowcount  # type: ignore[attr-defined]
            if not revoked and s.scalar(_TOKEN_EXISTS, {"id": token_id}) is None:
                raise NotFound(f"token {token_id!r} not found")

    def authenticate(self, raw: str | None) -> Principal:
        """Resolve a bearer token; every failure reads the same so tokens cannot be probed."""
        return _principal(self.db.fetch(_AUTH, _auth_params(raw)))

    async def aauthenticate(self, raw: str | None) -> Principal:
        """`authenticate` for the server's event loop; remembers the principal for `acreate_with_token`."""
        params = _auth_params(raw)
        who = _principal(await self.db.afetch(_AUTH, params))
        if len(self._known_tokens) >= _KNOWN_TOKENS_MAX:
            self._known_tokens.clear()
        self._known_tokens[params["token_hash"]] = who
        return who

    # ---- credentials ----------------------------------------------------------------------------------

    def list_credentials(
        self,
        who: Principal,
        *,
        offset: int = 0,
        limit: int = DEFAULT_PAGE,
        types_filter: list[str] | None = None,
        order_by: str = "-creationDate",
    ) -> Page:
        who.require("read")
        params = _list_params(offset, limit, types_filter, order_by)
        params["owner"] = who.user_id
        sqlite = self.db.is_sqlite
        page = _page_of(
            self.db.fetch(_page(not sqlite, order_by.startswith("-"), bool(types_filter)), params),
            params,
            joined=sqlite,
        )
        if page is None:  # PostgreSQL, past the last credential: count alone
            total = self.db.fetch(_COUNT_TYPES if types_filter else _COUNT, params)[0][0]
            page = Page([], int(total), offset, limit)
        return page

    def list_with_token(
        self, raw: str | None, *, offset: int, limit: int, types_filter: list[str] | None, order_by: str
    ) -> Page | None:
        """A list page in one statement when the token is valid and may read; None means "take the ordinary
        path" (`authenticate`, then `list_credentials`), which explains any failure."""
        query = self._list_with_token_query(raw, offset, limit, types_filter, order_by)
        return None if query is None else self._listed_with_token(self.db.fetch(*query), query[1])

    async def alist_with_token(
        self, raw: str | None, *, offset: int, limit: int, types_filter: list[str] | None, order_by: str
    ) -> Page | None:
        """`list_with_token` for the server's event loop (PostgreSQL answers it without a worker thread)."""
        query = self._list_with_token_query(raw, offset, limit, types_filter, order_by)
        return None if query is None else self._listed_with_token(await self.db.afetch(*query), query[1])

    def _list_with_token_query(
        self, raw: str | None, offset: int, limit: int, types_filter: list[str] | None, order_by: str
    ) -> tuple[Executable, dict[str, Any]] | None:
        if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 128:
            return None
        try:
            params = _list_params(offset, limit, types_filter, order_by)
        except InvalidInput:
            return None
        params["token_hash"] = hash_token(raw)
        return _page(not self.db.is_sqlite, order_by.startswith("-"), bool(types_filter), True), params

    def _listed_with_token(self, rows: Sequence[Sequence[Any]], params: Mapping[str, Any]) -> Page | None:
        # PostgreSQL: the header row is the one with the token's scopes (page rows have NULL there; it comes
        # first, but nothing here relies on UNION ALL's order); SQLite: one row, the page joined in a column.
        header = next((row for row in rows if row[0] is not None), None)
        if header is None:
            return None
        scopes, expires_at, _, joined, total = header
        if expires_at is not None and Database.as_datetime(expires_at) <= utcnow():  # type: ignore[operator]
            return None
        if "read" not in scopes.split():
            return None
        if self.db.is_sqlite:
            items = joined.split(_SEP) if joined else []
        else:
            items = [row[3] for row in rows if row[0] is None]
        return Page(items, int(total), params["offset"], params["limit"])

    def get_credential(self, who: Principal, credential_id: str) -> dict[str, Any]:
        return orjson.loads(self.get_versioned(who, credential_id)[0])  # type: ignore[no-any-return]

    def get_versioned(self, who: Principal, credential_id: str) -> tuple[str, int]:
        """The credential's API JSON and its revision, which the server sends as the ETag for a later If-Match."""
        who.require("read")
        if not _ID.match(credential_id):
            raise self._not_found()
        rows = self.db.fetch(_GET, {"id": credential_id, "owner": who.user_id})
        if not rows:
            raise self._not_found()
        wire, revision = rows[0]
        return wire, int(revision)

    def get_with_token(self, raw: str | None, credential_id: str) -> tuple[str, int] | None:
        """GET in one statement when the token is valid and the credential is its user's; None means "take the
        ordinary path" (`authenticate`, then `get_versioned`), which tells 401, 403 and 404 apart."""
        params = _get_with_token_params(raw, credential_id)
        return None if params is None else _got_with_token(self.db.fetch(_GET_WITH_TOKEN, params))

    async def aget_with_token(self, raw: str | None, credential_id: str) -> tuple[str, int] | None:
        """`get_with_token` for the server's event loop (PostgreSQL answers it without a worker thread)."""
        params = _get_with_token_params(raw, credential_id)
        return None if params is None else _got_with_token(await self.db.afetch(_GET_WITH_TOKEN, params))

    def create_credential(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        cred, row = self._new_credential(who, body)

        def insert_row(tx: Tx) -> None:
            tx.run(_INSERT, row)  # a duplicate name fails here, on the (owner, name) unique index
            tx.count(who.user_id, cred.credential_type, +1)

        try:
            if self.db.is_sqlite:
                self.db.transact(insert_row, one_change=True)  # the count is added at commit, not here
            else:
                self.db.write_one(_PG_CREATE, row)
        except IntegrityError as exc:
            raise self._name_taken(cred.name) if _is_name_clash(exc) else exc from None
        return orjson.loads(cred.wire)  # type: ignore[no-any-return]

    async def acreate_with_token(self, raw: str | None, body_of: Callable[[], Mapping[str, Any]]) -> str | None:
        """Create in one statement when this process has authenticated the token before (`aauthenticate`): the
        insert re-checks the token itself. None means "take the ordinary path" (authenticate, then create),
        which also reports any error, so a caller whose token is no longer valid only ever learns 401.
        `body_of` parses the request body, only once the token is known."""
        if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > 128:
            return None
        token_hash = hash_token(raw)
        who = self._known_tokens.get(token_hash)
        if who is None:
            return None
        try:
            body = body_of()
            prepared = await self._keys_allowing(self._new_credential, who, body)
        except StrongroomError:
            return None
        cred, row = prepared
        try:
            inserted = await self.db.awrite_one(_PG_CREATE_CHECKED, {**row, "token_hash": token_hash, "now": utcnow()})
        except IntegrityError as exc:  # a clash means the row was tried: the token was valid
            raise self._name_taken(cred.name) if _is_name_clash(exc) else exc from None
        if not inserted:  # revoked or expired since it was remembered
            self._known_tokens.pop(token_hash, None)
            return None
        return str(cred.wire)

    async def acreate_credential(self, who: Principal, body: Mapping[str, Any]) -> str:
        """`create_credential` for the server's event loop on PostgreSQL; with a remote key service (KMS), the
        sealing, which calls it, runs in a worker thread."""
        cred, row = await self._keys_allowing(self._new_credential, who, body)
        try:
            await self.db.awrite_one(_PG_CREATE, row)
        except IntegrityError as exc:
            raise self._name_taken(cred.name) if _is_name_clash(exc) else exc from None
        return str(cred.wire)

    async def _keys_allowing(self, fn: Callable[..., T], *args: Any) -> T:
        """Run work that seals or opens secrets on the event loop, or in a worker thread when the key provider
        calls a remote service (KMS): a network round trip must not stall the loop."""
        if self.keys.remote:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return fn(*args)

    def _new_credential(self, who: Principal, body: Mapping[str, Any]) -> tuple[SimpleNamespace, dict[str, Any]]:
        """Validate a create body and build the sealed record and its row."""
        who.require("write")
        data = dict(body)
        if "name" not in data:
            raise InvalidInput("name: is required", {"name": "is required"})
        name = types.check_name(data.pop("name"))
        description = data.pop("description", None)
        description = "" if description is None else types.check_description(description)
        type_name = data.pop("credentialType", None)
        ctype = types.get_type(types.DEFAULT_TYPE if type_name is None else type_name)
        values = types.parse_fields(ctype, data)
        types.check_complete(ctype, values)
        public, secret = ctype.split(values)
        now = utcnow()
        cred = SimpleNamespace(  # a plain record: an ORM instance costs more to build than the insert
            id=new_id(),
            owner_id=who.user_id,
            name=name,
            credential_type=ctype.name,
            description=description,
            public_data=json.dumps(public, separators=(",", ":")),
            revision=1,
            created_at=now,
            updated_at=now,
        )
        self._seal(cred, secret)
        _render(cred)
        return cred, {c.name: getattr(cred, c.key) for c in _ALL_COLUMNS}

    def update_credential(
        self, who: Principal, credential_id: str, body: Mapping[str, Any], *, if_match: Collection[int] | None = None
    ) -> dict[str, Any]:
        return self.update_versioned(who, credential_id, body, if_match=if_match)[0]

    def update_versioned(
        self, who: Principal, credential_id: str, body: Mapping[str, Any], *, if_match: Collection[int] | None = None
    ) -> tuple[dict[str, Any], int]:
        """Apply a PATCH and return the new revision. DataRobot semantics: a new name without a description
        clears the description. With `if_match`, the change applies only if the stored revision is one of
        them, else 412: the UPDATE's own `WHERE revision =` makes the check and the write one step."""
        mine = self._update_target(who, credential_id, body)
        # Optimistic: read, decrypt, merge and re-seal outside any transaction (a KMS round trip must not hold
        # SQLite's write lock for the whole group commit), then write only if the revision is still the one read.
        for attempt in range(_UPDATE_TRIES):
            cred, params = self._patched(self.db.fetch(_CURRENT, mine), body, if_match)
            try:
                if self.db.is_sqlite:
                    written = self.db.transact(lambda tx, params=params: tx.run(_UPDATE, params), one_change=True)
                else:
                    written = len(self.db.write_one(_PG_UPDATE, params))
            except IntegrityError as exc:
                raise self._name_taken(str(body.get("name"))) if _is_name_clash(exc) else exc from None
            if written:
                return orjson.loads(cred.wire), cred.revision
            self._lost_race(if_match)
            time.sleep(random.uniform(0, 0.002 * (1 + attempt)))
        raise self._busy()

    async def aupdate_versioned(
        self, who: Principal, credential_id: str, body: Mapping[str, Any], *, if_match: Collection[int] | None = None
    ) -> tuple[str, int]:
        """`update_versioned` for the server's event loop on PostgreSQL (a remote key service: in a thread); the
        credential comes back as its API JSON text, for the server to send untouched."""
        mine = self._update_target(who, credential_id, body)
        for attempt in range(_UPDATE_TRIES):
            found = await self.db.afetch(_CURRENT, mine)
            cred, params = await self._keys_allowing(self._patched, found, body, if_match)
            try:
                written = await self.db.awrite_one(_PG_UPDATE, params)
            except IntegrityError as exc:
                raise self._name_taken(str(body.get("name"))) if _is_name_clash(exc) else exc from None
            if written:
                return str(cred.wire), int(cred.revision)
            self._lost_race(if_match)
            await asyncio.sleep(random.uniform(0, 0.002 * (1 + attempt)))
        raise self._busy()

    def _update_target(self, who: Principal, credential_id: str, body: Mapping[str, Any]) -> dict[str, str]:
        """Check an update's caller, id and body before any work; the parameters that find the credential."""
        who.require("write")
        if not body:
            raise InvalidInput("Must specify at least one field to update", {"body": "empty"})
        if not _ID.match(credential_id):
            raise self._not_found()
        return {"id": credential_id, "owner": who.user_id}

    def _patched(
        self, found: Sequence[Sequence[Any]], body: Mapping[str, Any], if_match: Collection[int] | None
    ) -> tuple[SimpleNamespace, dict[str, Any]]:
        """The credential read (`_CURRENT` rows) with the PATCH applied, and the compare-and-swap UPDATE's
        parameters; the body is checked before the revision, so a bad body is a 422 whatever the revision."""
        if not found:
            raise self._not_found()
        cred = SimpleNamespace(**{c.key: value for c, value in zip(_ALL_COLUMNS, found[0], strict=True)})
        read_revision = cred.revision
        self._apply_patch(cred, dict(body))
        if if_match is not None and read_revision not in if_match:
            raise self._stale(if_match, read_revision)
        new = {f"new_{c.name}": getattr(cred, c.key) for c in _ALL_COLUMNS if c.name not in _FIXED}
        return cred, {"target": cred.id, "read_revision": read_revision, **new}

    def _lost_race(self, if_match: Collection[int] | None) -> None:
        """The credential changed between our read and our write: with If-Match the client's revision is
        stale (412); without, the caller reads again."""
        if if_match is not None:
            raise self._stale(if_match, None)

    @staticmethod
    def _busy() -> Conflict:
        return Conflict("credential: changed by other requests during this update; retry", {"credential": "busy"})

    def _apply_patch(self, cred: SimpleNamespace, data: dict[str, Any]) -> None:
        """Validate a PATCH body and apply it to a credential record, re-sealing its secrets if they change."""
        ctype = types.TYPES[cred.credential_type]
        if "credentialType" in data and data.pop("credentialType") != cred.credential_type:
            msg = "cannot be changed; create a new credential instead"
            raise InvalidInput(f"credentialType: {msg}", {"credentialType": msg})
        if "name" in data:
            cred.name = types.check_name(data.pop("name"))
            if "description" not in data:
                cred.description = ""
        if "description" in data:
            value = data.pop("description")
            cred.description = "" if value is None else types.check_description(value)
        patch = types.parse_fields(ctype, data, allow_null=True)
        if patch:
            current = {**json.loads(cred.public_data), **self._open(cred)}
            merged = _merge(ctype, current, patch)
            types.check_complete(ctype, merged)
            public, secret = ctype.split(merged)
            cred.public_data = json.dumps(public, separators=(",", ":"))
            self._seal(cred, secret)
        cred.revision += 1
        cred.updated_at = utcnow()
        _render(cred)

    def delete_credential(self, who: Principal, credential_id: str, *, if_match: Collection[int] | None = None) -> None:
        """Delete; with `if_match`, only while the stored revision is one of them (else 412)."""
        who.require("write")
        if not _ID.match(credential_id):
            raise self._not_found()
        mine = {"id": credential_id, "owner": who.user_id}

        def remove(tx: Tx) -> None:
            gone = tx.rows(_DELETE, mine)
            if not gone:
                raise self._not_found()
            tx.count(who.user_id, gone[0][0], -1)

        def remove_at_revision(tx: Tx) -> None:
            found = tx.rows(_REVISION, mine)
            if not found:
                raise self._not_found()
            if if_match is None or found[0][0] not in if_match:
                raise self._stale(if_match or (), found[0][0])
            gone = tx.rows(_DELETE_AT, {**mine, "revision": found[0][0]})
            if not gone:
                raise self._stale(if_match, None)
            tx.count(who.user_id, gone[0][0], -1)

        if if_match is not None:
            self.db.transact(remove_at_revision)
        elif self.db.is_sqlite:
            self.db.transact(remove)
        elif not self.db.write_one(_PG_DELETE, mine):
            raise self._not_found()

    async def adelete_credential(
        self, who: Principal, credential_id: str, *, if_match: Collection[int] | None = None
    ) -> None:
        """`delete_credential` for the server's event loop on PostgreSQL: one statement there, unless If-Match
        needs the revision read and checked in a transaction (then in a worker thread)."""
        if if_match is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: self.delete_credential(who, credential_id, if_match=if_match)
            )
            return
        who.require("write")
        if not _ID.match(credential_id):
            raise self._not_found()
        if not await self.db.awrite_one(_PG_DELETE, {"id": credential_id, "owner": who.user_id}):
            raise self._not_found()

    # ---- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _not_found() -> NotFound:
        return NotFound("credential not found")

    @staticmethod
    def _stale(expected: Collection[int], current: int | None) -> PreconditionFailed:
        now = f" (it is now at {current})" if current is not None else ""
        if expected:
            sent = ", ".join(str(r) for r in sorted(expected))
            msg = f"the credential changed since revision {sent} was read{now}; GET it again"
        else:
            msg = f"weak ETags never match{now}; send the strong ETag from a GET"
        return PreconditionFailed(f"If-Match: {msg}", {"If-Match": "stale revision"}, current_revision=current)

    @staticmethod
    def _name_taken(name: str) -> Conflict:
        return Conflict(f"name: the name {name[:80]!r} is already in use", {"name": "already in use"})

    def rebuild_counts(self) -> None:
        """Recompute every count from the credentials (after a bulk import that bypassed create)."""
        with self.db.write() as s:
            s.execute(CredentialCount.__table__.delete())
            totals = select(Credential.owner_id, Credential.credential_type, func.count()).group_by(
                Credential.owner_id, Credential.credential_type
            )
            s.execute(CredentialCount.__table__.insert().from_select(["owner_id", "credential_type", "n"], totals))

    def _seal(self, cred: Any, secret: Mapping[str, Any]) -> None:
        self._fresh_keys()
        plaintext = json.dumps(secret, separators=(",", ":")).encode()
        sealed = self.envelope.seal(plaintext, credential_aad(cred.id, cred.owner_id, cred.credential_type))
        cred.key_version, cred.wrapped_key, cred.ciphertext = sealed.key_version, sealed.wrapped_key, sealed.ciphertext

    def _open(self, cred: Any) -> dict[str, Any]:
        self._know_version(cred.key_version)
        sealed = Sealed(cred.key_version, bytes(cred.wrapped_key), bytes(cred.ciphertext))
        plaintext = self.envelope.open(sealed, credential_aad(cred.id, cred.owner_id, cred.credential_type))
        result: dict[str, Any] = json.loads(plaintext)
        return result


def _key_provider(settings: Settings, db: Database) -> KeyProvider:
    """The configured master-key source: AWS KMS when STRONGROOM_KMS_KEY_ID is set, else the built-in keyrings."""
    with db.read() as s:
        stored = s.execute(select(KeyVersion.version, KeyVersion.key_ref, KeyVersion.retired_at)).all()
        used = set(s.scalars(select(Credential.key_version).distinct()))
    if settings.kms_key_id:
        from strongroom.crypto.kms import KmsKeyProvider, kms_client

        def load_refs() -> dict[int, str]:
            with db.read() as s:
                rows = s.execute(
                    select(KeyVersion.version, KeyVersion.key_ref).where(
                        KeyVersion.key_ref.is_not(None), KeyVersion.retired_at.is_(None)
                    )
                ).all()
            return {version: ref for version, ref in rows}

        client = kms_client(endpoint_url=settings.kms_endpoint_url, region=settings.kms_region)
        return KmsKeyProvider(client, load_refs, settings.kms_key_id)
    # Name the version the data needs first: that is the one whose absence would stop the server.
    for version, key_ref, retired_at in sorted(stored, key=lambda row: (row[0] not in used, -row[0])):
        if key_ref and retired_at is None:
            raise MasterKeyError(
                f"master key version {version} is missing from the configured keys: it is the AWS KMS key "
                f"{key_ref}; set STRONGROOM_KMS_KEY_ID to use AWS KMS"
            )
    return load_keyring(env_value=settings.master_key, key_file=settings.resolved_key_file, create=not stored)


def _is_name_clash(exc: IntegrityError) -> bool:
    """Whether a failed write hit the (owner, name) uniqueness rule, as SQLite or PostgreSQL words it."""
    text = str(exc.orig)
    return "uq_credentials_owner_name" in text or "credentials.owner_id, credentials.name" in text


def _merge(ctype: types.CredentialType, current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Patch field values; switching between a configId and explicit secrets replaces the other mode."""
    merged = dict(current)
    ref = ctype.exclusive
    if ref and patch.get(ref) is not None:
        merged = {k: v for k, v in merged.items() if k == ref}
    elif ref and any(v is not None for k, v in patch.items() if k != ref):
        merged.pop(ref, None)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
