"""PostgreSQL query plans of the hot path: a list page reads the index in order and never sorts the owner's rows.

Prepared statements get a generic plan made from the statistics of the moment. One made while the table was
small chose "fetch the owner's rows, then sort them", kept it as the owner grew, and a page at 100 000
credentials took 0.7 s instead of 10 ms. The hot-path connections price sorting out; this holds them to it
with the worst case forced: a generic plan from statistics that say the table is tiny.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg import sql

from strongroom.services.accounts import hash_token
from strongroom.store.db import Database
from strongroom.store.repositories.credentials import _page
from tests.support import postgres_store

pytestmark = pytest.mark.postgres


@contextmanager
def _analyzed_store(fill: Callable[[Any], None]) -> Iterator[Database]:
    """A migrated PostgreSQL store filled by `fill(cursor)`, then analysed: its statistics are what plans see."""
    with postgres_store() as database:
        conn = database.engine.raw_connection()
        try:
            cur = conn.cursor()
            fill(cur)
            cur.execute("ANALYZE")
            conn.commit()
        finally:
            conn.close()
        yield database


@pytest.fixture
def db() -> Iterator[Database]:
    """Statistics of an empty store: any owner looks like it has no credentials."""
    with _analyzed_store(
        lambda cur: cur.execute("INSERT INTO users (id, username, created_at) VALUES ('u1', 'u', now())")
    ) as database:
        yield database


def _nodes(plan: dict[str, Any]) -> Iterator[str]:
    yield plan["Node Type"]
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _prepared_page(
    db: Database, conn: Any, newest_first: bool, with_token: bool, params: dict[str, Any]
) -> tuple[str, str]:
    """A list-page statement as PostgreSQL's `PREPARE` takes it (`$n` placeholders), and its values as SQL."""
    text, named = db._pg_bind(_page(True, newest_first, False, with_token), params)
    assert text is not None
    order = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", text)))
    prepared = re.sub(r"%\((\w+)\)s", lambda m: f"${order.index(m.group(1)) + 1}", text)
    values = sql.SQL(", ").join(sql.Literal(named[n]) for n in order).as_string(conn)
    return prepared, values


@pytest.mark.parametrize("with_token", [True, False], ids=["with-token", "by-owner"])
@pytest.mark.parametrize("newest_first", [True, False], ids=["newest", "oldest"])
def test_list_page_generic_plan_reads_the_index_in_order(db: Database, newest_first: bool, with_token: bool) -> None:
    params = {"limit": 100, "offset": 0, "token_hash": hash_token("sr_x"), "owner": "u1"}
    conn, cur = db._pg_checkout()  # a hot-path connection, with its session settings
    try:
        prepared, values = _prepared_page(db, conn, newest_first, with_token, params)
        cur.execute("SET plan_cache_mode = force_generic_plan")
        cur.execute(f"PREPARE page AS {prepared}")
        cur.execute(f"EXPLAIN (FORMAT JSON) EXECUTE page({values})")
        plan = cur.fetchone()[0]
        plan = plan if isinstance(plan, list) else json.loads(plan)
        nodes = list(_nodes(plan[0]["Plan"]))
        cur.execute("DEALLOCATE page")
        cur.execute("RESET plan_cache_mode")
    finally:
        conn.close()
    assert "Sort" not in nodes, nodes
    assert "Index Scan" in nodes or "Index Scan Backward" in nodes, nodes


def _two_owners(cur: Any) -> None:
    for owner in ("u1", "u2"):
        cur.execute("INSERT INTO users (id, username, created_at) VALUES (%s, %s, now())", (owner, owner))
        cur.execute(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, scopes, created_at) "
            "VALUES (%s, %s, 't', %s, 'sr_', 'read', now())",
            (f"t{owner}", owner, hash_token(f"sr_{owner}")),
        )
        cur.execute(
            "INSERT INTO credentials (id, owner_id, name, credential_type, description, public_data, wire, "
            "key_version, wrapped_key, ciphertext, revision, created_at, updated_at) "
            "SELECT %s || lpad(i::text, 22, '0'), %s, 'c' || i, 'basic', '', '{}', repeat('x', 200), 1, "
            "'\\x00', '\\x00', 1, now() + i * interval '1 millisecond', now() "
            "FROM generate_series(1, 1000) AS i",
            (owner, owner),
        )
        cur.execute(
            "INSERT INTO credential_counts (owner_id, credential_type, shard, n) VALUES (%s, 'basic', 0, 1000)",
            (owner,),
        )


@pytest.fixture
def two_owners() -> Iterator[Database]:
    """A store whose statistics know two owners of 1 000 credentials each (and a token each)."""
    with _analyzed_store(_two_owners) as database:
        yield database


def _plans_made(cur: Any, prepared: str, values: str, executions: int = 12) -> tuple[int, int]:
    """Execute a prepared statement repeatedly; how many times PostgreSQL used a generic and a custom plan."""
    cur.execute(f"PREPARE page AS {prepared}")
    for _ in range(executions):
        cur.execute(f"EXECUTE page({values})")
    cur.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'page'")
    generic, custom = cur.fetchone()
    cur.execute("DEALLOCATE page")
    return generic, custom


@pytest.mark.parametrize("with_token", [True, False], ids=["with-token", "by-owner"])
def test_hot_path_plans_a_list_page_once_with_many_owners(two_owners: Database, with_token: bool) -> None:
    """With several owners in the statistics and sorting priced out, PostgreSQL's default plan cache rates a
    custom plan below the generic one and re-plans every page (doubling its CPU per page); the hot-path
    connections plan once."""
    db = two_owners
    params = {"limit": 100, "offset": 0, "token_hash": hash_token("sr_u1"), "owner": "u1"}
    plain = db.engine.raw_connection()  # the hot path's sort setting alone: shows these statistics make it re-plan
    try:
        prepared, values = _prepared_page(db, plain.driver_connection, True, with_token, params)
        cur = plain.cursor()
        cur.execute("SET enable_sort = off")
        custom = _plans_made(cur, prepared, values)[1]
        # The page by owner shows these statistics make PostgreSQL re-plan; the token's page (which also checks
        # that its user is enabled and owner-only) may be rated either way, and must be planned once regardless.
        assert custom > 5 or with_token, "the statistics no longer make PostgreSQL re-plan"
    finally:
        plain.close()
    conn, cur = db._pg_checkout()  # a hot-path connection, with its session settings
    try:
        generic, custom = _plans_made(cur, prepared, values)
    finally:
        conn.close()
    assert (generic, custom) == (12, 0)
