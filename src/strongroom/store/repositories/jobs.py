"""Deployments, batch jobs and their chunks: every statement the job service and its runners need.

A job's status changes only through `transition`, an `UPDATE … WHERE status IN (…)`, so two runners (or a
runner and an abort) can never both move the same job; chunk rows are keyed by (job, number), so a chunk run
again overwrites its earlier attempt's row instead of adding one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, text, update

from strongroom.store.db import Database, Tx
from strongroom.store.models import ApiToken, BatchJob, BatchJobChunk, Deployment, User
from strongroom.store.repositories.audit import Entry, append_in

JOB_KEYS = (
    "id",
    "owner_id",
    "token_id",
    "deployment_id",
    "status",
    "spec",
    "status_details",
    "intake_ready",
    "expected_rows",
    "total_chunks",
    "scored_rows",
    "failed_rows",
    "generation",
    "created_at",
    "started_at",
    "finished_at",
)
_JOB_COLUMNS = tuple(getattr(BatchJob, k) for k in JOB_KEYS)
_WITH_OWNER = select(*_JOB_COLUMNS, User.username).join(User, User.id == BatchJob.owner_id)
_ONE_JOB = _WITH_OWNER.where(BatchJob.id == bindparam("id"))
_MOMENTS = ("created_at", "started_at", "finished_at")
# A job's token while it still authenticates (unrevoked, its user enabled), as a request's token is checked.
_OWNER_TOKEN = (
    select(ApiToken.expires_at)
    .join(User, User.id == ApiToken.user_id)
    .where(
        ApiToken.id == bindparam("token_id"),
        ApiToken.user_id == bindparam("owner_id"),
        ApiToken.revoked_at.is_(None),
        User.disabled_at.is_(None),
    )
)
_IN_FLIGHT = select(func.count()).where(
    BatchJobChunk.job_id == bindparam("id"), or_(BatchJobChunk.status == "PENDING", BatchJobChunk.status == "RUNNING")
)


def _one_of(statuses: Sequence[str]) -> Any:
    """`status` is one of `statuses`, spelled out (the SQLite write path takes no expanding IN list)."""
    return or_(*(BatchJob.status == s for s in statuses))


def _job(values: Sequence[Any]) -> dict[str, Any]:
    """A job's columns by name, with `owner` (the owner's username)."""
    row = dict(zip(JOB_KEYS, values[: len(JOB_KEYS)], strict=True))
    row["owner"] = values[len(JOB_KEYS)]
    row["intake_ready"] = bool(row["intake_ready"])
    for key in _MOMENTS:  # the fast read path hands back SQLite's dates as text
        row[key] = Database.as_datetime(row[key])
    return row


class JobRepository:
    """Every statement about deployments, jobs and chunks."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def postgres(self) -> bool:
        return not self.db.is_sqlite

    # ---- deployments ------------------------------------------------------------------------------------

    def add_deployment(self, row: Mapping[str, Any], audit: Entry) -> None:
        """Store a deployment with its audit record (IntegrityError when the label is taken)."""

        def add(tx: Tx) -> None:
            tx.run(Deployment.__table__.insert().values(**row), {})
            append_in(tx, audit, postgres=self.postgres)

        self.db.transact(add)

    def deployments(self) -> list[dict[str, Any]]:
        """Every stored deployment, oldest first."""
        query = select(Deployment.id, Deployment.label, Deployment.entry_point, Deployment.created_at)
        with self.db.read() as s:
            rows = s.execute(query.order_by(Deployment.created_at, Deployment.id)).all()
        return [dict(zip(("id", "label", "entry_point", "created_at"), r, strict=True)) for r in rows]

    def deployment(self, deployment_id: str) -> dict[str, Any] | None:
        """One stored deployment, or None."""
        return next((d for d in self.deployments() if d["id"] == deployment_id), None)

    # ---- jobs -------------------------------------------------------------------------------------------

    def insert(self, row: Mapping[str, Any], audit: Entry) -> None:
        """Store a new job with its audit record."""
        values = {k: row[k] for k in JOB_KEYS}

        def add(tx: Tx) -> None:
            tx.run(BatchJob.__table__.insert().values(**values), {})
            append_in(tx, audit, postgres=self.postgres)

        self.db.transact(add)

    def record(self, audit: Entry) -> None:
        """Append an audit record of its own (a download or an upload, which change no row)."""
        self.db.transact(lambda tx: append_in(tx, audit, postgres=self.postgres))

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job with its owner's username, or None (one prebuilt statement: a job is polled often)."""
        found = self.db.fetch(_ONE_JOB, {"id": job_id})
        return _job(found[0]) if found else None

    def token_expiry(self, token_id: str, owner_id: str) -> tuple[Any] | None:
        """(expiry,) of the owner's token while it is unrevoked and the owner enabled (the expiry is the caller's
        to check); None otherwise."""
        rows = self.db.fetch(_OWNER_TOKEN, {"token_id": token_id, "owner_id": owner_id})
        return (rows[0][0],) if rows else None

    def page(self, owner_id: str, statuses: Sequence[str], offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the owner's jobs, newest first, and how many there are in all."""
        where = [BatchJob.owner_id == owner_id]
        if statuses:
            where.append(BatchJob.status.in_(list(statuses)))
        with self.db.read() as s:
            rows = s.execute(
                _WITH_OWNER.where(*where)
                .order_by(BatchJob.created_at.desc(), BatchJob.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            total = s.execute(select(func.count()).select_from(BatchJob).where(*where)).scalar_one()
        return [_job(r) for r in rows], int(total)

    def with_status(self, statuses: Sequence[str]) -> list[dict[str, Any]]:
        """Every job in one of `statuses`, oldest first (what a starting runner picks up)."""
        with self.db.read() as s:
            rows = s.execute(_WITH_OWNER.where(BatchJob.status.in_(list(statuses))).order_by(BatchJob.created_at))
            return [_job(r) for r in rows]

    def transition(
        self, job_id: str, from_statuses: Sequence[str], values: Mapping[str, Any], audit: Entry | None = None
    ) -> bool:
        """Set `values` (a new status among them) if the job is in one of `from_statuses`; True if it was."""

        def change(tx: Tx) -> bool:
            done = tx.run(
                update(BatchJob).where(BatchJob.id == job_id, _one_of(from_statuses)).values(**values),
                {},
            )
            if done and audit is not None:
                append_in(tx, audit, postgres=self.postgres)
            return bool(done)

        return self.db.transact(change)

    def waiting_uploads(self, created_before: datetime) -> list[str]:
        """Ids of the jobs created before `created_before` that still wait for their upload."""
        with self.db.read() as s:
            rows = s.execute(
                select(BatchJob.id).where(
                    BatchJob.status == "INITIALIZING",
                    BatchJob.intake_ready.is_(False),
                    BatchJob.created_at < created_before,
                )
            )
            return [r[0] for r in rows]

    def expire_upload(self, job_id: str, values: Mapping[str, Any]) -> bool:
        """Set `values` (FAILED) if the job still waits for its upload (not while its upload is being completed:
        one of the two wins); True if it did."""
        waiting = (BatchJob.id == job_id, BatchJob.status == "INITIALIZING", BatchJob.intake_ready.is_(False))
        return bool(self.db.transact(lambda tx: tx.run(update(BatchJob).where(*waiting).values(**values), {})))

    def set(self, job_id: str, values: Mapping[str, Any]) -> None:
        """Set columns of a job whatever its status (counters, expected rows)."""
        self.db.transact(lambda tx: tx.run(update(BatchJob).where(BatchJob.id == job_id).values(**values), {}))

    # ---- chunks -----------------------------------------------------------------------------------------

    def chunk_started(
        self, job_id: str, number: int, worker: str, at: datetime, lease_until: datetime, generation: int | None = None
    ) -> int:
        """Record that `worker` runs chunk `number` (a new row, or the earlier attempt's row taken over); which
        attempt this is, from 1. With `generation`, only while the job is still at it and the chunk is not DONE
        (0 otherwise: a task of a finished chunk run again, as procrastinate retries a vanished worker's task,
        must not write it twice or hold the job's finish back): the job's row is read under a share lock, so a
        producer starting a new generation waits for this to commit, and one that committed first is seen."""
        chunk = (BatchJobChunk.job_id == job_id, BatchJobChunk.number == number)

        def start(tx: Tx) -> int:
            if generation is not None and not _at_generation(tx, job_id, generation):
                return 0
            unfinished = (BatchJobChunk.status != "DONE",) if generation is not None else ()
            moved = tx.run(
                update(BatchJobChunk)
                .where(*chunk, *unfinished)
                .values(
                    status="RUNNING",
                    attempts=BatchJobChunk.attempts + 1,
                    worker=worker,
                    lease_until=lease_until,
                    updated_at=at,
                ),
                {},
            )
            if not moved:
                if unfinished and tx.rows(select(BatchJobChunk.number).where(*chunk), {}):
                    return 0  # already DONE
                tx.run(
                    BatchJobChunk.__table__.insert().values(
                        job_id=job_id,
                        number=number,
                        status="RUNNING",
                        rows=0,
                        attempts=1,
                        worker=worker,
                        lease_until=lease_until,
                        updated_at=at,
                    ),
                    {},
                )
            found = tx.rows(select(BatchJobChunk.attempts).where(*chunk), {})
            return int(found[0][0])

        return self.db.transact(start)

    def chunk_done(self, job_id: str, number: int, rows: int, at: datetime, generation: int | None = None) -> bool:
        """Mark a chunk written with its row count, and recount the job's scored rows from its chunks; with
        `generation`, only while the job is still at it (as `chunk_started`). Whether it was marked."""

        def finish(tx: Tx) -> bool:
            # An exclusive lock: this transaction updates the job's row below, and two that both held a share
            # lock and then updated it would deadlock.
            if generation is not None and not _at_generation(tx, job_id, generation, exclusive=True):
                return False
            tx.run(
                update(BatchJobChunk)
                .where(BatchJobChunk.job_id == job_id, BatchJobChunk.number == number)
                .values(status="DONE", rows=rows, lease_until=None, updated_at=at),
                {},
            )
            scored = (
                select(func.coalesce(func.sum(BatchJobChunk.rows), 0))
                .where(BatchJobChunk.job_id == job_id, BatchJobChunk.status == "DONE")
                .scalar_subquery()
            )
            tx.run(update(BatchJob).where(BatchJob.id == job_id).values(scored_rows=scored), {})
            return True

        return bool(self.db.transact(finish))

    def chunks(self, job_id: str) -> list[dict[str, Any]]:
        """The job's chunks in order: number, status, rows, attempts, worker."""
        query = (
            select(
                BatchJobChunk.number,
                BatchJobChunk.status,
                BatchJobChunk.rows,
                BatchJobChunk.attempts,
                BatchJobChunk.worker,
            )
            .where(BatchJobChunk.job_id == job_id)
            .order_by(BatchJobChunk.number)
        )
        with self.db.read() as s:
            rows = s.execute(query).all()
        return [dict(zip(("number", "status", "rows", "attempts", "worker"), r, strict=True)) for r in rows]

    def forget_chunks(self, job_id: str) -> None:
        """Drop every chunk row of a job (it is run again from its first chunk) and zero its scored rows."""

        def forget(tx: Tx) -> None:
            tx.run(delete(BatchJobChunk).where(BatchJobChunk.job_id == job_id), {})
            tx.run(update(BatchJob).where(BatchJob.id == job_id).values(scored_rows=0), {})

        self.db.transact(forget)

    # ---- the PostgreSQL queue -----------------------------------------------------------------------------

    def next_generation(self, job_id: str) -> int:
        """Start a new run of the job's producer: drop its chunk rows, zero its counts; the new generation."""

        def bump(tx: Tx) -> int:
            # The job's row first, then its chunks: the order chunk_started and chunk_done lock them in.
            tx.run(
                update(BatchJob)
                .where(BatchJob.id == job_id)
                .values(generation=BatchJob.generation + 1, scored_rows=0, total_chunks=None),
                {},
            )
            tx.run(delete(BatchJobChunk).where(BatchJobChunk.job_id == job_id), {})
            return int(tx.rows(select(BatchJob.generation).where(BatchJob.id == job_id), {})[0][0])

        return self.db.transact(bump)

    def chunk_queued(self, job_id: str, number: int, at: datetime) -> None:
        """A chunk of the current run is spooled and queued (PENDING)."""
        self.db.transact(
            lambda tx: tx.run(
                BatchJobChunk.__table__.insert().values(
                    job_id=job_id, number=number, status="PENDING", rows=0, attempts=0, updated_at=at
                ),
                {},
            )
        )

    def in_flight(self, job_id: str) -> int:
        """How many of the job's chunks are queued or running (one prebuilt statement: a producer asks often)."""
        return int(self.db.fetch(_IN_FLIGHT, {"id": job_id})[0][0])

    def last_activity(self, job_id: str) -> datetime | None:
        """The latest change to any of the job's chunks."""
        with self.db.read() as s:
            found = s.execute(select(func.max(BatchJobChunk.updated_at)).where(BatchJobChunk.job_id == job_id))
            return Database.as_datetime(found.scalar_one())

    def live_workers(self, within_seconds: float) -> int:
        """procrastinate workers whose last heartbeat is at most `within_seconds` old (PostgreSQL only)."""
        query = text(
            "SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => :s)"
        )
        with self.db.read() as s:
            return int(s.execute(query, {"s": within_seconds}).scalar_one())

    def open_tasks(self, job_id: str) -> int:
        """The job's procrastinate tasks still queued or running (PostgreSQL only)."""
        query = text(
            "SELECT count(*) FROM procrastinate_jobs WHERE args->>'job_id' = :id AND status IN ('todo', 'doing')"
        )
        with self.db.read() as s:
            return int(s.execute(query, {"id": job_id}).scalar_one())

    def ensure_queue_schema(self, schema_sql: str) -> bool:
        """Apply procrastinate's schema unless its tables exist (under an advisory lock, so several processes may
        start together); True if it was applied."""
        with self.db.engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(84848484)")
            if conn.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar() is not None:
                return False
            conn.connection.driver_connection.execute(schema_sql)  # no parameters: its % signs are literal
            return True


def _at_generation(tx: Tx, job_id: str, generation: int, *, exclusive: bool = False) -> bool:
    """Whether the job is at `generation`, read under a share (or `exclusive`) lock on its row (PostgreSQL;
    SQLite's writer holds the whole database)."""
    locked = select(BatchJob.generation).where(BatchJob.id == job_id).with_for_update(read=not exclusive)
    found = tx.rows(locked, {})
    return bool(found) and int(found[0][0]) == generation
