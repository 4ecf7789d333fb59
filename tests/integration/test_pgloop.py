"""The event loop's own PostgreSQL connections (`strongroom.store.pgloop`), against a real PostgreSQL.

The server runs its hot-path statements there (GET, list, create, update), so these pin down what a pool must
get right: a bounded number of connections, driver errors that leave the connection usable, a cancelled
statement that never hands a busy connection to the next caller, and connections the server closed while idle.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.store.db import Database
from strongroom.store.pgloop import ConnectionLost, LoopPool
from tests.support import PG_ADMIN_URL, Server, backend_database, http_client, postgres_store

pytestmark = pytest.mark.postgres


@pytest.fixture
def db() -> Iterator[Database]:
    with postgres_store() as database:
        yield database


def _backend_pids(database: str) -> set[int]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
        ).fetchall()
    return {pid for (pid,) in rows}


def test_pool_bounds_connections_and_queues_callers(db: Database) -> None:
    async def main() -> list[tuple[Any, ...]]:
        pool = LoopPool(db._pg_connect, 2)
        try:
            sql = b"SELECT pg_backend_pid(), pg_sleep(0.05), $1::int"
            results = await asyncio.gather(*(pool.execute(sql, [n]) for n in range(10)))
        finally:
            pool.close()
        return [row for rows in results for row in rows]

    rows = asyncio.run(main())
    assert [n for _, _, n in rows] == list(range(10))  # every caller got its own answer, in order
    assert len({pid for pid, _, _ in rows}) <= 2


def test_driver_error_is_raised_and_connection_stays_usable(db: Database) -> None:
    async def main() -> tuple[int, int]:
        pool = LoopPool(db._pg_connect, 1)
        try:
            first = (await pool.execute(b"SELECT pg_backend_pid()", []))[0][0]
            insert = b"INSERT INTO users (id, username, created_at) VALUES ($1, $1, now())"
            assert await pool.execute(insert, ["u"]) == []
            with pytest.raises(psycopg.errors.UniqueViolation):
                await pool.execute(insert, ["u"])
            with pytest.raises(psycopg.errors.DivisionByZero):
                await pool.execute(b"SELECT 1 / $1::int", [0])
            again = (await pool.execute(b"SELECT pg_backend_pid()", []))[0][0]
        finally:
            pool.close()
        return first, again

    first, again = asyncio.run(main())
    assert first == again  # errors of the statement, not of the connection: it was kept


def test_cancelled_statement_closes_its_connection(db: Database) -> None:
    async def main() -> tuple[int, list[tuple[Any, ...]]]:
        pool = LoopPool(db._pg_connect, 1)
        try:
            slow = asyncio.create_task(pool.execute(b"SELECT pg_backend_pid(), pg_sleep(5)", []))
            await asyncio.sleep(0.3)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            rows = await asyncio.wait_for(pool.execute(b"SELECT pg_backend_pid(), $1::text", ["next"]), 3)
        finally:
            pool.close()
        return len(pool._idle), rows

    idle, rows = asyncio.run(main())
    assert rows[0][1] == "next"  # not the cancelled statement's late answer on a reused connection
    assert idle == 0  # closed by close(); the cancelled one was never put back


def test_server_closing_idle_connections_is_survived(db: Database) -> None:
    database = db.engine.url.database
    assert database is not None

    async def main() -> list[str]:
        pool = LoopPool(db._pg_connect, 3)
        try:
            sql = b"SELECT pg_sleep(0.05), $1::text"
            await asyncio.gather(*(pool.execute(sql, ["warm"]) for _ in range(3)))  # three idle connections
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                for pid in _backend_pids(database):
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await asyncio.sleep(0.3)  # the loop reads each connection's end
            assert all(conn.broken for conn in pool._idle)
            return [(await pool.execute(sql, [f"after{n}"]))[0][1] for n in range(3)]
        finally:
            pool.close()

    assert asyncio.run(main()) == ["after0", "after1", "after2"]


def test_a_lost_connections_descriptor_number_taken_by_another_socket_is_left_alone(db: Database) -> None:
    """libpq closes its socket as soon as it reads the connection's end, and the process may open another socket
    under that number at once (the server accepting a client) before the pool drops the lost connection:
    dropping it must not touch the new socket's registration. It did: the loop refused to remove a reader
    from a descriptor its transport owned, and the PATCH waiting for a connection answered 500."""
    database = db.engine.url.database
    assert database is not None

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        pool = LoopPool(db._pg_connect, 1)
        transports: list[asyncio.BaseTransport] = []
        try:
            await pool.execute(b"SELECT 1", [])
            (lost,) = pool._idle
            number = lost.conn.pgconn.socket
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                for pid in _backend_pids(database):
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            await asyncio.sleep(0.3)  # the loop reads the end; libpq closes its socket
            assert lost.broken
            for _ in range(64):  # the lowest free number first: soon the one libpq gave back
                transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
                transports.append(transport)
                if transport.get_extra_info("socket").fileno() == number:
                    break
            else:
                pytest.fail(f"no new socket took descriptor {number}")
            return await pool.execute(b"SELECT 2", [])  # drops the lost connection, opens another
        finally:
            pool.close()
            for transport in transports:
                transport.close()
            listener.close()

    assert asyncio.run(main()) == [(2,)]


def test_server_answers_after_its_connections_are_killed(tmp_path: Path) -> None:
    """Through a real server: killed connections cost no failed request, reads and writes alike."""
    with backend_database("postgres") as url:
        assert url is not None
        srv = Server(data_dir=tmp_path / "data", database_url=url)
        srv.start()
        try:
            token = srv.new_user("killed")
            with http_client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                cid = http.post("/credentials/", json={"name": "c0", "user": "u", "password": "p"}).json()[
                    "credentialId"
                ]
                with ThreadPoolExecutor(8) as threads:  # several connections in the loop's pool
                    assert all(
                        r.status_code == 200 for r in threads.map(lambda _: http.get(f"/credentials/{cid}/"), range(64))
                    )
                search = {"search": "C0"}  # a search reads on the autocommit pool (Database.fetch_planned)
                assert http.get("/credentials/", params=search).json()["totalCount"] == 1
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                    for pid in _backend_pids(url.rsplit("/", 1)[1]):
                        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                searched = http.get("/credentials/", params=search)  # reads retry on a fresh connection
                assert searched.status_code == 200 and searched.json()["totalCount"] == 1, searched.text
                got = http.get(f"/credentials/{cid}/")
                assert got.status_code == 200, got.text
                created = http.post("/credentials/", json={"name": "c1", "user": "u", "password": "p"})
                assert created.status_code == 201, created.text
                patched = http.patch(f"/credentials/{cid}/", json={"name": "c0b"})
                assert patched.status_code == 200, patched.text
                listed = http.get("/credentials/")
                assert listed.status_code == 200 and listed.json()["totalCount"] == 2, listed.text
        finally:
            srv.stop()


def test_a_planned_read_retries_once_when_its_pooled_connection_died(db: Database) -> None:
    """`fetch_planned` (searches) draws from the autocommit pool, apart from the hot path: a connection killed
    while idle there (a restarted server) costs a retry on a fresh one, not a failed request; a read that
    fails for another reason is not retried."""
    from sqlalchemy import literal, select
    from sqlalchemy.exc import DBAPIError

    statement = select(literal(1).label("one"))
    assert db.fetch_planned(statement, {}) == [(1,)]  # a connection now idles in the pool
    for pid in _backend_pids(db.engine.url.database or ""):
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert db.fetch_planned(statement, {}) == [(1,)]
    broken = select(literal(1) / 0)
    with pytest.raises(DBAPIError, match="division by zero"):
        db.fetch_planned(broken, {})
    assert db.fetch_planned(statement, {}) == [(1,)]


def _spoil_socket(conn: psycopg.Connection[Any]) -> None:
    """Put a non-socket under libpq's descriptor: its next read fails on the client's side ("Socket operation on
    non-socket"), an OperationalError without a SQLSTATE while libpq's status still says OK, as when the socket
    was closed under it ("connection socket closed"). The descriptor stays libpq's to close."""
    fd = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(fd, conn.pgconn.socket)
    finally:
        os.close(fd)


def test_a_read_retries_when_its_connection_failed_on_the_clients_side(db: Database) -> None:
    """A connection that fails on the client's side (no SQLSTATE, libpq still saying OK) is lost too: the hot
    path and the planned reads drop it and retry on a fresh one. They handed the error on (and the hot path put
    the connection back in the pool) while only the server's SQLSTATEs or libpq's BAD status counted as lost."""
    from sqlalchemy import literal, select

    statement = select(literal(1).label("one"))
    assert db.fetch(statement, {}) == [(1,)]
    conn, cur = db._pg_idle.get_nowait()
    assert db._pg_idle.empty()
    _spoil_socket(conn)
    db._pg_idle.put((conn, cur))
    assert db.fetch(statement, {}) == [(1,)]
    assert conn.closed
    assert db.fetch_planned(statement, {}) == [(1,)]
    proxy = db._fetch_engine.raw_connection()
    pooled = proxy.driver_connection
    proxy.close()
    _spoil_socket(pooled)
    assert db.fetch_planned(statement, {}) == [(1,)]
    assert pooled.closed


def test_a_connection_ended_while_being_set_up_is_lost_not_failed(db: Database) -> None:
    """A server restarting ends new connections too: one terminated during its set-up (here it terminates
    itself, as `pg_terminate_backend` from an administrator would) is a lost connection, which a read retries,
    not a failed statement (that was a 503 for a read in the middle of a restart)."""
    attempts: list[int] = []

    def connect_that_ends_once() -> psycopg.Connection[Any]:
        conn = db._pg_connect()
        attempts.append(1)
        if len(attempts) == 1:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # raises the server's 57P01
        return conn

    async def main() -> tuple[str, int]:
        pool = LoopPool(connect_that_ends_once, 1)
        try:
            try:
                await pool.execute(b"SELECT $1::int", [1])
                first = "answered"
            except ConnectionLost:
                first = "lost"
            return first, (await pool.execute(b"SELECT $1::int", [2]))[0][0]
        finally:
            pool.close()

    assert asyncio.run(main()) == ("lost", 2)


def test_planned_reads_on_the_loop_may_sort_and_are_planned_as_postgresql_chooses(db: Database) -> None:
    """`afetch` runs on connections whose generic plans price sorting out (the hot path's index ranges);
    `afetch_planned` on the loop's other connections, where a page merged from two parts may sort and
    PostgreSQL chooses between custom and generic plans: a shared list's generic plan under the hot path's
    settings took 115 ms instead of 0.5. Both prepare their statements once per connection."""
    from sqlalchemy import func, select, table

    setting = select(func.current_setting("enable_sort"), func.current_setting("plan_cache_mode"))
    prepared = select(func.count()).select_from(table("pg_prepared_statements"))

    async def main() -> tuple[Any, ...]:
        db.start_loop_pool(1)
        try:
            hot = await db.afetch(setting, {})
            free = await db.afetch_planned(setting, {})
            before = (await db.afetch_planned(prepared, {}))[0][0]
            await db.afetch_planned(setting, {})
            after = (await db.afetch_planned(prepared, {}))[0][0]
            return hot[0], free[0], before, after
        finally:
            db.stop_loop_pool()

    hot, free, before, after = asyncio.run(main())
    assert hot == ("off", "force_generic_plan")
    assert free == ("on", "auto")
    assert before == after == 2  # the settings' statement and the count itself, each prepared once
