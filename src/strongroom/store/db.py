"""Engine and sessions for SQLite (default, WAL) and PostgreSQL, with migrations applied at start."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from sqlalchemy import Connection, Engine, Executable, bindparam, create_engine, event, func, literal, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from strongroom.config import Settings
from strongroom.errors import DatabaseFileError, ServiceUnavailable
from strongroom.store.models import COUNT_SHARDS, CredentialCount
from strongroom.store.unchanged import UnchangedReads

if TYPE_CHECKING:
    import psycopg
    from psycopg.pq import ExecStatus

    from strongroom.store import pgloop
    from strongroom.store.pgloop import ConnectionLost, LoopPool

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x5354524F  # "STRO": serialises migrations across server processes
_WAL_KEEP_BYTES = 0  # the WAL is truncated to what the first commit after a checkpoint wrote
_GROUP_MAX = 128  # writes sharing one SQLite transaction (and one fsync) at most
_DEADLOCK = "40P01"  # SQLSTATE of a statement PostgreSQL ended to break a deadlock
UPKEEP_IDLE = 1.0  # seconds without a write after which the committer finishes its upkeeps' work
Upkeep = Callable[[sqlite3.Connection, bool], bool]  # see Database.keep_up
T = TypeVar("T")
Waiter = Future[Any] | asyncio.Future[Any]  # a committer job's: a thread's future or the event loop's
W = TypeVar("W", bound=Waiter)
_Job = tuple[Callable[["Tx"], Any] | None, Waiter | None]  # a write and who waits for it; (None, None) stops
# SQLite primary result codes that mean "the file is busy or unusable right now", not "the query is wrong":
# BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 8, 10, 13, 14, 15})
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"
# What a schema holds, as (kind, name): relations by pg_class.relkind, user-defined types as "t" (composite
# types of relations and array types are their relation's or element's, not listed).
_PG_OBJECTS = """
SELECT c.relkind::text, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
UNION ALL
SELECT 't', t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = current_schema() AND t.typtype IN ('e', 'd', 'r', 'm')
"""
_PG_RELATIONS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE"}
_PG_KINDS = {**_PG_RELATIONS, "S": "SEQUENCE", "c": "TYPE", "t": "TYPE"}
# Dependents before what they depend on: views on tables, tables on (and owning) sequences and on types.
_PG_DROP_ORDER = ("MATERIALIZED VIEW", "VIEW", "FOREIGN TABLE", "TABLE", "SEQUENCE", "TYPE")
log = logging.getLogger("strongroom.store")


_REVISION = re.compile(r"^revision(?:: *str)? *= *[\"'](\w+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision(?:: *[\w |]+)? *= *(?:None|[\"'](\w+)[\"'])", re.MULTILINE)


def head_revision(versions: Path = MIGRATIONS / "versions") -> str | None:
    """The one revision of the migration files that no other revises (None unless exactly one is found, so
    anything unusual, such as a merge or a branch, is left to Alembic)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in versions.glob("*.py"):
        source = script.read_text()
        found, down = _REVISION.findall(source), _DOWN_REVISION.findall(source)
        if len(found) != 1 or len(down) != 1:
            return None
        revisions.add(found[0])
        revised.add(down[0])
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 and revised - {""} <= revisions else None


def _import_postgres() -> None:
    """Bind psycopg and the event-loop pool as module globals: only a PostgreSQL store loads them, so SQLite
    stores and the local CLI commands start without the driver, and the hot path pays no import per call."""
    global ConnectionLost, ExecStatus, LoopPool, pgloop, psycopg
    import psycopg
    from psycopg.pq import ExecStatus

    from strongroom.store import pgloop
    from strongroom.store.pgloop import ConnectionLost, LoopPool


def unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 for a driver error that means "the database cannot serve now" (down, lost, locked, its disk full),
    else None. Its message may reach API clients: it never names the server's paths."""
    if isinstance(exc, PoolTimeoutError):
        return ServiceUnavailable("the database is busy (no free connection); retry shortly")
    if disk_full(exc):  # not "retry shortly": waiting does not help, freeing space does
        return ServiceUnavailable(full_disk("the database"))
    orig: BaseException | None = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return ServiceUnavailable("the database connection was lost; retry shortly")
        orig = exc.orig
        if isinstance(exc, OperationalError) and not isinstance(orig, sqlite3.Error):
            return ServiceUnavailable("the database is unavailable; retry shortly")
    primary = orig.sqlite_errorcode & 0xFF if isinstance(orig, sqlite3.OperationalError) else None
    if primary in (5, 6):
        return ServiceUnavailable("the database is locked by another writer; retry shortly")
    if primary in _SQLITE_UNAVAILABLE:
        return ServiceUnavailable("the database file cannot be used; retry shortly")
    return None


def full_disk(what: str) -> str:
    """The message for a full disk under `what`: what to do about it, not "retry shortly"."""
    return f"the disk holding {what} is full (no space left on the device); free some space, then try again"


def disk_full(exc: BaseException | None) -> bool:
    """Whether a driver error says the database's disk is full: SQLite's SQLITE_FULL, PostgreSQL's disk_full."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL
    return getattr(orig, "sqlstate", None) == _PG_DISK_FULL


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another backend or an in-memory database."""
    parsed = make_url(url)
    db = parsed.database
    return Path(db) if parsed.get_backend_name() == "sqlite" and db and db != ":memory:" else None


def _describe(exc: BaseException) -> str:
    """The driver's error class and code, for logs: never its message, which could quote query parameters."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None) or ""
    return f"{type(orig).__name__} {code}".strip()


def _sqlite_setup(engine: Engine, synchronous: str, busy_ms: int) -> None:
    """WAL for concurrent readers, and explicit BEGIN so writers can take the lock up front. secure_delete zeroes
    a deleted or replaced secret in the file instead of leaving it in free space; journal_size_limit cuts the
    WAL back when it starts over after a checkpoint, so frames holding old secrets do not linger past its end."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")  # explicit: many SQLite builds default to OFF
        cur.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers use BEGIN IMMEDIATE: a deferred transaction that later writes can fail with SQLITE_BUSY
        # without waiting, while IMMEDIATE queues on busy_timeout. Autocommit reads need no BEGIN at all.
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("writer") else "BEGIN")


def _create_private(path: Path) -> None:
    """Create the SQLite file owner-only before SQLite does (its WAL and shm files then take the same mode);
    refuse a file or companion that is a symbolic link (its parent directories may be links)."""
    for file in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm", "-journal"))):
        if os.path.islink(file):  # SQLite would follow it: the store's writes would land wherever it points
            raise DatabaseFileError(
                f"the database file {file} is a symbolic link; refusing to follow it (move the file itself "
                "there, or set STRONGROOM_DATABASE_URL to where it really is)"
            )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Database:
    """Owns the engine; hands out read and write sessions.

    Driver errors meaning "cannot serve now" (server down, connection lost, file locked past `timeout`) leave
    this class as `ServiceUnavailable`, so callers answer 503 instead of 500 and need not know the driver.
    """

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        timeout: float = 30,
        connect_timeout: int = 3,
        echo: bool = False,
        pool_size: int = 10,
        max_overflow: int = 20,
    ) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.where = self._where(url)
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.is_sqlite:
            if (file := sqlite_path(url)) is not None:
                file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                _create_private(file)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": timeout}
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 32
        else:
            _import_postgres()
            # No pre-ping (a round trip per checkout on the hot path): a dead connection is noticed when used,
            # which invalidates the pools, and `fetch` retries once. Short connect timeout: an outage is a
            # quick 503, not a hung worker. statement_timeout bounds a query on a stuck server.
            kwargs["pool_pre_ping"] = False
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = max_overflow
            defaults = {
                "connect_timeout": connect_timeout,
                "options": f"-c statement_timeout={int(timeout * 1000)}",
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            }
            kwargs["connect_args"] = {k: v for k, v in defaults.items() if k not in parsed.query}
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            if sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
                raise ValueError("STRONGROOM_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA")
            _sqlite_setup(self.engine, sqlite_synchronous.upper(), int(timeout * 1000))
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        # Single-statement reads (`fetch`) use an engine of their own. PostgreSQL: a pool in autocommit, as
        # switching a pooled connection in and out of autocommit per checkout would double a read.
        # SQLite: unpooled, for the per-thread connections, so they never starve writers of the pool.
        if self.is_sqlite:
            unpooled = {k: v for k, v in kwargs.items() if k not in ("pool_size", "max_overflow")}
            self._fetch_engine = create_engine(url, poolclass=NullPool, **unpooled)
            _sqlite_setup(self._fetch_engine, sqlite_synchronous.upper(), int(timeout * 1000))
        else:
            self._fetch_engine = create_engine(url, isolation_level="AUTOCOMMIT", **kwargs)
            # A lost connection invalidates its own engine's pool; the other pool's connections died with it.
            for engine, other in ((self.engine, self._fetch_engine), (self._fetch_engine, self.engine)):
                event.listen(engine, "handle_error", self._discard_pool_on_disconnect(other))
        # PostgreSQL hot-path connections, each with its cursor, idle until a thread takes one: a queue costs
        # far less than a SQLAlchemy pool checkout and reset (docs/performance.md).
        self._pg_idle: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self._local = threading.local()
        self._thread_conns: list[Any] = []
        self._unchanged: UnchangedReads | None = None  # see start_hot_reads
        self._compiled: dict[Executable, tuple[str, tuple[str, ...], dict[str, Any], Any]] = {}
        self._numbered: dict[str, tuple[bytes, tuple[str, ...]]] = {}
        self._loop_pool: LoopPool | None = None
        self._planned_pool: LoopPool | None = None  # connections free to sort, for `afetch_planned`
        self._writer = sessionmaker(self.engine.execution_options(writer=True), expire_on_commit=False)
        self._jobs: queue.SimpleQueue[list[_Job]] = queue.SimpleQueue()
        self._held: dict[asyncio.AbstractEventLoop, list[_Job]] = {}  # an event loop's writes of this iteration
        self._queued = 0  # writes handed to the committer and not yet taken
        self._queued_lock = threading.Lock()
        self.batches = 0  # transactions the SQLite committer has committed
        self._committer: threading.Thread | None = None
        self._committer_lock = threading.Lock()
        self._upkeep: dict[str, Upkeep] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """The store the settings name, with their durability and timeout choices."""
        return cls(
            settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            timeout=settings.db_timeout,
            connect_timeout=settings.db_connect_timeout,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_overflow,
        )

    @staticmethod
    def _where(url: str) -> str:
        """The database as host:port/name or file path, for messages: never the password."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            return parsed.database or ":memory:"
        host = parsed.host or parsed.query.get("host") or "localhost"  # ?host=/run/postgresql: a socket dir
        return f"{host}:{parsed.port or 5432}/{parsed.database or ''}"

    def _discard_pools(self) -> None:
        """Drop every pooled connection of both engines (after a disconnect: they all died with the server)."""
        self.engine.dispose(close=False)
        self._fetch_engine.dispose(close=False)
        self._close_idle_pg()

    def _close_idle_pg(self) -> None:
        """Close the idle hot-path connections (in use ones are closed by their thread if found broken)."""
        while True:
            try:
                conn, _ = self._pg_idle.get_nowait()
            except queue.Empty:
                return
            conn.close()

    def _discard_pool_on_disconnect(self, other: Engine) -> Any:
        def on_error(ctx: ExceptionContext) -> None:
            original = ctx.original_exception
            if not ctx.is_disconnect and isinstance(original, psycopg.Error) and pgloop.connection_lost(original):
                ctx.is_disconnect = True  # SQLAlchemy looks at libpq's status, which may not say BAD yet
            if ctx.is_disconnect:
                other.dispose(close=False)
                self._close_idle_pg()

        return on_error

    def _unavailable(self, exc: BaseException) -> ServiceUnavailable | None:
        """Classify and log a driver error (class and code only); None means it is not an outage."""
        error = unavailable(exc)
        if error is not None:
            log.warning("database %s unavailable: %s", self.where, _describe(exc))
        return error

    @contextmanager
    def _outage_is_unavailable(self) -> Iterator[None]:
        """Re-raise an outage-class driver error as ServiceUnavailable; any other error passes unchanged."""
        try:
            yield
        except (DBAPIError, PoolTimeoutError) as exc:
            error = self._unavailable(exc)
            if error is None:
                raise
            raise error from exc

    @property
    def path(self) -> Path | None:
        """The SQLite file, if that is the backend."""
        return sqlite_path(str(self.engine.url))

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent, safe with several processes)."""
        if self._at_head():
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            # SQLite: BEGIN IMMEDIATE, so processes starting together queue for the write lock instead of one
            # failing with SQLITE_BUSY when its read transaction tries to write.
            with self.engine.execution_options(writer=True).begin() as conn:
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except (DBAPIError, PoolTimeoutError) as exc:
            if unavailable(exc) is None:
                raise
            if disk_full(exc):  # at start, not to an API client: the database may be named
                raise ServiceUnavailable(full_disk(f"the database {self.where}")) from exc
            raise ServiceUnavailable(f"cannot use the database at {self.where}: {self._reason(exc)}") from exc

    def _at_head(self) -> bool:
        """True when the database records the newest revision of the migration files: a store that needs no
        migration is opened without loading Alembic (a third of a local command's start-up)."""
        head = head_revision()
        if head is None:
            return False
        try:
            with self.engine.connect() as conn:
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        except DBAPIError:  # no such table yet (a new store), or the database cannot answer: let Alembic say
            return False
        return current == [head]

    def blank_schema(self) -> frozenset[tuple[str, str]] | None:
        """PostgreSQL: when the connection's schema holds no table or view, the (kind, name) of what it does hold
        (sequences, types), for `drop_created`; None when it holds one (a store or anything else) or on SQLite."""
        if self.is_sqlite:
            return None
        with self._outage_is_unavailable(), self.engine.connect() as conn:
            held = frozenset((str(kind), str(name)) for kind, name in conn.execute(text(_PG_OBJECTS)))
        return None if any(kind in _PG_RELATIONS for kind, _ in held) else held

    def drop_created(self, before: frozenset[tuple[str, str]]) -> None:
        """Drop from a schema `blank_schema` found blank (`before`) every table, view, sequence and type it did not
        hold then, in one transaction: a refused restore leaves the database as empty as it found it."""
        quote = self.engine.dialect.identifier_preparer.quote
        with self._outage_is_unavailable(), self.engine.begin() as conn:
            schema = quote(str(conn.scalar(text("SELECT current_schema()"))))
            made = sorted({(str(k), str(n)) for k, n in conn.execute(text(_PG_OBJECTS))} - before)
            for kind in _PG_DROP_ORDER:
                names = [f"{schema}.{quote(name)}" for k, name in made if _PG_KINDS.get(k, k) == kind]
                if names:  # one statement per kind, so foreign keys among them need no order
                    conn.execute(text(f"DROP {kind} IF EXISTS {', '.join(names)} CASCADE"))

    def _reason(self, exc: BaseException) -> str:
        """The driver's first line of explanation (libpq names host and port), with any password masked."""
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        password = self.engine.url.password
        return first.replace(str(password), "***") if password else first

    def fetch(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Run one prebuilt read statement outside a transaction and return its rows as tuples.

        This is the hot path (token lookup, get, list page). On SQLite the statement is compiled once and
        run on a per-thread autocommit sqlite3 connection: SQLAlchemy's per-execution and per-row work
        costs about three times the query itself. Column values then come back as SQLite stores them
        (dates as 'YYYY-MM-DD HH:MM:SS.ffffff' text); callers read dates through `as_wire_date`.
        """
        try:
            if not self.is_sqlite:
                return self._pg_fetch(statement, params)
            sql, values = self._sqlite_bind(statement, params)
            if sql is not None:
                try:
                    return self._thread_sqlite().execute(sql, values).fetchall()
                except sqlite3.Error as exc:
                    raise _wrap(exc, sql) from exc
            with self._fetch_engine.connect() as conn:
                return conn.execute(statement, params).all()
        except (DBAPIError, PoolTimeoutError) as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated and not self.is_sqlite:
                return self._fetch_again(statement, params)
            error = self._unavailable(exc)
            if error is None:
                raise
            raise error from exc

    def start_hot_reads(self) -> None:
        """Let `fetch_hot` answer from memory (SQLite files only; for the one long-lived store of a server
        process: see store/unchanged.py on why a file is attached once per process)."""
        if self.path is not None:
            self._unchanged = UnchangedReads(self.path)

    def _thread_read(self) -> None:
        self._thread_sqlite().execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()

    def fetch_hot(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """`fetch`, answered from memory on SQLite while the database is unchanged since the same statement and
        parameters were read (a commit by any connection, of any process, is seen by the next call)."""
        cache = self._unchanged
        if cache is None:
            return self.fetch(statement, params)
        stamp = cache.stamp()
        key = (statement, *params.values())
        rows = cache.get(stamp, key)
        if rows is None:
            rows = self.fetch(statement, params)
            if not cache.tried:
                cache.attach(self._thread_read)
            elif rows:
                cache.put(stamp, key, rows)
        return rows

    def _pg_fetch(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """PostgreSQL: a prebuilt read on a raw pooled connection (SQLAlchemy only for expanding IN lists)."""
        sql, named = self._pg_bind(statement, params)
        if sql is not None:
            return self._pg_execute(sql, named)
        with self._fetch_engine.connect() as conn:
            return conn.execute(statement, params).all()

    def fetch_planned(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """`fetch` for a read whose best plan depends on its values and may sort (a search, a shared list).

        PostgreSQL: on a pooled autocommit connection, planned as any query is (no transaction, no ORM
        session), not on a hot-path one: their generic, sort-less plans walked all of a large owner's rows for a
        search (145 ms instead of 0.5). SQLite: `fetch`.
        """
        if self.is_sqlite:
            return self.fetch(statement, params)
        sql, named = self._pg_bind(statement, params)
        with self._outage_is_unavailable():
            if sql is None:
                with self._fetch_engine.connect() as conn:
                    return conn.execute(statement, params).all()
            try:
                return self._pooled_fetch(sql, named)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            return self._pooled_fetch(sql, named)  # a pooled connection had gone stale: once more, on a fresh one

    def _pooled_fetch(self, sql: str, named: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """PostgreSQL: `sql` on a connection of the autocommit pool; a lost connection drops the pools."""
        proxy = self._fetch_engine.raw_connection()
        try:
            cur = proxy.driver_connection.cursor()
            cur.execute(sql, named)
            return cur.fetchall()
        except psycopg.Error as exc:
            broken = pgloop.connection_lost(exc, proxy.driver_connection)
            if broken:  # the server went away: so did the pools' other connections
                proxy.invalidate()
                self._discard_pools()
            raise DBAPIError.instance(
                sql, None, exc, psycopg.Error, hide_parameters=True, connection_invalidated=broken
            ) from exc
        finally:
            proxy.close()

    def _fetch_again(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Retry a read once on a fresh connection: a pooled one went stale (the server restarted)."""
        with self._outage_is_unavailable():
            return self._pg_fetch(statement, params)

    def write_one(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """PostgreSQL: run one self-contained write statement (atomic by itself) in autocommit.

        A data-modifying CTE does a create or delete and its count change in one statement: one round
        trip instead of BEGIN, two statements and COMMIT. SQLite has no such CTEs; it uses `transact`.
        """
        if self.is_sqlite:
            raise TypeError("write_one is for PostgreSQL; SQLite writes go through transact")
        sql, named = self._pg_bind(statement, params)
        with self._outage_is_unavailable():  # never retried: a lost reply may hide a committed write
            if sql is None:
                with self._fetch_engine.connect() as conn:
                    result = conn.execute(statement, params)
                    return result.all() if result.returns_rows else []
            return self._pg_execute(sql, named)

    def start_loop_pool(self, size: int) -> None:
        """PostgreSQL: run `afetch`, `afetch_planned` and `awrite_one` on the running event loop from now on (see
        `pgloop`).
        One loop at a time: while another loop has the pool, this one's statements go to worker threads."""
        if not self.is_sqlite and self._loop_pool is None:
            self._loop_pool = LoopPool(self._pg_connect, size)
            self._planned_pool = LoopPool(partial(self._pg_connect, hot=False), size)

    def stop_loop_pool(self) -> None:
        """Close the running loop's connections (only that loop may: they are registered with it)."""
        pool = self._pool_for_loop()
        if pool is not None:
            planned, self._loop_pool, self._planned_pool = self._planned_pool, None, None
            pool.close()
            if planned is not None:
                planned.close()

    def on_loop(self) -> bool:
        """True when the running event loop has its own PostgreSQL connections (`start_loop_pool`)."""
        return self._pool_for_loop() is not None

    def _pool_for_loop(self, planned: bool = False) -> LoopPool | None:
        pool = self._planned_pool if planned else self._loop_pool
        return pool if pool is not None and pool.serves_caller() else None

    async def afetch(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """`fetch` for async callers: on the event loop's own PostgreSQL connections when it has them,
        else inline on SQLite (reads never wait there) or in a worker thread."""
        return await self._aread(self._pool_for_loop(), self.fetch, statement, params)

    async def afetch_planned(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """`fetch_planned` for async callers: on the event loop's connections that may sort and plan as
        PostgreSQL chooses (custom plans for the values first, a generic one once it proves as cheap), unlike
        `afetch`'s; else as `fetch_planned`, inline on SQLite or in a worker thread."""
        return await self._aread(self._pool_for_loop(planned=True), self.fetch_planned, statement, params)

    async def _aread(
        self,
        pool: LoopPool | None,
        fetch: Callable[[Executable, Mapping[str, Any]], Sequence[Sequence[Any]]],
        statement: Executable,
        params: Mapping[str, Any],
    ) -> Sequence[Sequence[Any]]:
        """A read on `pool`, retried once on a fresh connection if a pooled one went stale; without the pool (or
        SQL it can send), `fetch` inline on SQLite or in a worker thread."""
        sql, values = (None, []) if pool is None else self._pg_numbered(statement, params)
        if pool is None or sql is None:
            if self.is_sqlite:
                return fetch(statement, params)
            return await asyncio.get_running_loop().run_in_executor(None, fetch, statement, params)
        try:
            return await self._loop_execute(pool, sql, values)
        except _Lost:  # a pooled connection went stale (the server restarted): retry once on a fresh one
            pass
        try:
            return await self._loop_execute(pool, sql, values)
        except _Lost as lost:
            raise lost.error from None

    async def awrite_one(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """`write_one` for async callers (never retried: a lost reply may hide a committed write)."""
        pool = self._pool_for_loop()
        sql, values = self._pg_numbered(statement, params) if pool is not None else (None, [])
        if pool is None or sql is None:
            return await asyncio.get_running_loop().run_in_executor(None, self.write_one, statement, params)
        try:
            return await self._loop_execute(pool, sql, values)
        except _Lost as lost:
            raise lost.error from None

    async def awrite_together(self, together: Together, params: Mapping[str, Any]) -> Any:
        """`awrite_one` of `together.one(params)`; on the event loop's connections, writes of the same kind that
        arrive while two are in flight wait and go on together, as one statement (`pgloop.Gathered`)."""
        # `many` runs on the connections where PostgreSQL plans as it chooses: with sorting priced out, as on the
        # hot path's, its plan ran hundreds of times slower.
        return await self._gathered(together, params, self.awrite_one, self._write_together, planned=True)

    async def afetch_together(self, together: Together, params: Mapping[str, Any]) -> Any:
        """`afetch` of `together.one(params)`; on the event loop's connections, reads of the same kind that
        arrive while two are in flight wait and go on together, as one statement (`pgloop.Gathered`)."""
        return await self._gathered(together, params, self.afetch, self._fetch_together, planned=False)

    async def _gathered(
        self,
        together: Together,
        params: Mapping[str, Any],
        alone: Callable[[Executable, Mapping[str, Any]], Awaitable[Any]],
        many: Callable[[Together, LoopPool, list[Mapping[str, Any]]], Awaitable[list[Any]]],
        *,
        planned: bool,
    ) -> Any:
        """`alone` of `together.one(params)` without the loop's connections; with them, through the `Gathered`
        this loop keeps for `together`: alone while fewer than two are in flight, else by `many` (on the
        `planned` connections, if so)."""
        pool = self._pool_for_loop()
        if pool is None:
            return await alone(together.one(params), params)
        gathered = pool.gathered.get(together)
        if gathered is None:
            one = partial(_alone, alone, together)
            several = partial(many, together, (self._pool_for_loop(planned=True) if planned else None) or pool)
            gathered = pool.gathered[together] = pgloop.Gathered(one, several)
        return await gathered(params)

    async def _write_together(self, together: Together, pool: LoopPool, items: list[Mapping[str, Any]]) -> list[Any]:
        """Several writes as one statement of `together.many`. If a constraint or a value fails it, or
        PostgreSQL ends it as one side of a deadlock, each write goes again alone: only a write that caused the
        failure fails, with its own error."""
        sql, values = self._together(together, items)
        try:
            rows = await self._loop_execute(pool, sql, values)
        except _Lost as lost:
            raise lost.error from None
        except (IntegrityError, DataError, ServiceUnavailable) as exc:
            # an outage reaches every write; a deadlock (classed with outages, as a 503) is only this statement's
            if isinstance(exc, ServiceUnavailable) and getattr(exc.__cause__, "sqlstate", None) != _DEADLOCK:
                raise
            return [await pgloop.outcome(_alone(self.awrite_one, together, p)) for p in items]
        return together.outcomes(rows, len(items))

    async def _fetch_together(self, together: Together, pool: LoopPool, items: list[Mapping[str, Any]]) -> list[Any]:
        """Several reads as one statement of `together.many`, retried once on a fresh connection if a pooled
        one went stale (as `afetch` does)."""
        sql, values = self._together(together, items)
        try:
            rows = await self._loop_execute(pool, sql, values)
        except _Lost:
            try:
                rows = await self._loop_execute(pool, sql, values)
            except _Lost as lost:
                raise lost.error from None
        return together.outcomes(rows, len(items))

    def _together(self, together: Together, items: list[Mapping[str, Any]]) -> tuple[bytes, list[Any]]:
        """`together.many`'s SQL and values for `items`: their `fields`, bound as their statement alone binds
        them, in the one JSON parameter `given`."""
        given = []
        for ord_, params in enumerate(items, 1):
            bound = self._pg_bind(together.one(params), params)[1]
            given.append({**{name: bound.get(name) for name in together.fields}, "ord": ord_})
        sql, values = self._pg_numbered(together.many, {"given": orjson.dumps(given, default=_bytea_text)})
        if sql is None:
            raise TypeError("a statement of several must compile to SQL the loop's connections can send")
        return sql, values

    async def _loop_execute(self, pool: LoopPool, sql: bytes, values: list[Any]) -> Sequence[Sequence[Any]]:
        """Run on the loop's pool; driver errors leave as SQLAlchemy's classes, outages as ServiceUnavailable
        (or `_Lost`, carrying it, when the connection was lost and a read may retry)."""
        try:
            return await pool.execute(sql, values)
        except ConnectionLost:  # the pool has dropped the lost connection and its idle siblings already
            self._discard_pools()
            error = ServiceUnavailable("the database connection was lost; retry shortly")
            log.warning("database %s unavailable: connection lost", self.where)
            raise _Lost(error) from None
        except (psycopg.Error, DBAPIError) as exc:  # DBAPIError: a new connection could not be opened
            wrapped = (
                exc
                if isinstance(exc, DBAPIError)
                else DBAPIError.instance(sql.decode(), None, exc, psycopg.Error, hide_parameters=True)
            )
            outage = self._unavailable(wrapped)
            if outage is not None:
                raise outage from exc
            raise wrapped from exc

    def _pg_numbered(self, statement: Executable, params: Mapping[str, Any]) -> tuple[bytes | None, list[Any]]:
        """PostgreSQL: SQL text with `$n` placeholders, compiled once, and its values in order."""
        sql, named = self._pg_bind(statement, params)
        if sql is None:
            return None, []
        numbered = self._numbered.get(sql)
        if numbered is None:
            numbered = self._numbered[sql] = pgloop.numbered(sql)
        text, names = numbered
        return text, [named[n] for n in names]

    def _pg_bind(self, statement: Executable, params: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """PostgreSQL: SQL text compiled once, and its named values (None: let SQLAlchemy run it)."""
        compiled = self._compiled.get(statement)
        if compiled is None:
            c = statement.compile(dialect=self._fetch_engine.dialect)
            compiled = self._compiled[statement] = (str(c), (), c.params, c._bind_processors or None)
        sql, _, literals, procs = compiled
        if "POSTCOMPILE" in sql:
            return None, {}
        named = {**literals, **params}
        if procs:
            for name, proc in procs.items():
                if named.get(name) is not None:
                    named[name] = proc(named[name])
        return sql, named

    def _pg_execute(self, sql: str, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """Run on an idle autocommit psycopg connection; psycopg prepares statements it sees repeatedly."""
        try:
            conn, cur = self._pg_checkout()
        except psycopg.Error as exc:  # a new connection ended while being set up: lost, so a read retries
            lost = pgloop.connection_ended(exc.sqlstate)
            raise DBAPIError.instance(
                sql, None, exc, psycopg.Error, hide_parameters=True, connection_invalidated=lost
            ) from exc
        try:
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.pgresult.status == ExecStatus.TUPLES_OK else []
        except psycopg.Error as exc:
            broken = pgloop.connection_lost(exc, conn)
            if broken:  # the server went away: this connection and every idle sibling are dead
                conn.close()
                self._discard_pools()
            else:
                self._pg_idle.put((conn, cur))
            raise DBAPIError.instance(
                sql, None, exc, psycopg.Error, hide_parameters=True, connection_invalidated=broken
            ) from exc
        self._pg_idle.put((conn, cur))
        return rows

    def _pg_checkout(self) -> tuple[Any, Any]:
        """An idle hot-path connection and its cursor, or a new one (at most one per concurrent caller)."""
        try:
            return self._pg_idle.get_nowait()
        except queue.Empty:
            pass
        conn = self._pg_connect()
        return conn, conn.cursor()

    def _pg_connect(self, hot: bool = True) -> Any:
        """A psycopg connection of our own: the engine's connect settings and timeouts, autocommit; `hot`, with
        the planner settings of the hot path's prepared statements."""
        try:
            proxy = self._fetch_engine.raw_connection()
        except psycopg.Error as exc:  # a failed connect leaves the pool as the driver's own error: wrap it too
            raise DBAPIError.instance("connect", None, exc, psycopg.Error, hide_parameters=True) from exc
        conn = proxy.driver_connection
        proxy.detach()  # ours from now on: the engine's pool neither counts nor resets it
        # Every hot-path statement is an index lookup or an ordered index range. Sorting is priced out so that
        # a cached generic plan, made while the table was small, cannot choose "fetch the owner's rows, then
        # sort" and keep it after the owner has 100 000 credentials.
        # They are also planned once, not per execution. With more than one owner in the statistics PostgreSQL
        # rated the generic list-page plan above a custom one and re-planned every page; the plan is the same
        # index range for every parameter value.
        if not hot:
            return conn
        try:
            conn.execute("SET enable_sort = off")
            conn.execute("SET plan_cache_mode = force_generic_plan")
        except psycopg.Error:  # ended as it was set up (a server restarting): the caller tells lost from failed
            conn.close()
            raise
        return conn

    def _sqlite_bind(self, statement: Executable, params: Mapping[str, Any]) -> tuple[str | None, list[Any]]:
        """SQL text compiled once per statement, and its positional values (None: let SQLAlchemy run it)."""
        compiled = self._compiled.get(statement)
        if compiled is None:
            c = statement.compile(dialect=self.engine.dialect)
            names = tuple(c.positiontup or ())
            processors = c._bind_processors  # type conversions (dates); SQLAlchemy applies these itself
            procs = tuple(processors.get(n) for n in names) if processors else None
            compiled = self._compiled[statement] = (str(c), names, c.params, procs)
        sql, names, literals, procs = compiled
        if "POSTCOMPILE" in sql:  # expanding IN lists need SQLAlchemy to render them
            return None, []
        values = [params[n] if n in params else literals[n] for n in names]
        if procs:
            values = [v if proc is None or v is None else proc(v) for v, proc in zip(values, procs, strict=True)]
        return sql, values

    def _thread_sqlite(self) -> Any:
        """This thread's raw sqlite3 connection (pragmas applied, autocommit), opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            proxy = self._fetch_engine.raw_connection()
            self._thread_conns.append(proxy)
            conn = self._local.conn = proxy.driver_connection
        return conn

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._outage_is_unavailable(), self._reader() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction committed on exit; an outage (even at commit) is ServiceUnavailable, so unacknowledged."""
        with self._outage_is_unavailable(), self._writer() as session, session.begin():
            yield session

    def transact(self, fn: Callable[[Tx], T], *, one_change: bool = False) -> T:
        """Run `fn` in a write transaction and return its result once the transaction is durable.

        On SQLite, writes are serialised by the database anyway and each commit costs an fsync (~4 ms here),
        so concurrent writes are group-committed: one thread runs the queued writes in one transaction,
        each in its own SAVEPOINT (a failing write rolls back alone), and one COMMIT makes them all durable.
        `one_change` promises that only the first change `fn` makes can fail for a reason of its own (a
        duplicate name, say): SQLite undoes a failed statement by itself, so such a write needs no savepoint
        (two calls into SQLite fewer, each a GIL hand-off between the committer and the request threads). Should
        a later step fail anyway (the disk, say), the whole batch rolls back and fails: nothing half-written
        is ever committed.
        PostgreSQL already groups WAL flushes across concurrent transactions, so there `fn` runs in its own
        transaction in the calling thread. Either way `fn` must do all its database work through `Tx`.
        An outage (even at COMMIT) raises ServiceUnavailable: the write was not acknowledged.
        """
        with self._outage_is_unavailable():
            if not self.is_sqlite:
                with self.engine.begin() as conn:
                    tx = _ConnectionTx(conn)
                    result = fn(tx)
                    for statement, params in tx.deferred.values():
                        tx.run(statement, params)
                    _apply_counts(tx, "postgresql", tx.counts)
                    return result
            return self._enqueue(fn, one_change, Future()).result()

    async def atransact(self, fn: Callable[[Tx], T], *, one_change: bool = False) -> T:
        """`transact` for the event loop: on SQLite the write joins the committer's next batch straight from
        the loop (no worker thread between them: two thread hand-offs per write instead of four); on
        PostgreSQL it runs in a worker thread."""
        if not self.is_sqlite:
            return await asyncio.get_running_loop().run_in_executor(None, lambda: self.transact(fn))
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        try:  # `_outage_is_unavailable`, inline: a generator-based context manager per write costs more
            return await self._enqueue(fn, one_change, waiter)
        except (DBAPIError, PoolTimeoutError) as exc:
            error = self._unavailable(exc)
            if error is None:
                raise
            raise error from exc

    def _enqueue(self, fn: Callable[[Tx], T], one_change: bool, waiter: W) -> W:
        """Queue `fn` for the committer's next batch; `waiter` (a thread's or the event loop's future) gets
        its outcome once the batch is durable. An event loop's writes are handed over together once per
        iteration of the loop: handed one at a time, the committer (woken at once, on a shared core) took them
        one at a time, and most batches held a single write and paid a whole fsync for it."""
        job: _Job = (_OneChange(fn) if one_change else fn, waiter)
        if not isinstance(waiter, asyncio.Future):
            self._hand_over([job])
            return waiter
        loop = waiter.get_loop()
        held = self._held.get(loop)
        if held is None:
            self._held[loop] = held = []
            loop.call_soon(self._release, loop)
        held.append(job)
        return waiter

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._hand_over(self._held.pop(loop))

    def _hand_over(self, jobs: list[_Job]) -> None:
        with self._queued_lock:
            self._queued += len(jobs)
        self._jobs.put(jobs)
        if self._committer is None:
            self._start_committer()

    def keep_up(self, name: str, upkeep: Upkeep) -> None:
        """SQLite: have the committer call `upkeep(conn, idle)` on its connection, outside any transaction,
        after each batch it commits (`idle` False) and, while an upkeep says it has work left (returns True),
        whenever no write has come for `UPKEEP_IDLE` seconds (`idle` True). An upkeep commits its own work;
        its failure is logged and never reaches a write. One upkeep per `name`."""
        self._upkeep[name] = upkeep

    def _keep_up(self, conn: sqlite3.Connection, idle: bool) -> tuple[bool, bool]:
        """Run the upkeeps: (whether one has work left, whether one failed)."""
        behind = failed = False
        for name, upkeep in list(self._upkeep.items()):
            try:
                behind = upkeep(conn, idle) or behind
            except Exception as exc:  # the writes it follows are durable and answered: log, retry later
                log.warning("store upkeep %s failed: %s", name, _describe(exc))
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                behind = failed = True
        return behind, failed

    def queued_writes(self) -> int:
        """How many writes wait for the SQLite committer to take them (not those of its running batch)."""
        return self._queued

    def _start_committer(self) -> None:
        with self._committer_lock:
            if self._committer is None:
                self._committer = threading.Thread(target=self._commit_loop, name="strongroom-commit", daemon=True)
                self._committer.start()

    def _commit_loop(self) -> None:
        """Take every queued write, run them in one transaction, then acknowledge them together.

        The loop must outlive any database error: were it to die, every later write would wait forever. A
        connection that cannot be opened (or fails beyond a rollback) fails its batch and is reopened for
        the next one.
        """
        proxy: Any = None
        stopping = False
        behind = False  # an upkeep has work left for an idle moment
        try:
            while not stopping:
                try:
                    batch = self._jobs.get(timeout=UPKEEP_IDLE if behind and proxy is not None else None)
                except queue.Empty:
                    while self._jobs.empty():
                        behind, failed = self._keep_up(proxy.driver_connection, idle=True)
                        if not behind or failed:
                            break
                    continue
                while len(batch) < _GROUP_MAX:
                    try:
                        batch += self._jobs.get_nowait()
                    except queue.Empty:
                        break
                with self._queued_lock:
                    self._queued -= len(batch)
                stopping = any(fn is None for fn, _ in batch)
                batch = [job for job in batch if job[0] is not None]
                if not batch:
                    continue
                try:
                    if proxy is None:  # pragmas applied, autocommit: BEGIN is issued by the batch itself
                        proxy = self._fetch_engine.raw_connection()
                        tx = _SqliteTx(self, proxy.driver_connection)
                    if tx.commit_batch(batch) and self._upkeep:
                        behind = self._keep_up(proxy.driver_connection, idle=False)[0]
                except Exception as exc:
                    error = _wrap(exc, "BEGIN") if isinstance(exc, sqlite3.Error) else exc
                    _settle([waiter for _, waiter in batch], [(False, error)] * len(batch))
                    if proxy is not None:
                        proxy.invalidate()
                        proxy = None
        finally:
            if proxy is not None:
                proxy.close()

    @staticmethod
    def as_datetime(value: datetime | str | None) -> datetime | None:
        """A date column from `fetch`, as an aware UTC datetime, whichever backend produced it."""
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        if value is not None and value.tzinfo is None:  # stored as naive UTC
            return value.replace(tzinfo=UTC)
        return value

    @staticmethod
    def as_wire_date(value: datetime | str) -> str:
        """A date column from `fetch` in the API's RFC 3339 form, without a parse on SQLite."""
        if isinstance(value, str):
            return f"{value[:10]}T{value[11:26]}Z"
        return value.isoformat(timespec="microseconds")[:26] + "Z"

    def dispose(self) -> None:
        """Close every connection; queued writes are finished first."""
        if self._committer is not None:
            self._jobs.put([(None, None)])  # the committer finishes what is queued, then exits
            self._committer.join()
            self._committer = None
        for conn in self._thread_conns:
            conn.close()
        self._thread_conns.clear()
        self._close_idle_pg()
        self.engine.dispose()
        self._fetch_engine.dispose()
        if self._unchanged is not None:  # last: closing its descriptor drops the process's locks on the file
            self._unchanged.close()


@dataclass(frozen=True, eq=False)
class Together:
    """A PostgreSQL write (or read) that may go on together with others of its kind (`Database.awrite_together`).

    `one(params)` is the statement of a write alone. `many` is the statement of several: its parameter `given`
    is a JSON array with an object per write, in order, holding the write's `fields` and `ord` (1, 2, ...);
    bytes as bytea's text form. `outcomes(rows, n)` gives each of the n writes what `awrite_one` would have
    returned for it, or the exception it would have raised. (A read goes together the same way, through
    `afetch_together`.)
    """

    one: Callable[[Mapping[str, Any]], Executable]
    many: Executable
    fields: tuple[str, ...]
    outcomes: Callable[[Sequence[Sequence[Any]], int], list[Any]]


async def _alone(
    run: Callable[[Executable, Mapping[str, Any]], Awaitable[Any]], together: Together, params: Mapping[str, Any]
) -> Any:
    """`run` (`awrite_one` or `afetch`) of one write or read of `together`, alone."""
    return await run(together.one(params), params)


def _bytea_text(value: Any) -> str:
    """JSON for what orjson does not write itself: bytes (or psycopg's `Binary` of them, which SQLAlchemy's
    bind processor makes), as bytea's hex text form."""
    if isinstance(value, psycopg.Binary):
        value = value.obj
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    raise TypeError(type(value).__name__)


class _Lost(Exception):
    """A loop-pool connection was lost; carries the 503 to raise if the statement is not retried."""

    def __init__(self, error: ServiceUnavailable) -> None:
        self.error = error


class Tx(Protocol):
    """The database work of one write: prebuilt Core statements only, so SQLite can run them unwrapped."""

    def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]: ...

    def run(self, statement: Executable, params: Mapping[str, Any]) -> int: ...

    def count(self, owner_id: str, credential_type: str, delta: int) -> None:
        """Adjust an owner's per-type credential count when this write commits (summed per transaction)."""

    @property
    def memo(self) -> dict[Hashable, Any]:
        """Values a write keeps for the later writes of its transaction (a write that fails takes its own back)."""

    def at_commit(self, key: Hashable, statement: Executable, params: Mapping[str, Any]) -> None:
        """Run `statement` once just before the transaction commits, with the last `params` given for `key`."""


def _count_upsert(dialect: Any) -> Executable:
    """Add `delta` to one (owner, type) count, creating the row on first use (shards: see CredentialCount)."""
    stmt = dialect.insert(CredentialCount).values(
        owner_id=bindparam("owner"), credential_type=bindparam("type"), shard=count_shard(dialect), n=bindparam("delta")
    )
    return stmt.on_conflict_do_update(
        index_elements=["owner_id", "credential_type", "shard"], set_={"n": CredentialCount.n + stmt.excluded.n}
    )


def count_shard(dialect: Any) -> Any:
    """The count shard this connection writes: its PostgreSQL backend's process id modulo the shards."""
    return func.pg_backend_pid() % COUNT_SHARDS if dialect is postgresql else literal(0)


_COUNT_UPSERT = {"sqlite": _count_upsert(sqlite), "postgresql": _count_upsert(postgresql)}


def _apply_counts(tx: Tx, dialect: str, counts: Mapping[tuple[str, str], int]) -> None:
    for (owner_id, credential_type), delta in counts.items():
        if delta:
            tx.run(_COUNT_UPSERT[dialect], {"owner": owner_id, "type": credential_type, "delta": delta})


class _ConnectionTx:
    """A write on a SQLAlchemy connection inside `engine.begin()` (PostgreSQL)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.counts: dict[tuple[str, str], int] = {}
        self.memo: dict[Hashable, Any] = {}
        self.deferred: dict[Hashable, tuple[Executable, Mapping[str, Any]]] = {}

    def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return self._conn.execute(statement, params).all()

    def run(self, statement: Executable, params: Mapping[str, Any]) -> int:
        return int(self._conn.execute(statement, params).rowcount)

    def count(self, owner_id: str, credential_type: str, delta: int) -> None:
        key = (owner_id, credential_type)
        self.counts[key] = self.counts.get(key, 0) + delta

    def at_commit(self, key: Hashable, statement: Executable, params: Mapping[str, Any]) -> None:
        self.deferred[key] = (statement, params)


class _OneChange:
    """A write whose first change is the only step that can fail for a reason of its own
    (`Database.transact(..., one_change=True)`)."""

    def __init__(self, fn: Callable[[Tx], Any]) -> None:
        self.fn = fn

    def __call__(self, tx: Tx) -> Any:
        return self.fn(tx)


class _SqliteTx:
    """The committer's writes on its raw sqlite3 connection.

    Each queued write gets a SAVEPOINT, opened lazily before its first change, so a write that fails
    rolls back alone (a `_OneChange` needs none: see `Database.transact`); count changes are summed and
    applied once per batch, and statements deferred with `at_commit` run once, just before COMMIT.
    """

    def __init__(self, db: Database, conn: sqlite3.Connection) -> None:
        self._db = db
        self._conn = conn
        self._savepoint = False  # this write has opened its savepoint
        self._needs_savepoint = True
        self._pending: dict[tuple[str, str], int] = {}
        self._changed = False  # this write has run a statement that may change rows
        self.memo: dict[Hashable, Any] = {}
        self._deferred: dict[Hashable, tuple[Executable, Mapping[str, Any]]] = {}

    def _execute(self, statement: Executable, params: Mapping[str, Any]) -> sqlite3.Cursor:
        sql, values = self._db._sqlite_bind(statement, params)
        if sql is None:
            raise ValueError("write statements with expanding IN lists are not supported on this path")
        dml = getattr(statement, "is_dml", False)
        try:
            if self._needs_savepoint and not self._savepoint and dml:
                self._conn.execute("SAVEPOINT w")
                self._savepoint = True
            cursor = self._conn.execute(sql, values)
            self._changed = self._changed or dml  # may have changed rows (RETURNING counts them only as read)
            return cursor
        except sqlite3.Error as exc:
            raise _wrap(exc, sql) from exc

    def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return self._execute(statement, params).fetchall()

    def run(self, statement: Executable, params: Mapping[str, Any]) -> int:
        return self._execute(statement, params).rowcount

    def count(self, owner_id: str, credential_type: str, delta: int) -> None:
        key = (owner_id, credential_type)
        self._pending[key] = self._pending.get(key, 0) + delta

    def at_commit(self, key: Hashable, statement: Executable, params: Mapping[str, Any]) -> None:
        self._deferred[key] = (statement, params)

    def _run_one(self, fn: Callable[[Tx], Any], counts: dict[tuple[str, str], int]) -> tuple[bool, Any]:
        self._savepoint = False
        self._needs_savepoint = not isinstance(fn, _OneChange)
        self._pending = {}
        self._changed = False
        memo, deferred = dict(self.memo), dict(self._deferred)
        try:
            result = fn(self)
        except Exception as exc:  # handed to its caller, who raises it
            if self._savepoint:
                self._conn.execute("ROLLBACK TO w")
                self._conn.execute("RELEASE w")
            elif self._changed:  # no savepoint to undo what it did: the batch must not commit
                raise
            self.memo, self._deferred = memo, deferred
            return False, exc
        if self._savepoint:
            self._conn.execute("RELEASE w")
        for key, delta in self._pending.items():
            counts[key] = counts.get(key, 0) + delta
        return True, result

    def commit_batch(self, batch: list[tuple[Any, Any]]) -> bool:
        """One transaction for the batch; futures resolve only after COMMIT returned (the data is on disk).
        True if it committed."""
        conn = self._conn
        counts: dict[tuple[str, str], int] = {}
        self.memo, self._deferred = {}, {}
        committed = True
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [self._run_one(fn, counts) for fn, _ in batch]
            self._needs_savepoint = False  # the batch's own statements need no savepoint
            for statement, params in self._deferred.values():
                self.run(statement, params)
            _apply_counts(self, "sqlite", counts)
            conn.execute("COMMIT")
            self._db.batches += 1
        except Exception as exc:  # BEGIN, a savepoint or COMMIT failed: nothing in the batch is durable
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _wrap(exc, "COMMIT") if isinstance(exc, sqlite3.Error) else exc
            outcomes, committed = [(False, error)] * len(batch), False
        _settle([waiter for _, waiter in batch], outcomes)
        return committed


def _settle(waiters: Sequence[Waiter], outcomes: Sequence[tuple[bool, Any]]) -> None:
    """Hand each waiter its outcome `(ok, result or exception)`, once: a thread's future directly, the event
    loop's futures in one call per loop (one wake-up of the loop per batch, not one per write)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for waiter, (ok, value) in zip(waiters, outcomes, strict=True):
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), []).append((waiter, ok, value))
        elif waiter.done():
            continue
        elif ok:
            waiter.set_result(value)
        else:
            waiter.set_exception(value)
    for loop, settled in by_loop.items():
        with suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_on_loop, settled)


def _settle_on_loop(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for waiter, ok, value in settled:
        if waiter.done():  # its caller was cancelled meanwhile
            continue
        if ok:
            waiter.set_result(value)
        else:
            waiter.set_exception(value)


def _wrap(exc: sqlite3.Error, sql: str) -> DBAPIError:
    """The SQLAlchemy exception class for a raw sqlite3 error, so callers handle one family of errors."""
    return DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True)
