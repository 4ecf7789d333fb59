"""Hot reads from memory on SQLite (store/unchanged.py): answered while nothing changed, never after a commit
by any connection of any process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import bindparam, column, select, table, text

from strongroom.store.db import Database

_ROW = select(column("value")).select_from(table("things")).where(column("id") == bindparam("id"))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    with database.write() as session:
        session.execute(text("CREATE TABLE things (id INTEGER PRIMARY KEY, value TEXT)"))
        session.execute(text("INSERT INTO things VALUES (1, 'one'), (2, 'two')"))
    database.start_hot_reads()
    yield database
    database.dispose()


def _elsewhere(path: Path, sql: str) -> None:
    """Run `sql` from another process, as a CLI command or a second server would."""
    script = f"import sqlite3; c = sqlite3.connect({str(path)!r}, isolation_level=None); c.execute({sql!r})"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)


def test_repeated_reads_come_from_memory_until_another_process_commits(db: Database, tmp_path: Path) -> None:
    first = db.fetch_hot(_ROW, {"id": 1})  # attaches to the -shm header after this read
    second = db.fetch_hot(_ROW, {"id": 1})
    assert db.fetch_hot(_ROW, {"id": 1}) is second  # unchanged database: the same rows object, no query
    assert [tuple(r) for r in first] == [tuple(r) for r in second] == [("one",)]

    _elsewhere(tmp_path / "store.db", "UPDATE things SET value = 'uno' WHERE id = 1")
    assert [tuple(r) for r in db.fetch_hot(_ROW, {"id": 1})] == [("uno",)]
    _elsewhere(tmp_path / "store.db", "DELETE FROM things WHERE id = 1")
    assert db.fetch_hot(_ROW, {"id": 1}) == []


def test_a_commit_of_this_process_and_a_change_of_another_row_are_seen(db: Database) -> None:
    db.fetch_hot(_ROW, {"id": 1})
    db.fetch_hot(_ROW, {"id": 2})
    with db.write() as session:
        session.execute(text("UPDATE things SET value = 'deux' WHERE id = 2"))
    assert [tuple(r) for r in db.fetch_hot(_ROW, {"id": 2})] == [("deux",)]
    assert [tuple(r) for r in db.fetch_hot(_ROW, {"id": 1})] == [("one",)]


def test_without_start_every_read_goes_to_the_database(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'cold.db'}")
    try:
        with database.write() as session:
            session.execute(text("CREATE TABLE things (id INTEGER PRIMARY KEY, value TEXT)"))
            session.execute(text("INSERT INTO things VALUES (1, 'one')"))
        first = database.fetch_hot(_ROW, {"id": 1})
        assert database.fetch_hot(_ROW, {"id": 1}) is not first
    finally:
        database.dispose()


def test_one_attachment_per_file_and_process(db: Database, tmp_path: Path) -> None:
    db.fetch_hot(_ROW, {"id": 1})
    other = Database(f"sqlite:///{tmp_path / 'store.db'}")
    other.start_hot_reads()
    try:
        other.fetch_hot(_ROW, {"id": 1})
        assert other._unchanged is not None and other._unchanged.tried and other._unchanged.stamp() is None
        assert db._unchanged is not None and db._unchanged.stamp() is not None
    finally:
        other.dispose()


def test_keys_differ_by_parameters_and_memory_is_bounded(db: Database) -> None:
    db.fetch_hot(_ROW, {"id": 1})
    cache = db._unchanged
    assert cache is not None and cache.stamp() is not None
    cache.capacity = 2
    for key in (1, 2, 1, 2, 1):
        assert [tuple(r) for r in db.fetch_hot(_ROW, {"id": key})] == [("one",) if key == 1 else ("two",)]
    assert len(cache._state[1]) <= 2
