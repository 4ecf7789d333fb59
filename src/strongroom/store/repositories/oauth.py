"""OAuth providers and `oauth` credentials' token state, and the single-flight lock a refresh runs under.

A refresh holds a lock on its credential for as long as it talks to the provider, and re-reads the token state
once it holds it, so concurrent callers wait and then find the token the first one stored:

- PostgreSQL: a transaction-scoped advisory lock keyed by the credential id (`pg_advisory_xact_lock`), taken in
  the transaction that then stores the new state and its audit record; every process on the database shares it.
  Threads of one process first queue on an in-process lock per credential, so a burst of callers holds one
  database connection per process while it waits, not one per caller.
- SQLite: an in-process lock per credential (threads wait instead of failing on the one writer), then the state
  and its audit record in one write transaction. Several processes on one SQLite file are not serialised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update

from strongroom.store.db import Database, Tx
from strongroom.store.models import Credential, OAuthProvider, OAuthTokenState
from strongroom.store.repositories.audit import Entry, append_in

PROVIDER_KEYS = (
    "id",
    "name",
    "token_url",
    "client_id",
    "auth_method",
    "key_version",
    "wrapped_key",
    "ciphertext",
    "seal_generation",
    "created_at",
)
STATE_KEYS = (
    "credential_id",
    "source_generation",
    "seal_generation",
    "key_version",
    "wrapped_key",
    "ciphertext",
    "expires_at",
    "token_type",
    "refreshed_at",
    "reauth_at",
    "reauth_error",
)
_PROVIDER = select(*(getattr(OAuthProvider, k) for k in PROVIDER_KEYS))
_STATE = select(*(getattr(OAuthTokenState, k) for k in STATE_KEYS)).where(
    OAuthTokenState.credential_id == bindparam("id")
)
_ADVISORY = text("SELECT pg_advisory_xact_lock(:key)")


class ProviderNameTaken(Exception):
    """Another OAuth provider already has this name."""


@dataclass
class Flight:
    """What a refresh decided under the lock: the state to store (None: none), its audit record, and what to
    hand back to the caller once committed."""

    state: Mapping[str, Any] | None = None
    audit: Entry | None = None
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def lock_key(credential_id: str) -> int:
    """The advisory-lock key of a credential: its id's last 16 hex digits (random) as a signed 64-bit integer."""
    value = int(credential_id[-16:], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


class OAuthRepository:
    """Every statement about OAuth providers and token states."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @property
    def postgres(self) -> bool:
        return not self.db.is_sqlite

    # ---- providers ------------------------------------------------------------------------------------------

    def providers(self) -> list[dict[str, Any]]:
        """Every provider, oldest first."""
        with self.db.read() as s:
            rows = s.execute(_PROVIDER.order_by(OAuthProvider.created_at, OAuthProvider.id)).all()
        return [dict(zip(PROVIDER_KEYS, r, strict=True)) for r in rows]

    def provider(self, provider_id: str) -> dict[str, Any] | None:
        """One provider's columns, or None."""
        with self.db.read() as s:
            found = s.execute(_PROVIDER.where(OAuthProvider.id == provider_id)).first()
        return None if found is None else dict(zip(PROVIDER_KEYS, found, strict=True))

    def insert_provider(self, row: Mapping[str, Any], audit: Entry) -> None:
        """Add a provider with its audit record; ProviderNameTaken if the name is in use."""
        values = {k: row[k] for k in PROVIDER_KEYS}

        def add(tx: Tx) -> None:
            taken = tx.rows(select(func.count()).where(OAuthProvider.name == bindparam("n")), {"n": row["name"]})
            if int(taken[0][0]):
                raise ProviderNameTaken(row["name"])
            tx.run(OAuthProvider.__table__.insert().values(**values), {})
            append_in(tx, audit, postgres=self.postgres)

        try:
            self.db.transact(add)
        except Exception as exc:  # a concurrent insert of the same name loses on the unique index
            if isinstance(exc, ProviderNameTaken) or "unique" in str(getattr(exc, "orig", exc)).lower():
                raise ProviderNameTaken(row["name"]) from None
            raise

    def delete_provider(self, provider_id: str, audit: Entry) -> bool:
        """Remove a provider with its audit record; False if there was none."""

        def remove(tx: Tx) -> bool:
            done = tx.run(delete(OAuthProvider).where(OAuthProvider.id == provider_id), {})
            if done:
                append_in(tx, audit, postgres=self.postgres)
            return bool(done)

        return self.db.transact(remove)

    def credentials_using(self, provider_id: str) -> int:
        """How many `oauth` credentials name the provider."""
        needle = f'%"oauthProviderId":"{provider_id}"%'
        query = select(func.count()).where(Credential.credential_type == "oauth", Credential.public_data.like(needle))
        with self.db.read() as s:
            return int(s.execute(query).scalar_one())

    # ---- token state --------------------------------------------------------------------------------------

    def state(self, credential_id: str) -> dict[str, Any] | None:
        """The credential's stored token state, or None before its first refresh."""
        rows = self.db.fetch(_STATE, {"id": credential_id})
        return dict(zip(STATE_KEYS, rows[0], strict=True)) if rows else None

    def record(self, entry: Entry) -> None:
        """Append an audit record of its own (a use that changed nothing)."""

        def add(tx: Tx) -> None:
            append_in(tx, entry, postgres=self.postgres)

        self.db.transact(add)

    def single_flight(self, credential_id: str, decide: Callable[[dict[str, Any] | None], Flight]) -> Flight:
        """Run `decide` on the credential's current state while holding its refresh lock, then store the state it
        returns (replacing the old one) and its audit record in one transaction; the Flight, once committed.
        `decide` may call the provider: it runs outside the database's writer on SQLite, and inside the locking
        transaction on PostgreSQL."""
        if self.postgres:

            def locked(tx: Tx) -> Flight:
                tx.rows(_ADVISORY, {"key": lock_key(credential_id)})
                rows = tx.rows(_STATE, {"id": credential_id})
                flight = decide(dict(zip(STATE_KEYS, rows[0], strict=True)) if rows else None)
                self._store(tx, credential_id, flight)
                return flight

            with self._lock(credential_id):  # threads of this process queue here, not on database connections
                return self.db.transact(locked)
        with self._lock(credential_id):
            flight = decide(self.state(credential_id))
            if flight.state is not None or flight.audit is not None:
                self.db.transact(lambda tx: self._store(tx, credential_id, flight))
            return flight

    def _store(self, tx: Tx, credential_id: str, flight: Flight) -> None:
        if flight.state is not None:
            tx.run(delete(OAuthTokenState).where(OAuthTokenState.credential_id == credential_id), {})
            values = {k: flight.state[k] for k in STATE_KEYS}
            tx.run(OAuthTokenState.__table__.insert().values(**values), {})
        if flight.audit is not None:
            append_in(tx, flight.audit, postgres=self.postgres)

    # ---- master-key rotation -------------------------------------------------------------------------------

    def sealed_not_on(self, version: int) -> list[tuple[str, str, int, int, bytes]]:
        """Every sealed OAuth row whose data key another master-key version wraps: (kind, id, seal generation,
        key version, wrapped key), kind being "oauth-provider" or "oauth-token" (the barrier's binding kinds)."""
        providers = select(
            OAuthProvider.id, OAuthProvider.seal_generation, OAuthProvider.key_version, OAuthProvider.wrapped_key
        ).where(OAuthProvider.key_version != version)
        states = select(
            OAuthTokenState.credential_id,
            OAuthTokenState.seal_generation,
            OAuthTokenState.key_version,
            OAuthTokenState.wrapped_key,
        ).where(OAuthTokenState.key_version != version)
        with self.db.read() as s:
            found = [("oauth-provider", *r) for r in s.execute(providers).all()]
            found += [("oauth-token", *r) for r in s.execute(states).all()]
        return [(kind, i, int(g), int(v), bytes(w)) for kind, i, g, v, w in found]

    def rewrap(self, changes: list[tuple[str, str, bytes, int, bytes]]) -> int:
        """Apply (kind, id, old wrapped key, new version, new wrapped key) where the row still holds the key that
        was read (a concurrent refresh wins); how many applied."""

        def apply(tx: Tx) -> int:
            done = 0
            for kind, row_id, old, version, new in changes:
                table: Any = OAuthProvider if kind == "oauth-provider" else OAuthTokenState
                key = table.id if kind == "oauth-provider" else table.credential_id
                statement = update(table).where(key == row_id, table.wrapped_key == old)
                done += tx.run(statement.values(key_version=version, wrapped_key=new), {})
            return done

        return self.db.transact(apply)

    def _lock(self, credential_id: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(credential_id)
            if lock is None:
                if len(self._locks) > 10_000:  # forget idle locks rather than grow without bound
                    for key in [k for k, v in self._locks.items() if not v.locked()]:
                        del self._locks[key]
                lock = self._locks[credential_id] = threading.Lock()
            return lock
