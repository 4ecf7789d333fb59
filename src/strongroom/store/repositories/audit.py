"""The audit log: hash-chained records, appended in the same transaction as the change they describe.

There are `AUDIT_SHARDS` chains. On PostgreSQL a writer extends the chain of its connection (backend pid
modulo the shards), so concurrent writers do not queue on one head row; SQLite writes one at a time and uses
chain 0. Each record's hash is SHA-256 over the previous record's hash (hex) followed by its content, so an
edited, deleted or reordered record breaks its chain from there on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Text, and_, bindparam, cast, exists, func, insert, literal, or_, select, update
from sqlalchemy.dialects import postgresql

from strongroom.store.db import Database, Tx
from strongroom.store.models import AUDIT_SHARDS, AuditHead, AuditRecord, Credential

GENESIS = "0" * 64
# A credential name an entry leaves to the statement (PostgreSQL's one-statement delete knows it only there):
# its JSON form in the content is replaced by the JSON of the name the statement returns.
NAME_SLOT = "\u0000credential-name\u0000"
_NAME_SLOT_JSON = json.dumps(NAME_SLOT)


def chain_hash(previous: str, content: str) -> str:
    """The hash of a record whose content is `content` after a record hashed `previous`."""
    return hashlib.sha256((previous + content).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A record to append: `content` is its canonical JSON; the other fields are copies for filtering."""

    at: datetime
    actor: str | None
    action: str
    credential_id: str | None
    owner_id: str | None
    status: int
    content: str

    def params(self) -> dict[str, Any]:
        return {
            "a_at": self.at,
            "a_actor": self.actor,
            "a_action": self.action,
            "a_credential": self.credential_id,
            "a_owner": self.owner_id,
            "a_status": self.status,
            "a_content": self.content,
        }


_SHARD = bindparam("a_shard")
_HEAD = select(AuditHead.seq, AuditHead.hash).where(AuditHead.shard == _SHARD).with_for_update()
_ADVANCE = update(AuditHead).where(AuditHead.shard == _SHARD).values(seq=bindparam("a_seq"), hash=bindparam("a_hash"))
_APPEND = insert(AuditRecord).values(
    shard=_SHARD,
    seq=bindparam("a_seq"),
    at=bindparam("a_at"),
    actor=bindparam("a_actor"),
    action=bindparam("a_action"),
    credential_id=bindparam("a_credential"),
    owner_id=bindparam("a_owner"),
    status=bindparam("a_status"),
    content=bindparam("a_content"),
    hash=bindparam("a_hash"),
)
_PG_SHARD = select(func.pg_backend_pid() % AUDIT_SHARDS)


def append_in(tx: Tx, entry: Entry, *, postgres: bool) -> None:
    """Append `entry` inside the transaction `tx` (it commits with the change it records, or not at all).

    On PostgreSQL the head row is read locked and advanced at once (one record per transaction). SQLite's
    committer runs a batch of writes in one transaction that holds the database's write lock: the head is
    read once per batch, kept in the transaction's memo from record to record and written once, at commit."""
    if postgres:
        shard = int(tx.rows(_PG_SHARD, {})[0][0])
        seq, previous = tx.rows(_HEAD, {"a_shard": shard})[0]
        values = {**entry.params(), "a_shard": shard, "a_seq": int(seq) + 1}
        values["a_hash"] = chain_hash(previous, entry.content)
        tx.run(_ADVANCE, values)
        tx.run(_APPEND, values)
        return
    key = ("audit-head", 0)
    head = tx.memo.get(key)
    seq, previous = head if head is not None else tx.rows(_HEAD, {"a_shard": 0})[0]
    values = {**entry.params(), "a_shard": 0, "a_seq": int(seq) + 1, "a_hash": chain_hash(previous, entry.content)}
    tx.run(_APPEND, values)
    tx.memo[key] = (values["a_seq"], values["a_hash"])
    tx.at_commit(key, _ADVANCE, {"a_shard": 0, "a_seq": values["a_seq"], "a_hash": values["a_hash"]})


# The audit fields of an entry, as `Entry.params` names them, and the audit_log column each fills.
ENTRY_COLUMNS = {
    "a_at": AuditRecord.at,
    "a_actor": AuditRecord.actor,
    "a_action": AuditRecord.action,
    "a_credential": AuditRecord.credential_id,
    "a_owner": AuditRecord.owner_id,
    "a_status": AuditRecord.status,
    "a_content": AuditRecord.content,
}
ENTRY_FIELDS = tuple(ENTRY_COLUMNS)
ENTRY_TYPES = {name: col.type.compile(dialect=postgresql.dialect()) for name, col in ENTRY_COLUMNS.items()}
_LOGGED = ("shard", "seq", *(col.name for col in ENTRY_COLUMNS.values()), "hash")  # a record's columns, in order


def entry_values(alias: str) -> str:
    """SQL: the columns of `alias` named after the `ENTRY_FIELDS` but the content, in their order."""
    return ", ".join(f"{alias}.{name}" for name in ENTRY_FIELDS if name != "a_content")


def pg_audited(statement: Any, changed: Any | None = None, name: Any | None = None) -> Executable:
    """PostgreSQL: `statement` (a SELECT over data-modifying CTEs) that also appends the audit entry whose
    `a_*` parameters are bound, in the same statement; only if the CTE `changed` returned a row, when given.
    With `name` (a column of `changed`), an entry naming its credential `NAME_SLOT` gets that name instead.

    The head row of the connection's chain is advanced by an UPDATE, which holds its row lock to the end of
    the statement, so two statements on one chain extend it one after the other.
    """
    content: Any = bindparam("a_content", type_=AuditRecord.content.type)
    if name is not None:
        named = cast(func.to_json(select(name).scalar_subquery()), Text)
        content = func.replace(content, literal(_NAME_SLOT_JSON), func.coalesce(named, literal("null")))
    new_hash = func.encode(func.sha256(func.convert_to(AuditHead.hash + content, literal("UTF8"))), "hex")
    where = [AuditHead.shard == func.pg_backend_pid() % AUDIT_SHARDS]
    if changed is not None:
        where.append(exists(select(literal(1)).select_from(changed)))
    head = (
        update(AuditHead)
        .where(and_(*where))
        .values(seq=AuditHead.seq + 1, hash=new_hash)
        .returning(AuditHead.shard, AuditHead.seq, AuditHead.hash)
        .cte("audit_head")
    )
    fields = (bindparam(name, type_=col.type) for name, col in ENTRY_COLUMNS.items() if name != "a_content")
    rows = select(head.c.shard, head.c.seq, *fields, content, head.c.hash)
    logged = postgresql.insert(AuditRecord).from_select(_LOGGED, rows).returning(AuditRecord.seq).cte("audit_logged")
    return statement.add_cte(head, logged)


def pg_audited_many(done: str) -> str:
    """PostgreSQL: the CTEs (SQL text, to follow other CTEs of a `WITH RECURSIVE`) that append one entry per row
    of the CTE `done` (columns `k` = 1, 2, ... in the order to append, `content`, and the other `ENTRY_FIELDS`)
    to the connection's chain, hashing each after the one before it (a recursive CTE), and advance its head.

    The head row is locked (`FOR UPDATE`, which reads its newest version) before the chain is computed, so two
    statements on one chain extend it one after the other, as `pg_audited`'s do."""
    return f"""head AS (
    SELECT shard, seq, hash::text AS hash FROM audit_heads
    WHERE shard = pg_backend_pid() % {AUDIT_SHARDS} AND EXISTS (SELECT 1 FROM {done}) FOR UPDATE
), chain AS (
    SELECT 0::bigint AS k, hash FROM head
    UNION ALL
    SELECT d.k, encode(sha256(convert_to(chain.hash || d.content, 'UTF8')), 'hex')
    FROM chain JOIN {done} AS d ON d.k = chain.k + 1
), logged AS (
    INSERT INTO audit_log ({", ".join(_LOGGED)})
    SELECT head.shard, head.seq + d.k, {entry_values("d")}, d.content, chain.hash
    FROM head, {done} AS d JOIN chain ON chain.k = d.k
    RETURNING seq
), advanced AS (
    UPDATE audit_heads SET seq = head.seq + last.k, hash = last.hash
    FROM head, (SELECT k, hash FROM chain ORDER BY k DESC LIMIT 1) AS last
    WHERE audit_heads.shard = head.shard
    RETURNING audit_heads.seq
)"""


def name_in_content(content: str, name: str) -> str:
    """SQL: `content` (an entry's JSON) with `NAME_SLOT`'s JSON replaced by the JSON of `name` (SQL too)."""
    return f"replace({content}, '{_NAME_SLOT_JSON}', coalesce(to_json({name})::text, 'null'))"


class AuditRepository:
    """Appending to and reading the audit log."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, entry: Entry) -> None:
        """Append `entry` in a transaction of its own (for events that change nothing else)."""
        postgres = not self.db.is_sqlite
        self.db.transact(lambda tx: append_in(tx, entry, postgres=postgres))

    def owner_of(self, credential_id: str) -> tuple[str, str] | None:
        """(owner id, name) of a stored credential, or None."""
        with self.db.read() as s:
            row = s.execute(select(Credential.owner_id, Credential.name).where(Credential.id == credential_id)).first()
        return None if row is None else (str(row[0]), str(row[1]))

    def records(
        self,
        *,
        credential_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[str], int]:
        """The contents of matching records, oldest first, and how many match in all."""
        where = []
        if credential_id is not None:
            where.append(AuditRecord.credential_id == credential_id)
        if actor is not None:
            where.append(AuditRecord.actor == actor)
        if action is not None:
            where.append(AuditRecord.action == action)
        if owner_id is not None:  # about a credential they owned then, or own now (after a handover)
            owned = select(Credential.id).where(Credential.owner_id == owner_id)
            where.append(or_(AuditRecord.owner_id == owner_id, AuditRecord.credential_id.in_(owned)))
        if since is not None:
            where.append(AuditRecord.at >= since)
        if until is not None:
            where.append(AuditRecord.at < until)
        with self.db.read() as s:
            total = s.scalar(select(func.count()).select_from(AuditRecord).where(*where)) or 0
            page = s.scalars(
                select(AuditRecord.content)
                .where(*where)
                .order_by(AuditRecord.at, AuditRecord.shard, AuditRecord.seq)
                .offset(offset)
                .limit(limit)
            ).all()
        return list(page), int(total)

    def heads(self) -> dict[int, tuple[int, str]]:
        """Each chain's head: shard -> (seq, hash) of its last record."""
        with self.db.read() as s:
            rows = s.execute(select(AuditHead.shard, AuditHead.seq, AuditHead.hash)).all()
        return {int(shard): (int(seq), str(digest)) for shard, seq, digest in rows}

    def chain(self, shard: int, batch: int = 1000) -> Iterator[Sequence[Any]]:
        """The records of one chain in order: (seq, content, hash, at, actor, action, credential_id, owner_id,
        status), read in batches."""
        after = 0
        while True:
            with self.db.read() as s:
                rows = s.execute(
                    select(
                        AuditRecord.seq,
                        AuditRecord.content,
                        AuditRecord.hash,
                        AuditRecord.at,
                        AuditRecord.actor,
                        AuditRecord.action,
                        AuditRecord.credential_id,
                        AuditRecord.owner_id,
                        AuditRecord.status,
                    )
                    .where(AuditRecord.shard == shard, AuditRecord.seq > after)
                    .order_by(AuditRecord.seq)
                    .limit(batch)
                ).all()
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1][0]
