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
from strongroom.store.repositories.credentials import _shared_page
from tests.support import BACKENDS, backend_database, make_credential

Store = tuple[Services, Principal, Principal]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store with alice (who owns a few credentials) and bob (who shares one of his named like one of hers)."""
    with backend_database(request.param) as url:
        services = Services.open(Settings(data_dir=tmp_path, database_url=url))
        people = []
        for name in ("alice", "bob"):
            services.accounts.create_user(name)
            people.append(services.accounts.authenticate(services.accounts.create_token(name)[1]))
        alice, bob = people
        for name in ("warehouse", "Warehouse-EU", "lake", "100%_real", "100xxreal"):
            make_credential(services, alice, {"name": name, "user": "u", "password": "p"})
        shared = make_credential(services, bob, {"name": "warehouse", "user": "u", "password": "p"})
        make_credential(services, bob, {"name": "bobs-warehouse", "user": "u", "password": "p"})
        services.sharing.update_roles(
            bob,
            shared["credentialId"],
            {"operation": "updateRoles", "roles": [{"username": "alice", "role": "CONSUMER"}]},
        )
        try:
            yield services, alice, bob
        finally:
            services.close()


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


def test_name_lookup_reads_the_owner_name_index(store: Store) -> None:
    services, alice, _ = store
    params = {"user": alice.user_id, "name": "warehouse", "limit": 100, "offset": 0}
    for statement in _shared_page(True, False, False, True, False):
        plan = _plan(services, statement, params)
        assert "uq_credentials_owner_name" in plan or "(owner_id=? AND name=?)" in plan, plan
        assert not re.search(r"SCAN credentials\b(?! USING)|Seq Scan on credentials", plan), plan


def test_search_reads_the_trigram_index(store: Store) -> None:
    """Three characters or more: the trigram index finds the candidates (migration 0013), never a walk of the
    owner's rows (PostgreSQL's `ILIKE` uses its GIN index; SQLite's FTS5 table drives the join)."""
    services, alice, _ = store
    if not services.db.is_sqlite:  # statistics of an owner with many credentials, as where the index pays
        with services.db.engine.begin() as conn:
            columns = ", ".join(conn.exec_driver_sql("SELECT * FROM credentials LIMIT 0").keys())
            copied = columns.replace("id, ", "left(md5(n::text), 24), ", 1).replace("name, ", "'bulk-' || n, ", 1)
            conn.exec_driver_sql(
                f"INSERT INTO credentials ({columns}) SELECT {copied} FROM credentials, generate_series(1, 5000) n "
                "WHERE credentials.name = 'lake'"
            )
            conn.exec_driver_sql("ANALYZE credentials")
    params = {"user": alice.user_id, "search": "%house%", "search_plain": "%house%", "limit": 100, "offset": 0}
    for statement in _shared_page(True, False, False, False, True, services.db.is_sqlite):
        plan = _plan(services, statement, params)
        if services.db.is_sqlite:
            first = plan.index("credential_names VIRTUAL TABLE INDEX")
            assert "USING INTEGER PRIMARY KEY (rowid=?)" in plan[first:], plan
            assert "(owner_id=?)" not in plan, plan
        else:
            assert "ix_credentials_name_trgm" in plan, plan


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
