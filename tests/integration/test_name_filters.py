"""Finding credentials by name on a real store (both backends): `name` (exact) and `search` (substring, any case)
through the service, shared credentials included, and the plans that serve them from the (owner, name) index."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import InvalidInput
from strongroom.services.accounts import Principal
from strongroom.store import db as db_module
from strongroom.store.repositories import credentials as credentials_repository
from strongroom.store.repositories.credentials import _shared_page, index_all_names
from tests.support import BACKENDS, backend_database, make_credential, names_indexed, names_waiting, until

Store = tuple[Services, Principal, Principal]


@pytest.fixture(params=[*BACKENDS, "sqlite-indexed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store with alice (who owns a few credentials) and bob (who shares one of his named like one of hers).
    SQLite's names wait to join the trigram index (migration 0017) until many more are created: `sqlite` searches
    them as they wait, `sqlite-indexed` once indexed."""
    with backend_database(request.param.removesuffix("-indexed"), migrated=True) as url:
        services = Services.open(Settings(data_dir=tmp_path, database_url=url))
        tokens = []
        for name in ("alice", "bob"):
            services.accounts.create_user(name)
            tokens.append(services.accounts.create_token(name)[1])
        alice, bob = (services.accounts.authenticate(token) for token in tokens)
        for name in ("warehouse", "Warehouse-EU", "lake", "100%_real", "100xxreal"):
            make_credential(services, alice, {"name": name, "user": "u", "password": "p"})
        shared = make_credential(services, bob, {"name": "warehouse", "user": "u", "password": "p"})
        make_credential(services, bob, {"name": "bobs-warehouse", "user": "u", "password": "p"})
        services.sharing.update_roles(
            bob,
            shared["credentialId"],
            {"operation": "updateRoles", "roles": [{"username": "alice", "role": "CONSUMER"}]},
        )
        alice = services.accounts.authenticate(tokens[0])  # as a request after the share sees her: `shared`
        if request.param == "sqlite-indexed":
            _index_names(services)
        assert alice.shared and not bob.shared  # bob sees only his own: the owner-only statement serves him
        try:
            yield services, alice, bob
        finally:
            services.close()


def _index_names(services: Services) -> None:
    """SQLite: index every name that waits, as the committer does once enough of them wait."""
    with services.db.engine.begin() as conn:
        index_all_names(conn)
    assert names_waiting(services) == 0


def _found(services: Services, who: Principal, **filters: Any) -> list[tuple[str, str]]:
    page = services.credentials.list(who, order_by="creationDate", **filters)
    found = [(item["name"], item["role"]) for item in page.credentials()]
    assert page.total == len(found)
    return found


def test_name_is_exact_and_includes_what_is_shared(store: Store) -> None:
    services, alice, bob = store
    assert _found(services, alice, name="warehouse") == [("warehouse", "OWNER"), ("warehouse", "CONSUMER")]
    assert _found(services, bob, name="warehouse") == [("warehouse", "OWNER")]
    assert _found(services, alice, name="Warehouse") == []  # exact: case matters
    assert _found(services, alice, name="bobs-warehouse") == []  # not shared with her
    assert _found(services, alice, name="lake", types_filter=["s3"]) == []


def test_search_is_a_substring_ignoring_case(store: Store) -> None:
    services, alice, _ = store
    assert _found(services, alice, search="WAREHOUSE") == [
        ("warehouse", "OWNER"),
        ("Warehouse-EU", "OWNER"),
        ("warehouse", "CONSUMER"),
    ]
    assert _found(services, alice, search="-eu") == [("Warehouse-EU", "OWNER")]
    assert _found(services, alice, search="%_") == [("100%_real", "OWNER")]  # LIKE's wildcards match as typed
    assert _found(services, alice, search="ware", role="CONSUMER") == [("warehouse", "CONSUMER")]
    page = services.credentials.list(alice, search="a", limit=2, offset=1, order_by="creationDate")
    assert [item["name"] for item in page.credentials()] == ["Warehouse-EU", "lake"] and page.total == 6


def test_names_compare_in_nfc(store: Store) -> None:
    services, alice, _ = store
    make_credential(services, alice, {"name": "cafe\u0301", "user": "u", "password": "p"})  # stored as NFC
    assert _found(services, alice, name="caf\u00e9") == [("caf\u00e9", "OWNER")]
    assert _found(services, alice, search="Fe\u0301") == [("caf\u00e9", "OWNER")]


@pytest.mark.parametrize("bad", ["", "x" * 256])
def test_empty_or_overlong_filters_are_refused(store: Store, bad: str) -> None:
    services, alice, _ = store
    for key in ("name", "search"):
        with pytest.raises(InvalidInput) as caught:
            services.credentials.list(alice, **{key: bad})
        assert caught.value.errors == {key: "must be 1 to 255 characters"}


def _plan(services: Services, statement: Any, params: dict[str, Any]) -> str:
    """The backend's plan for `statement`, as one string."""
    db = services.db
    compiled = statement.compile(dialect=db.engine.dialect)
    sql = str(compiled)
    with db.engine.connect() as conn:
        if db.is_sqlite:
            values = tuple({**compiled.params, **params}[name] for name in compiled.positiontup)
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, values).all()
            return "\n".join(str(row[-1]) for row in rows)
        conn.execute(text("SET enable_seqscan = off"))  # the shape, not this tiny table's costs
        rows = conn.exec_driver_sql("EXPLAIN " + sql, {**compiled.params, **params}).all()
        return "\n".join(row[0] for row in rows)


def _grow(services: Services) -> None:
    """PostgreSQL: give alice 5 000 more credentials and analyse, so that plans are those of a store where the
    indexes pay (on a handful of rows any plan is as cheap)."""
    if services.db.is_sqlite:
        return
    with services.db.engine.begin() as conn:
        columns = ", ".join(conn.exec_driver_sql("SELECT * FROM credentials LIMIT 0").keys())
        copied = columns.replace("id, ", "left(md5(n::text), 24), ", 1).replace("name, ", "'bulk-' || n, ", 1)
        conn.exec_driver_sql(
            f"INSERT INTO credentials ({columns}) SELECT {copied} FROM credentials, generate_series(1, 5000) n "
            "WHERE credentials.name = 'lake'"
        )
        conn.exec_driver_sql("ANALYZE credentials")


@pytest.mark.parametrize("owner_only", [False, True])
def test_name_lookup_reads_the_owner_name_index(store: Store, owner_only: bool) -> None:
    services, alice, _ = store
    _grow(services)
    params = {"user": alice.user_id, "name": "warehouse", "limit": 100, "offset": 0}
    statement = _shared_page(True, False, False, True, False, False, owner_only, services.db.is_sqlite)
    plan = _plan(services, statement, params)
    assert "uq_credentials_owner_name" in plan or "(owner_id=? AND name=?)" in plan, plan
    assert not re.search(r"SCAN credentials\b(?! USING)|Seq Scan on credentials", plan), plan


@pytest.mark.parametrize("owner_only", [False, True])
def test_search_reads_the_trigram_index_once(store: Store, owner_only: bool) -> None:
    """Three characters or more: the trigram index finds the candidates (migration 0013), never a walk of the
    owner's rows (PostgreSQL's `ILIKE` uses its GIN index; SQLite's FTS5 table drives the join), and only once
    per page: the count and the page read the same matches (`hits`), so `totalCount` costs no second search."""
    services, alice, _ = store
    sqlite = services.db.is_sqlite
    _grow(services)
    params = {"user": alice.user_id, "search": "%house%", "phrase": '"house"', "limit": 100, "offset": 0}
    plan = _plan(services, _shared_page(True, False, False, False, True, sqlite, owner_only, sqlite), params)
    if sqlite:
        assert plan.count("credential_names VIRTUAL TABLE INDEX") == 1, plan
        first = plan.index("credential_names VIRTUAL TABLE INDEX")
        assert "USING INTEGER PRIMARY KEY (rowid=?)" in plan[first:], plan
        assert "(owner_id=?)" not in plan, plan
        assert "SEARCH credentials USING INTEGER PRIMARY KEY (rowid>?)" in plan, plan  # names not indexed yet
        assert plan.count("MATERIALIZE hits") == 1, plan
    else:
        assert plan.count("Index Scan on ix_credentials_name_trgm") == 1, plan
        assert "CTE hits" in plan, plan


def test_search_text_is_taken_as_typed(store: Store) -> None:
    """LIKE's `%` and `_` and FTS5's `"` are plain characters in a search of any length (three or more go through
    the trigram table on SQLite)."""
    services, alice, _ = store
    make_credential(services, alice, {"name": 'say "hi" 50%', "user": "u", "password": "p"})
    assert _found(services, alice, search="0%_r") == [("100%_real", "OWNER")]
    assert _found(services, alice, search="0%_") == [("100%_real", "OWNER")]
    assert _found(services, alice, search='"HI"') == [('say "hi" 50%', "OWNER")]
    assert _found(services, alice, search='"') == [('say "hi" 50%', "OWNER")]
    assert _found(services, alice, search=" 50%") == [('say "hi" 50%', "OWNER")]
    assert _found(services, alice, search="x_r") == []


def test_search_case_beyond_ascii_follows_the_backend(store: Store) -> None:
    """PostgreSQL's ILIKE folds every letter; SQLite's LIKE ASCII letters only (README), whatever the length of the
    search: the trigram table, which folds more, only proposes candidates that LIKE then decides on."""
    services, alice, _ = store
    make_credential(services, alice, {"name": "Über-Straße", "user": "u", "password": "p"})
    beyond_ascii = [] if services.db.is_sqlite else [("Über-Straße", "OWNER")]
    assert _found(services, alice, search="ÜBER") == [("Über-Straße", "OWNER")]  # ASCII letters: any case
    assert _found(services, alice, search="üBER") == beyond_ascii
    assert _found(services, alice, search="ü") == beyond_ascii
    assert _found(services, alice, search="STRASSE") == []  # a fold, not a case: ß stays ß
    assert _found(services, alice, search="straße") == [("Über-Straße", "OWNER")]


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_a_filtered_page_counts_every_match(store: Store, who: str) -> None:
    """Pages walk the matches in order with the same total on each, and a page past the end still says how many
    there are, for users with shares (alice) and without (bob)."""
    services, alice, bob = store
    user = alice if who == "alice" else bob
    for n in range(5):
        make_credential(services, user, {"name": f"Page-{n}", "user": "u", "password": "p"})
    for order in ("creationDate", "-creationDate"):
        pages = [
            services.credentials.list(user, search="PAGE-", limit=2, offset=o, order_by=order) for o in (0, 2, 4, 6)
        ]
        assert [p.total for p in pages] == [5, 5, 5, 5]
        names = [item["name"] for p in pages for item in p.credentials()]
        assert names == [f"Page-{n}" for n in (range(5) if order == "creationDate" else reversed(range(5)))]
    assert services.credentials.list(user, search="page-", role="OWNER").total == 5
    assert services.credentials.list(user, search="page-", role="CONSUMER").total == 0
    assert services.credentials.list(user, name="Page-3", search="GE-").total == 1


def test_search_follows_renames_and_deletes(store: Store) -> None:
    services, alice, _ = store
    lake = next(c for c in services.credentials.list(alice, name="lake").credentials())
    services.credentials.update(alice, lake["credentialId"], {"name": "Reservoir"})
    assert _found(services, alice, search="servo") == [("Reservoir", "OWNER")]
    assert _found(services, alice, search="lake") == []
    services.credentials.delete(alice, lake["credentialId"])
    assert _found(services, alice, search="servo") == []
    assert _found(services, alice, search="WAREHOUSE") == [
        ("warehouse", "OWNER"),
        ("Warehouse-EU", "OWNER"),
        ("warehouse", "CONSUMER"),
    ]


@pytest.mark.parametrize("key", ["name", "search"])
def test_a_nul_in_a_filter_is_refused_not_a_server_error(store: Store, key: str) -> None:
    """PostgreSQL text cannot hold NUL: a filter with one is a 422 naming it on both backends, never a 500;
    likewise the data-store list's `name`, while an unknown store `type` lists nothing."""
    services, alice, _ = store
    with pytest.raises(InvalidInput) as caught:
        services.credentials.list(alice, **{key: "a\x00b"})
    assert caught.value.errors == {key: "must not contain NUL"}
    with pytest.raises(InvalidInput) as caught:
        services.datastores.list(alice, None, "a\x00b")
    assert caught.value.errors == {"name": "must not contain NUL"}
    assert services.datastores.list(alice, "\x00bogus", None) == []


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_names_join_the_index_in_bulk_or_when_writes_pause(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A create leaves its name out of the trigram index (migration 0017); the committer indexes the waiting names
    once `NAMES_BULK` wait, or when no write has come for a second, and a search finds them all along."""
    services, alice, _ = store
    waiting = names_waiting(services)  # the fixture's
    monkeypatch.setattr(credentials_repository, "NAMES_BULK", waiting + 5)
    monkeypatch.setattr(db_module, "UPKEEP_IDLE", 3600)  # only the bulk can index them
    for n in range(4):
        make_credential(services, alice, {"name": f"bulk-{n}", "user": "u", "password": "p"})
    assert names_waiting(services) == waiting + 4 and names_indexed(services, "bulk-") == 0
    assert len(_found(services, alice, search="BULK-")) == 4
    make_credential(services, alice, {"name": "bulk-last", "user": "u", "password": "p"})
    until(lambda: names_waiting(services) == 0, 15, "indexing the names after the batch that made enough of them wait")
    assert names_indexed(services, "bulk-") == 5
    assert len(_found(services, alice, search="BULK-")) == 5
    monkeypatch.setattr(db_module, "UPKEEP_IDLE", 0.2)
    make_credential(services, alice, {"name": "later-1", "user": "u", "password": "p"})
    until(lambda: names_waiting(services) == 0, 15, "indexing the name left waiting once writes paused")
    assert names_indexed(services, "later-") == 1
    assert _found(services, alice, search="ater-1") == [("later-1", "OWNER")]


@pytest.mark.parametrize("store", ["sqlite-indexed"], indirect=True)
def test_a_name_created_after_the_newest_rows_were_deleted_is_still_found(store: Store) -> None:
    """SQLite gives a new row the highest rowid plus one: after the newest rows are deleted, a new credential may get
    a rowid the index had counted as indexed. The delete lowers that mark, so the new name is searched as waiting."""
    services, alice, _ = store
    newest = [make_credential(services, alice, {"name": f"gone-{n}", "user": "u", "password": "p"}) for n in range(3)]
    _index_names(services)
    for item in newest:
        services.credentials.delete(alice, item["credentialId"])
    assert names_indexed(services, "gone-") == 0
    fresh = make_credential(services, alice, {"name": "phoenix", "user": "u", "password": "p"})
    assert _found(services, alice, search="HOENI") == [("phoenix", "OWNER")]
    _index_names(services)
    assert names_indexed(services, "hoeni") == 1  # indexed once, not twice
    assert _found(services, alice, search="HOENI") == [("phoenix", "OWNER")]
    services.credentials.update(alice, fresh["credentialId"], {"name": "phoebe"})
    assert _found(services, alice, search="HOENI") == [] and _found(services, alice, search="oeb") == [
        ("phoebe", "OWNER")
    ]
