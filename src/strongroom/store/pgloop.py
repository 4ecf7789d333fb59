"""PostgreSQL statements on the event loop itself, over libpq's non-blocking API.

A hot-path statement run through a worker thread paid for the thread hop (a futex wake, the loop's self-pipe,
two GIL hand-offs) and for psycopg's cursor machinery on top of the round trip itself. Here the server's
event loop sends a prepared statement on an idle connection and awaits its socket: no thread, no hand-off.
Each connection runs one statement at a time; at most `size` are open, and callers beyond that queue.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

T = TypeVar("T")
R = TypeVar("R")

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """SQLAlchemy's `%(name)s` placeholders as libpq's `$n`, and the parameter names in `$n` order."""
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PLACEHOLDER.sub(replace, sql).encode(), tuple(names)


class ConnectionLost(Exception):
    """The server closed the connection or the network failed (the statement's outcome is unknown)."""


# The server's last words on a connection it is closing: terminated by an administrator (57P01), a crash or
# immediate shutdown (57P02), its idle-session timeout (57P05), or any connection exception (class 08).
_ENDING = frozenset({"57P01", "57P02", "57P05"})


def connection_ended(sqlstate: str | None) -> bool:
    """Whether an error with this SQLSTATE means the server closed the connection. libpq may hand over the
    server's FATAL message before it has read the end of the connection, so its status can still say OK."""
    return sqlstate is not None and (sqlstate in _ENDING or sqlstate.startswith("08"))


def connection_lost(exc: psycopg.Error, conn: psycopg.Connection[Any] | None = None) -> bool:
    """Whether `exc` leaves its connection unusable: the server ended it (`connection_ended`), libpq says it is
    broken or closed, or the client failed on the connection itself (an `OperationalError` without a SQLSTATE,
    such as "connection socket closed", raised while libpq's status still says OK)."""
    if conn is not None and (conn.broken or conn.closed):
        return True
    return connection_ended(exc.sqlstate) or (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None)


class _Connection:
    """One libpq connection driven by the loop: a reader callback wakes the statement waiting on it."""

    def __init__(self, conn: psycopg.Connection[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.pg = conn.pgconn
        self.pg.nonblocking = 1
        # The loop watches a duplicate of libpq's socket: libpq closes its own descriptor the moment it reads the
        # connection's end, and the process may reuse that number at once (for a client the server accepts)
        # while the loop still watches it. The duplicate's number stays this connection's until `close`.
        self.fd = os.dup(self.pg.socket)
        self.loop = loop
        self.transformer = Transformer(conn)
        self.prepared: set[bytes] = set()
        self.waiter: asyncio.Future[None] | None = None
        self.broken = False
        self.watched = True
        loop.add_reader(self.fd, self._readable)

    def _unwatch(self) -> None:
        if self.watched:
            self.watched = False
            if not self.loop.is_closed():
                self.loop.remove_reader(self.fd)

    def _readable(self) -> None:
        try:
            self.pg.consume_input()
        except psycopg.OperationalError:
            self.broken = True
        if self.broken:  # closed by the server: stop watching it (its end would keep it readable)
            self._unwatch()
        if self.waiter is not None and not self.waiter.done() and (self.broken or not self.pg.is_busy()):
            self.waiter.set_result(None)

    async def _request(self, send: Callable[[], None]) -> pq.abc.PGresult:
        """Send a request, then read its result and on to libpq's "no more results"; errors are raised."""
        pg = self.pg
        try:
            send()
            while pg.flush():  # rare: the request did not fit in the socket buffer at once
                await asyncio.sleep(0)
        except psycopg.OperationalError:
            self.broken = True
            raise ConnectionLost from None
        result = None
        while True:
            if self.broken:
                raise ConnectionLost
            if pg.is_busy():  # wait for the reader callback to say more has arrived
                self.waiter = self.loop.create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
                continue
            got = pg.get_result()
            if got is None:
                break
            if result is None:
                result = got
        if result is None:  # the server answered nothing: the connection is in no state to reuse
            self.broken = True
            raise ConnectionLost
        self._check(result)
        return result

    async def execute(self, name: bytes, sql: bytes, values: Sequence[Any], formats: list[PyFormat]) -> list[Any]:
        if name not in self.prepared:
            await self._request(lambda: self.pg.send_prepare(name, sql))
            self.prepared.add(name)
        tx = self.transformer
        params = tx.dump_sequence(values, formats)
        result = await self._request(lambda: self.pg.send_query_prepared(name, params, tx.formats))
        if result.status != pq.ExecStatus.TUPLES_OK:
            return []
        tx.set_pgresult(result)
        return tx.load_rows(0, result.ntuples, tuple)

    def _check(self, result: pq.abc.PGresult) -> None:
        if result.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE):
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
            if self.pg.status == pq.ConnStatus.BAD or connection_ended(sqlstate.decode() if sqlstate else None):
                self.broken = True
                raise ConnectionLost
            raise psycopg.errors.error_from_result(result, encoding=self.conn.info.encoding)

    def close(self) -> None:
        if self.fd >= 0:
            self._unwatch()
            os.close(self.fd)
            self.fd = -1
        self.conn.close()


class LoopPool:
    """Connections for one event loop; `connect` opens one (blocking: it runs in a worker thread)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], size: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self._connect = connect
        self._size = size
        self._open = 0
        self._idle: list[_Connection] = []
        self._queue: collections.deque[asyncio.Future[_Connection]] = collections.deque()
        self._prepared: dict[bytes, tuple[bytes, list[PyFormat]]] = {}  # SQL -> statement name, formats
        self.gathered: dict[object, Gathered[Any, Any]] = {}  # writes that go on together, by kind (`Gathered`)

    def serves_caller(self) -> bool:
        """Whether the caller runs on this pool's event loop. Its thread is running it: one thread runs one loop
        at a time. (`asyncio.get_running_loop` asks the kernel for the process id on every call.)"""
        return threading.get_ident() == self.thread and self.loop.is_running()

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.broken:  # the server closed it while idle (restart, idle timeout): never send on it
                return conn
            self._open -= 1
            conn.close()
        if self._open < self._size:
            self._open += 1
            try:
                conn = await self.loop.run_in_executor(None, self._connect)
                return _Connection(conn, self.loop)
            except psycopg.Error as exc:  # ended while being set up (a server restarting): lost, not failed
                self._open -= 1
                if connection_ended(exc.sqlstate):
                    raise ConnectionLost from None
                raise
            except BaseException:
                self._open -= 1
                raise
        waiter: asyncio.Future[_Connection] = self.loop.create_future()
        self._queue.append(waiter)
        return await waiter

    def _release(self, conn: _Connection) -> None:
        if conn.broken:
            self._discard(conn)
            self.discard_idle()
            return
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        self._open -= 1
        conn.close()
        if self._queue:  # a queued caller may open a connection in its place
            waiter = self._queue.popleft()
            if not waiter.done():
                task = self.loop.create_task(self._acquire())
                task.add_done_callback(lambda t: _hand_over(t, waiter, self))

    def discard_idle(self) -> None:
        """Close every idle connection (after one was found lost, the others likely died with the server)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            conn.close()

    async def execute(self, sql: bytes, values: Sequence[Any]) -> list[Any]:
        """Run one statement (prepared on each connection at first use) and return its rows as tuples."""
        prepared = self._prepared.get(sql)
        if prepared is None:
            # bytes go in binary (bytea's binary form is the bytes themselves), the rest as text for the server
            # to read as the column's type; a bytea sent as text one day (a NULL at first) would still be read.
            formats = [PyFormat.BINARY if isinstance(v, bytes) else PyFormat.TEXT for v in values]
            prepared = self._prepared[sql] = (f"sr{len(self._prepared)}".encode(), formats)
        name, formats = prepared
        conn = await self._acquire()
        try:
            return await conn.execute(name, sql, values, formats)
        except asyncio.CancelledError:
            conn.broken = True  # a statement may still be in flight: the connection cannot be reused
            raise
        finally:
            self._release(conn)

    def close(self) -> None:
        self.discard_idle()


def _hand_over(task: asyncio.Task[_Connection], waiter: asyncio.Future[_Connection], pool: LoopPool) -> None:
    if task.cancelled() or task.exception() is not None:
        if not waiter.done():
            waiter.set_exception(task.exception() or asyncio.CancelledError())
        return
    conn = task.result()
    if waiter.done():
        pool._release(conn)
    else:
        waiter.set_result(conn)


class Gathered(Generic[T, R]):
    """Writes of one kind that arrive while `lanes` of them are in flight wait, and go on together (at most `most`
    at once) as one statement: a group commit, which spreads PostgreSQL's per-statement and per-commit work over
    the writes it carries. Alone, a write goes at once, by `one`; `many` returns each write's result or the
    exception that write raises, in order, and whatever it raises itself reaches every write it carried."""

    def __init__(
        self,
        one: Callable[[T], Awaitable[R]],
        many: Callable[[list[T]], Awaitable[list[R | BaseException]]],
        lanes: int = 2,
        most: int = 64,
    ) -> None:
        self._one = one
        self._many = many
        self._lanes = lanes
        self._most = most
        self._busy = 0
        self._waiting: collections.deque[tuple[T, asyncio.Future[R]]] = collections.deque()
        self.carried = 0  # writes that went on with others (for tests and diagnosis)

    async def __call__(self, item: T) -> R:
        if self._busy < self._lanes and not self._waiting:
            self._busy += 1
            try:
                return await self._one(item)
            finally:
                self._busy -= 1
                self._next()
        waiter: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, waiter))
        return await waiter

    def _next(self) -> None:
        if not self._waiting or self._busy >= self._lanes:
            return
        batch = []
        while self._waiting and len(batch) < self._most:
            item, waiter = self._waiting.popleft()
            if not waiter.done():  # its caller was cancelled while it waited: it was never sent
                batch.append((item, waiter))
        if batch:
            self._busy += 1
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            if len(batch) == 1:
                outcomes: list[R | BaseException] = [await outcome(self._one(batch[0][0]))]
            else:
                outcomes = await self._many([item for item, _ in batch])
                self.carried += len(batch)
        except asyncio.CancelledError:  # the loop is closing: so are the callers, and nothing more is sent
            for _, waiter in batch:
                waiter.cancel()
            raise
        except Exception as exc:  # handed to every caller it concerns
            outcomes = [exc] * len(batch)
        finally:
            self._busy -= 1
        for (_, waiter), result in zip(batch, outcomes, strict=True):
            if waiter.done():
                continue
            if isinstance(result, asyncio.CancelledError):
                waiter.cancel()
            elif isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
        self._next()


async def outcome(call: Awaitable[R]) -> R | BaseException:
    """What `call` returns, or the exception it raises."""
    try:
        return await call
    except Exception as exc:  # the caller's to raise
        return exc
