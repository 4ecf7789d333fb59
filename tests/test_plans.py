"""PostgreSQL query plans of the hot path: a list page reads the index in order and never sorts the owner's rows.

Prepared statements get a generic plan made from the statistics of the moment. One made while the table was
small chose "fetch the owner's rows, then sort them", kept it as the owner grew, and a page at 100 000
credentials took 0.7 s instead of 10 ms. The hot-path connections price sorting out; this holds them to it
with the worst case forced: a generic plan from statistics that say the table is tiny.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

from strongroom.service import _page, hash_token
from strongroom.store.db import Database
from tests.conftest import postgres_store

pytestmark = pytest.mark.postgres


@pytest.fixture
def db() -> Iterator[Database]:
    with postgres_store() as database:
        conn = database.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute("INSERT INTO users (id, username, created_at) VALUES ('u1', 'u', now())")
            cur.execute("ANALYZE")  # statistics of an empty store: any owner looks like it has no credentials
            conn.commit()
        finally:
            conn.close()
        yield database


def _nodes(plan: dict[str, Any]) -> Iterator[str]:
    yield plan["Node Type"]
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.parametrize("with_token", [True, False], ids=["with-token", "by-owner"])
@pytest.mark.parametrize("newest_first", [True, False], ids=["newest", "oldest"])
def test_list_page_generic_plan_reads_the_index_in_order(db: Database, newest_first: bool, with_token: bool) -> None:
    params = {"limit": 100, "offset": 0, "token_hash": hash_token("sr_x"), "owner": "u1"}
    text, named = db._pg_bind(_page(True, newest_first, False, with_token), params)
    assert text is not None
    order = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", text)))
    prepared = re.sub(r"%\((\w+)\)s", lambda m: f"${order.index(m.group(1)) + 1}", text)
    conn, cur = db._pg_checkout()  # a hot-path connection, with its session settings
    try:
        cur.execute("SET plan_cache_mode = force_generic_plan")
        cur.execute(f"PREPARE page AS {prepared}")
        values = sql.SQL(", ").join(sql.Literal(named[n]) for n in order).as_string(conn)
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
