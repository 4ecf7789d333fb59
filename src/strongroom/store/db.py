"""Engine and sessions for SQLite (default, WAL) and PostgreSQL, with migrations applied at start."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Executable, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x5354524F  # "STRO": serialises migrations across server processes


def _sqlite_setup(engine: Engine, synchronous: str) -> None:
    """WAL for concurrent readers, and explicit BEGIN so writers can take the lock up front."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers use BEGIN IMMEDIATE: a deferred transaction that later writes can fail with SQLITE_BUSY
        # without waiting, while IMMEDIATE queues on busy_timeout. Autocommit reads need no BEGIN at all.
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("writer") else "BEGIN")


class Database:
    """Owns the engine; hands out read and write sessions."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> None:
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 32
        else:
            kwargs["pool_pre_ping"] = False
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            if sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
                raise ValueError("STRONGROOM_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA")
            _sqlite_setup(self.engine, sqlite_synchronous.upper())
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        # Single-statement reads (`fetch`) use an engine of their own. PostgreSQL: a pool in autocommit, as
        # switching a pooled connection in and out of autocommit per checkout doubled a read (317 -> 160 us).
        # SQLite: unpooled, for the per-thread connections, so they never starve writers of the pool.
        if self.is_sqlite:
            unpooled = {k: v for k, v in kwargs.items() if k not in ("pool_size", "max_overflow")}
            self._fetch_engine = create_engine(url, poolclass=NullPool, **unpooled)
            _sqlite_setup(self._fetch_engine, sqlite_synchronous.upper())
        else:
            self._fetch_engine = create_engine(url, isolation_level="AUTOCOMMIT", **kwargs)
        self._local = threading.local()
        self._thread_conns: list[Any] = []
        self._compiled: dict[Executable, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        self._writer = sessionmaker(self.engine.execution_options(writer=True), expire_on_commit=False)

    @property
    def path(self) -> Path | None:
        """The SQLite file, if that is the backend."""
        db = self.engine.url.database
        return Path(db) if self.is_sqlite and db and db != ":memory:" else None

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent, safe with several processes)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def fetch(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Run one prebuilt read statement outside a transaction and return its rows as tuples.

        This is the hot path (token lookup, get, list page). On SQLite the statement is compiled once and
        run on a per-thread autocommit sqlite3 connection: SQLAlchemy's per-execution and per-row work
        costs about three times the query itself. Column values then come back as SQLite stores them
        (dates as 'YYYY-MM-DD HH:MM:SS.ffffff' text); callers read dates through `as_wire_date`.
        """
        if self.is_sqlite:
            compiled = self._compiled.get(statement)
            if compiled is None:
                c = statement.compile(dialect=self.engine.dialect)
                compiled = self._compiled[statement] = (str(c), tuple(c.positiontup or ()), c.params)
            sql, names, literals = compiled
            if "POSTCOMPILE" not in sql:  # expanding IN lists need SQLAlchemy to render them
                values = [params[n] if n in params else literals[n] for n in names]
                return self._thread_sqlite().execute(sql, values).fetchall()
        with self._fetch_engine.connect() as conn:
            return conn.execute(statement, params).all()

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
        with self._reader() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._writer() as session, session.begin():
            yield session

    @staticmethod
    def as_datetime(value: datetime | str | None) -> datetime | None:
        """A date column from `fetch`, as an aware UTC datetime, whichever backend produced it."""
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        return value

    @staticmethod
    def as_wire_date(value: datetime | str) -> str:
        """A date column from `fetch` in the API's RFC 3339 form, without a parse on SQLite."""
        if isinstance(value, str):
            return f"{value[:10]}T{value[11:26]}Z"
        return value.isoformat(timespec="microseconds")[:26] + "Z"

    def dispose(self) -> None:
        for conn in self._thread_conns:
            conn.close()
        self._thread_conns.clear()
        self.engine.dispose()
        self._fetch_engine.dispose()
