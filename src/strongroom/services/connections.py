"""Outbound connections to data stores: the drivers, JDBC URLs mapped onto them, the SSRF guard, timeouts,
and failures told apart (authentication, unreachable host, timeout, missing database) without any secret.

Every connection resolves its host first and checks every address before a packet is sent: link-local and
cloud metadata addresses are refused unless an allow-list network names them, denied hosts and networks are
refused, and with an allow list only its hosts and networks are reached. The connection then goes to the
address that was checked, so a second DNS answer cannot redirect it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from strongroom.config import Settings
from strongroom.errors import Forbidden, InvalidInput, StrongroomError, clipped
from strongroom.jdbc import DRIVERS, Target, target

Network = Any  # IPv4Network | IPv6Network
ALWAYS_REFUSED = tuple(ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"))
MAX_ROWS = 10_000


class ConnectionFailed(StrongroomError):
    """The data store could not be reached or refused the login; the message says which, never a secret."""

    status_code = 400


def _networks(spec: str) -> tuple[set[str], list[Network]]:
    hosts, nets = set(), []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        try:
            nets.append(ip_network(item, strict=False))
        except ValueError:
            hosts.add(item.lower().rstrip("."))
    return hosts, nets


def _plain(address: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@contextmanager
def connected(engine: sa.Engine, where: Target) -> Iterator[Connection]:
    """A connection of `engine` to the store at `where`; any driver failure, opening it or using it, becomes a
    ConnectionFailed that says why (the driver's own text may quote anything)."""
    try:
        conn = engine.connect()
    except Exception as exc:  # every driver failure becomes a reason
        raise explain(exc, where) from None
    try:
        yield conn
    except Exception as exc:  # SQLAlchemy's wrapper, or the driver's own error through its raw connection
        if isinstance(exc, sa.exc.DBAPIError) or type(exc).__module__.split(".", 1)[0] in _DRIVER_MODULES:
            raise explain(exc, where) from None
        raise
    finally:
        conn.close()


class Connector:
    """Opens connections to data stores under the settings' timeouts and address rules."""

    def __init__(self, settings: Settings, resolve: Callable[[str, int], list[str]] | None = None) -> None:
        self.connect_timeout = settings.connect_timeout
        self.statement_timeout = settings.statement_timeout
        self.allow_hosts, self.allow_nets = _networks(settings.connect_allow)
        self.deny_hosts, self.deny_nets = _networks(settings.connect_deny)
        self.resolve = resolve or _resolve

    def address(self, host: str, port: int) -> str:
        """The checked address to connect to: 403 naming the host when a rule refuses it, before any packet."""
        name = host.lower().rstrip(".")
        if name in self.deny_hosts:
            raise _refused(host, "it is on the server's deny list")
        addresses = [_plain(ip_address(a)) for a in self.resolve(host, port)]
        if not addresses:
            raise ConnectionFailed(f"host unreachable: {clipped(host)!r} does not resolve", {"host": "unreachable"})
        for a in addresses:
            explicitly_allowed = any(a in n for n in self.allow_nets)
            if any(a in n for n in ALWAYS_REFUSED) and not explicitly_allowed:
                raise _refused(host, f"it resolves to {a}, a link-local or cloud metadata address")
            if any(a in n for n in self.deny_nets):
                raise _refused(host, f"it resolves to {a}, on the server's deny list")
            if (self.allow_hosts or self.allow_nets) and name not in self.allow_hosts and not explicitly_allowed:
                raise _refused(host, "it is not on the server's allow list")
        return str(addresses[0])

    @contextmanager
    def connect(
        self, where: Target, user: str, password: str, *, statement_timeout: float | None = None
    ) -> Iterator[Connection]:
        """An open connection to the store as `user` (ConnectionFailed saying why when it cannot be made);
        `statement_timeout` replaces the settings' bound on each statement (batch jobs run longer ones)."""
        engine = self._engine(where, user, password, statement_timeout, pooled=False)
        try:
            with connected(engine, where) as conn:
                yield conn
        finally:
            engine.dispose()

    def cancel(self, where: Target, user: str, password: str, raw: Any) -> None:
        """Ask the store to end the statement that `raw` (a driver connection another thread is using) runs:
        PostgreSQL's cancel request, MySQL's `KILL QUERY` from a second connection of the same user. Failures are
        ignored: a caller asks again while the statement still runs (a cancel sent before it started is lost)."""
        try:
            if where.driver.dialect.startswith("postgresql"):
                raw.cancel_safe(timeout=max(2.0, self.connect_timeout))
            else:
                with self.connect(where, user, password) as conn:
                    conn.exec_driver_sql(f"KILL QUERY {int(raw.thread_id())}")
        except Exception:  # any failure: the statement may have ended, or the next attempt gets through
            return

    def pool(self, where: Target, user: str, password: str, *, statement_timeout: float | None = None) -> sa.Engine:
        """An engine that keeps a few connections to the store open for reuse (a batch job's chunks in one
        worker), each checked with a round trip before it is handed out; use it through `connected`, and
        `dispose` it when done. The address is checked once, here."""
        return self._engine(where, user, password, statement_timeout, pooled=True)

    def _engine(
        self, where: Target, user: str, password: str, statement_timeout: float | None, *, pooled: bool
    ) -> sa.Engine:
        driver = where.driver
        address = self.address(where.host, where.port)
        timeout = max(2, math.ceil(self.connect_timeout))
        seconds = self.statement_timeout if statement_timeout is None else statement_timeout
        statement_ms = int(seconds * 1000)
        if driver.dialect.startswith("postgresql"):
            url = URL.create(driver.dialect, user, password, where.host, where.port, where.database or None)
            args: dict[str, Any] = {
                "hostaddr": address,
                "connect_timeout": timeout,
                "options": f"-c statement_timeout={statement_ms}",
                "passfile": os.devnull,
                "application_name": "strongroom",
            }
        else:
            url = URL.create(driver.dialect, user, password, address, where.port, where.database or None)
            args = {
                "connect_timeout": timeout,
                "read_timeout": seconds,
                "write_timeout": seconds,
            }
        if pooled:
            return sa.create_engine(
                url, pool_size=2, max_overflow=6, pool_pre_ping=True, connect_args=args, hide_parameters=True
            )
        return sa.create_engine(url, poolclass=NullPool, connect_args=args, hide_parameters=True)

    # ---- what a connection is used for ------------------------------------------------------------------

    def test(self, where: Target, user: str, password: str) -> str:
        """Connect and run `SELECT 1`; the success message."""
        with self.connect(where, user, password) as conn:
            conn.execute(sa.text("SELECT 1")).all()
        return "Connection successful"

    def schemas(self, where: Target, user: str, password: str) -> dict[str, Any]:
        with self.connect(where, user, password) as conn:
            names = sa.inspect(conn).get_schema_names()
        catalog = where.database or None
        return {"catalog": catalog, "catalogs": [catalog] if catalog else [], "schemas": names}

    def tables(self, where: Target, user: str, password: str, schema: str | None) -> dict[str, Any]:
        with self.connect(where, user, password) as conn:
            inspector = sa.inspect(conn)
            schema = schema or inspector.default_schema_name
            tables = [("TABLE", n) for n in inspector.get_table_names(schema)]
            tables += [("VIEW", n) for n in inspector.get_view_names(schema)]
        catalog = where.database or None
        return {
            "catalog": catalog,
            "tables": [{"type": kind, "name": n, "schema": schema, "catalog": catalog} for kind, n in tables],
        }

    def preview(self, where: Target, user: str, password: str, table: str, schema: str | None, rows: int) -> Any:
        statement = sa.select(sa.text("*")).select_from(sa.table(table, schema=schema)).limit(rows)
        with self.connect(where, user, password) as conn:
            return _rows(conn.execute(statement), rows)

    def query(self, where: Target, user: str, password: str, sql: str, rows: int) -> dict[str, Any]:
        """Run `sql`, exactly one statement, in a read-only transaction, rolled back; at most `rows` rows."""
        with self.connect(where, user, password) as conn:
            mysql = where.driver.dialect.startswith("mysql")
            if mysql:
                conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
                conn.exec_driver_sql("START TRANSACTION READ ONLY")
            else:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                # On the driver's own cursor, without parameters (a `%` is not a placeholder). Several statements
                # would let a leading COMMIT end the read-only transaction: psycopg's simple protocol runs them
                # all, so the query goes through the extended protocol (prepare=True), which takes one; PyMySQL
                # sends them only with CLIENT.MULTI_STATEMENTS, which is never set.
                cursor = conn.connection.driver_connection.cursor()
                try:
                    try:
                        if mysql:
                            cursor.execute(sql)
                        else:
                            cursor.execute(sql, prepare=True)
                    except Exception as exc:  # the driver's own error (its text may quote anything)
                        if type(exc).__module__.split(".", 1)[0] not in _DRIVER_MODULES:
                            raise
                        raise _statement_failure(exc, where) from None
                    if cursor.description is None:
                        return {"columns": [], "records": []}
                    columns = [d[0] for d in cursor.description]
                    return {"columns": columns, "records": [[_json(v) for v in r] for r in cursor.fetchmany(rows)]}
                finally:
                    cursor.close()
            finally:
                conn.rollback()


def _rows(result: Any, limit: int) -> dict[str, Any]:
    if not result.returns_rows:
        return {"columns": [], "records": []}
    columns = list(result.keys())
    return {"columns": columns, "records": [[_json(v) for v in row] for row in result.fetchmany(limit)]}


def _json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


def _refused(host: str, why: str) -> Forbidden:
    return Forbidden(f"connection to {clipped(host)!r} refused: {why}", {"host": "refused by the server's rules"})


_AUTH = ("password authentication failed", "authentication failed", "access denied for user", "no password supplied")
_TIMEOUT = ("timeout expired", "timed out", "canceling statement")
_DRIVER_MODULES = ("psycopg", "pymysql")  # the modules whose errors a raw driver connection raises
_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "no route to host",
    "network is unreachable",
    "can't connect",
    "could not translate host name",
    "name or service not known",
)


_MYSQL_READ_ONLY = 1792  # "Cannot execute statement in a READ ONLY transaction" (an OperationalError)
_STATEMENT_ERRORS = ("ProgrammingError", "DataError", "InternalError")  # PEP 249's kinds for a refused statement


def _statement_failure(exc: BaseException, where: Target) -> StrongroomError:
    """`explain` for a driver's own error from a previewQuery statement: several statements, or a statement the
    database refused (one of PEP 249's statement kinds, or MySQL's read-only refusal), is the fault of `sql`."""
    if "multiple commands" in str(exc):  # PostgreSQL's extended protocol takes one statement
        msg = "must be exactly one statement (previewQuery runs one, read-only)"
        return InvalidInput(f"sql: {msg}", {"sql": msg})
    kinds = {k.__name__ for k in type(exc).__mro__}
    if kinds & set(_STATEMENT_ERRORS) or (exc.args and exc.args[0] == _MYSQL_READ_ONLY):
        return InvalidInput(f"sql: the data store rejected the statement ({type(exc).__name__})", {"sql": "rejected"})
    return explain(exc, where)


def _code(orig: BaseException) -> int | None:
    """MySQL's error number (the first argument of a PyMySQL error)."""
    return orig.args[0] if isinstance(orig, Exception) and orig.args and isinstance(orig.args[0], int) else None


def missing_table(exc: BaseException) -> bool:
    """Whether a driver error says that a table the statement names does not exist (a client's mistake)."""
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) == "42P01" or _code(orig) == 1146


def explain(exc: BaseException, where: Target) -> StrongroomError:
    """Which of the known reasons a driver error is; its own text is never passed on (it may quote input)."""
    orig = getattr(exc, "orig", exc)
    text = str(orig).lower()
    code = _code(orig)
    place, database = f"{clipped(where.host)}:{where.port}", clipped(where.database)
    if missing_table(exc):  # before the texts below: a table's name may hold any of them
        return InvalidInput(f"table does not exist: {place} has no table the statement names", {"table": "unknown"})
    if getattr(orig, "sqlstate", None) == "54011" or code == 1117:
        return InvalidInput(f"too many columns: {place} refused a table of that many columns", {"table": "too wide"})
    if code in (1045, 1698) or any(s in text for s in _AUTH):
        return ConnectionFailed(
            f"authentication failed: {place} refused the user name or password", {"credentials": "rejected"}
        )
    if code == 1049 or ("database" in text and "does not exist" in text):
        return ConnectionFailed(
            f"database does not exist: {place} has no database {database!r}", {"database": "does not exist"}
        )
    if code == 1044:
        return ConnectionFailed(
            f"authentication failed: the user may not open database {database!r} on {place}",
            {"credentials": "no access to the database"},
        )
    if "statement timeout" in text:
        return ConnectionFailed(
            f"statement timeout: {place} cancelled a statement that ran longer than allowed", {"sql": "timed out"}
        )
    if any(s in text for s in _TIMEOUT):
        return ConnectionFailed(f"timed out: {place} did not answer in time", {"host": "timed out"})
    if code in (2002, 2003, 2005) or any(s in text for s in _UNREACHABLE):
        return ConnectionFailed(f"host unreachable: nothing accepts connections at {place}", {"host": "unreachable"})
    if isinstance(exc, sa.exc.ProgrammingError | sa.exc.DataError | sa.exc.InternalError):
        return InvalidInput(f"the data store rejected the statement ({type(orig).__name__})", {"sql": "rejected"})
    return ConnectionFailed(f"connection to {place} failed ({type(orig).__name__})", {"host": "failed"})


__all__ = ["DRIVERS", "MAX_ROWS", "ConnectionFailed", "Connector", "Target", "explain", "missing_table", "target"]
