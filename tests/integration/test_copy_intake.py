"""A PostgreSQL intake read as COPY's own CSV (the passthrough into a CSV output, issue 16): chunks cut at row
boundaries even inside quoted newlines, the header once, every row once, and booleans written `true`/`false`
on both the CSV path and the Arrow path."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from strongroom.services import batch
from tests.support import backend_database

pytestmark = pytest.mark.postgres

ROWS: list[tuple[Any, ...]] = [
    (1, "plain", True, 1.5),
    (2, "a, comma", False, None),
    (3, 'a "quote"', None, -2.25),
    (4, "two\nlines", True, 0.0),
    (5, "", False, 3.0),  # the empty string, not NULL
    (6, None, True, 1e-7),
    (7, "ünïcödé ✓", False, 42.0),
    (8, 'line\r\nbreak, and "all"', True, 7.5),
]
EXPECTED = [
    ["id", "label", "flag", "amount"],
    ["1", "plain", "true", "1.5"],
    ["2", "a, comma", "false", ""],
    ["3", 'a "quote"', "", "-2.25"],
    ["4", "two\nlines", "true", "0"],
    ["5", "", "false", "3"],
    ["6", "", "true", "1e-07"],
    ["7", "ünïcödé ✓", "false", "42"],
    ["8", 'line\r\nbreak, and "all"', "true", "7.5"],
]
OPTIONS = {"delimiter": ",", "quotechar": '"', "encoding": "utf-8"}


@pytest.fixture(scope="module")
def conn() -> Iterator[sa.Connection]:
    with backend_database("postgres") as url:
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE items (id integer, label text, flag boolean, amount double precision)"
            )
            connection.execute(
                sa.text("INSERT INTO items VALUES (:id, :label, :flag, :amount)"),
                [dict(zip(("id", "label", "flag", "amount"), row, strict=True)) for row in ROWS],
            )
            connection.commit()
            yield connection
        engine.dispose()


def _parse(data: bytes, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=delimiter))


@pytest.mark.parametrize("rows", [1, 3, 8, 100])
def test_chunks_are_whole_rows_with_the_header_once(conn: sa.Connection, rows: int) -> None:
    settings = {"query": "SELECT * FROM items ORDER BY id"}
    chunks = list(batch.read_table_csv(conn, settings, rows, OPTIONS))
    conn.rollback()
    assert [c.num_rows for c in chunks] == [min(rows, len(ROWS) - i) for i in range(0, len(ROWS), rows)]
    # each chunk parses on its own into whole rows: no cut inside a quoted newline
    parsed = [_parse(bytes(c.data)) for c in chunks]
    assert parsed[0][0] == EXPECTED[0]
    assert [len(p) for p in parsed] == [chunks[0].num_rows + 1] + [c.num_rows for c in chunks[1:]]
    assert [row for p in parsed for row in p] == EXPECTED
    assert b"".join(bytes(c.data) for c in chunks).count(b"id,label,flag,amount") == 1


def test_an_empty_intake_is_one_chunk_with_the_header(conn: sa.Connection) -> None:
    chunks = list(batch.read_table_csv(conn, {"query": "SELECT * FROM items WHERE false"}, 5, OPTIONS))
    conn.rollback()
    assert [(bytes(c.data), c.num_rows) for c in chunks] == [(b"id,label,flag,amount\n", 0)]


def test_the_job_delimiter_and_a_table_intake(conn: sa.Connection) -> None:
    options = {**OPTIONS, "delimiter": ";"}
    chunks = list(batch.read_table_csv(conn, {"table": "items"}, 4, options))
    conn.rollback()
    rows = sorted(_parse(b"".join(bytes(c.data) for c in chunks), ";")[1:], key=lambda r: int(r[0]))
    assert rows == EXPECTED[1:]


def test_a_spooled_csv_chunk_reads_back(conn: sa.Connection, tmp_path: Any) -> None:
    chunk = next(batch.read_table_csv(conn, {"table": "items"}, 100, OPTIONS))
    conn.rollback()
    batch.spool_batch(chunk, tmp_path / "0.arrow")
    back = batch.read_spooled(tmp_path / "0.arrow")
    assert isinstance(back, batch.CsvChunk)
    assert (bytes(back.data), back.num_rows) == (bytes(chunk.data), chunk.num_rows)


def test_the_arrow_path_reads_booleans_as_booleans(conn: sa.Connection) -> None:
    found = pa.Table.from_batches(list(batch.read_table(conn, {"query": "SELECT * FROM items ORDER BY id"}, 100)))
    conn.rollback()
    assert found.schema.field("flag").type == pa.bool_()
    assert found.column("flag").to_pylist() == [r[2] for r in ROWS]


def test_a_chunk_size_in_bytes_is_rows_of_that_size(conn: sa.Connection) -> None:
    """chunkSize in bytes: rows per chunk are the bytes over the average size of the first rows as COPY writes
    them (here 11 bytes each: `r000000,ab` and a newline)."""
    settings = {"query": "SELECT 'r' || lpad(i::text, 6, '0') AS code, 'ab' AS word FROM generate_series(0, 99) i"}
    chunks = list(batch.read_table_csv(conn, settings, batch.ChunkSize(bytes=110), OPTIONS))
    conn.rollback()
    assert [c.num_rows for c in chunks] == [10] * 10
    assert [len(c.data) for c in chunks[1:]] == [110] * 9
    arrow = list(batch.read_table(conn, settings, batch.ChunkSize(bytes=150)))  # pyarrow quotes strings: 15 bytes
    conn.rollback()
    assert [b.num_rows for b in arrow] == [10] * 10


MANY = "SELECT i AS id, repeat('x', i % 50) AS pad FROM generate_series(1, 60000) i"


def test_a_long_copy_arrives_whole_on_both_paths(conn: sa.Connection) -> None:
    """Many socket reads' worth of rows (COPY's rows are taken from libpq as they arrive): each row once, in
    order, on the CSV path and the Arrow path."""
    chunks = list(batch.read_table_csv(conn, {"query": MANY}, 7000, OPTIONS))
    conn.rollback()
    assert [c.num_rows for c in chunks] == [7000] * 8 + [4000]
    rows = _parse(b"".join(bytes(c.data) for c in chunks))
    assert rows[0] == ["id", "pad"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 60001))
    assert all(r[1] == "x" * (int(r[0]) % 50) for r in rows[1:])
    table = pa.Table.from_batches(list(batch.read_table(conn, {"query": MANY}, 25000)))
    conn.rollback()
    assert table.column("id").to_pylist() == list(range(1, 60001))


@pytest.mark.parametrize("reader", ["csv", "arrow"])
def test_a_copy_that_fails_midway_raises_and_leaves_the_connection_usable(conn: sa.Connection, reader: str) -> None:
    """A statement timeout after rows have arrived is raised from the reader (not a short, silent intake), and
    the connection answers the next statement."""
    conn.exec_driver_sql("SET statement_timeout = '300ms'")
    slow = {
        "query": "SELECT i, repeat('x', 100) AS pad, CASE WHEN i > 60000 THEN pg_sleep(0.01)::text END AS s"
        " FROM generate_series(1, 70000) i"
    }
    read = batch.read_table_csv(conn, slow, 5000, OPTIONS) if reader == "csv" else batch.read_table(conn, slow, 5000)
    seen = 0
    with pytest.raises(Exception, match="statement timeout"):
        for chunk in read:
            seen += chunk.num_rows
    assert seen > 0  # rows came before the failure: the error came mid-COPY
    conn.rollback()
    assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    conn.rollback()


def test_a_copy_left_early_leaves_the_connection_usable(conn: sa.Connection) -> None:
    """A reader closed after its first chunk (an aborted job) cancels the rest of the COPY."""
    read = batch.read_table_csv(conn, {"query": MANY}, 100, OPTIONS)
    assert next(read).num_rows == 100
    read.close()
    conn.connection.driver_connection.rollback()  # the cancelled COPY's transaction (SQLAlchemy never began one)
    assert conn.exec_driver_sql("SELECT count(*) FROM items").scalar() == len(ROWS)
    conn.rollback()


class _JobRows:
    """The one method of the jobs repository the count uses: what it set, by job."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}

    def set(self, job_id: str, values: dict[str, Any]) -> None:
        self.values.setdefault(job_id, {}).update(values)


def test_rows_are_counted_aside_and_a_count_still_running_is_cancelled(tmp_path: Any) -> None:
    """A jdbc intake's rows are counted on a connection of their own (the job's expected rows); a count still
    running when the read ends is cancelled, not waited for, and sets nothing."""
    from types import SimpleNamespace

    from strongroom.config import Settings
    from strongroom.jdbc import target
    from strongroom.services.connections import Connector
    from strongroom.services.runners import _CountAside

    with backend_database("postgres") as url:
        assert url is not None
        where = target("postgres", "jdbc:postgresql://" + url.split("@", 1)[1], [])
        rows = _JobRows()
        service: Any = SimpleNamespace(connector=Connector(Settings(data_dir=tmp_path)), jobs=rows)
        login = (where, "postgres", "unused")
        counted = _CountAside(service, "job-a", {"query": MANY}, login, 60)
        counted.thread.join(30)
        counted.stop()
        assert rows.values == {"job-a": {"expected_rows": 60000}}
        slow = {"query": "SELECT i FROM generate_series(1, 3) i, pg_sleep(30)"}
        counting = _CountAside(service, "job-b", slow, login, 60)
        probe = sa.create_engine(url)
        with probe.connect() as watch:  # until the count runs: a cancel that came earlier would be lost
            while (
                counting.thread.is_alive()
                and not watch.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND strpos(query, 'pg_sleep(30)') > 0"
                    " AND pid <> pg_backend_pid()"
                ).scalar()
            ):
                watch.rollback()
                time.sleep(0.01)
        probe.dispose()
        counting.stop()
        assert not counting.thread.is_alive()
        assert "job-b" not in rows.values  # cancelled: a count that ran its 30 s would have set 3


def test_a_statement_timeout_mid_copy_is_named_for_the_job(tmp_path: Any) -> None:
    """The COPY read raises the driver's own error (it goes through psycopg's raw connection); the connection
    context turns it into a reason naming the timeout, as it does for SQLAlchemy's errors, never the driver's
    text or an internal error."""
    from strongroom.config import Settings
    from strongroom.jdbc import target
    from strongroom.services.connections import ConnectionFailed, Connector

    slow = {"query": "SELECT i, pg_sleep(0.01)::text AS s FROM generate_series(1, 100000) i"}
    with backend_database("postgres") as url:
        assert url is not None
        where = target("postgres", "jdbc:postgresql://" + url.split("@", 1)[1], [])
        connector = Connector(Settings(data_dir=tmp_path))
        timed = connector.connect(where, "postgres", "unused", statement_timeout=0.3)
        with pytest.raises(ConnectionFailed) as caught, timed as conn:
            for _ in batch.read_table_csv(conn, slow, 5, OPTIONS):
                pass
    assert caught.value.message.startswith("statement timeout:") and caught.value.errors == {"sql": "timed out"}
