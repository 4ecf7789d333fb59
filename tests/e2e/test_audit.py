"""The audit trail through a real server: a scripted session leaves exactly the records it should (request ids
equal to the X-Request-Id answers), the log is read over the API, the SDK and the CLI, and `audit verify`
names the first record that was edited, deleted or moved in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support import BACKENDS, Server, assert_error, backend_database, client, open_service, unique


@dataclass
class Person:
    username: str
    user_id: str
    token_id: str
    token: str


def _person(server: Server, prefix: str, *, admin: bool = False) -> Person:
    with open_service(server) as services:
        username = unique(prefix)
        user = services.accounts.create_user(username, admin=admin)
        token, raw = services.accounts.create_token(username)
    return Person(username, user.id, token.id, raw)


def _records(server: Server, token: str, **params: Any) -> list[dict[str, Any]]:
    """Every record the token may read with these filters, following the pages."""
    found: list[dict[str, Any]] = []
    with client(server, token) as http:
        resp = http.get("auditLog/", params={**params, "limit": 50})
        while True:
            assert resp.status_code == 200, resp.text
            page = resp.json()
            assert set(page) == {"count", "next", "previous", "data", "totalCount"}
            found += page["data"]
            if page["next"] is None:
                return found
            resp = http.get(page["next"])


def _expected(
    action: str,
    outcome: str,
    status: int,
    who: Person | None,
    rid: str,
    target: dict[str, Any] | None,
    detail: dict[str, Any],
) -> dict[str, Any]:
    actor = None if who is None else {"userId": who.user_id, "username": who.username, "tokenId": who.token_id}
    return {
        "action": action,
        "outcome": outcome,
        "status": status,
        "actor": actor,
        "address": "127.0.0.1",
        "requestId": rid,
        "target": target,
        "detail": detail,
    }


def test_a_scripted_session_leaves_exactly_its_records(server: Server) -> None:
    alice, bob, admin = _person(server, "alice"), _person(server, "bob"), _person(server, "auditor", admin=True)
    start = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    first, second = unique("warehouse"), unique("renamed")
    rids: list[str] = []

    def sent(resp: httpx.Response, status: int) -> httpx.Response:
        assert resp.status_code == status, resp.text
        rids.append(resp.headers["x-request-id"])
        return resp

    with client(server, alice.token) as a, client(server, bob.token) as b, client(server, "sr_" + "x" * 43) as bad:
        # A first create makes the server remember alice's token: the create below takes the path that checks
        # the token inside its write, and must audit the same record (address and request id included).
        assert a.post("credentials/", json={"name": unique("warm-up"), "user": "u", "password": "p"}).is_success
        cid = sent(a.post("credentials/", json={"name": first, "user": "u", "password": "p1"}), 201).json()
        cid = cid["credentialId"]
        sent(a.patch(f"credentials/{cid}/", json={"name": second}), 200)
        sent(a.patch(f"credentials/{cid}/", json={"password": "p2"}), 200)
        share = {"operation": "updateRoles", "roles": [{"username": bob.username, "role": "CONSUMER"}]}
        sent(a.patch(f"credentials/{cid}/sharedRoles/", json=share), 204)
        sent(bad.get("credentials/"), 401)
        sent(b.delete(f"credentials/{cid}/"), 403)
        sent(a.delete(f"credentials/{cid}/"), 204)

    def target(name: str) -> dict[str, Any]:
        return {"credentialId": cid, "name": name, "ownerId": alice.user_id}

    reason = "your role on this credential is CONSUMER; to delete it you need OWNER"
    expected = [
        _expected("credential.create", "success", 201, alice, rids[0], target(first), {}),
        _expected("credential.update", "success", 200, alice, rids[1], target(second), {"fields": ["name"]}),
        _expected(
            "credential.replace_secret", "success", 200, alice, rids[2], target(second), {"fields": ["password"]}
        ),
        _expected(
            "credential.share",
            "success",
            204,
            alice,
            rids[3],
            target(second),
            {"roles": [{"type": "user", "id": bob.user_id, "role": "CONSUMER"}]},
        ),
        _expected("auth.failed", "failed", 401, None, rids[4], None, {"path": "/api/v2/credentials/"}),
        _expected("credential.delete", "denied", 403, bob, rids[5], target(second), {"reason": reason}),
        _expected("credential.delete", "success", 204, alice, rids[6], target(second), {}),
    ]
    everything = _records(server, admin.token, since=start)
    mine = [r for r in everything if r["requestId"] in rids]
    assert [{k: v for k, v in r.items() if k != "time"} for r in mine] == expected
    times = [datetime.fromisoformat(r["time"]) for r in mine]
    assert times == sorted(times) and all(t >= datetime.fromisoformat(start) for t in times)

    # The owner reads every record about her credential (bob's refused delete included); bob, not its owner,
    # reads none of them; filters narrow what the admin sees.
    assert _records(server, alice.token, credentialId=cid) == mine[:4] + mine[5:]
    assert _records(server, bob.token, credentialId=cid) == []
    assert _records(server, admin.token, actor=bob.username) == [mine[5]]
    assert _records(server, admin.token, credentialId=cid, action="credential.update") == [mine[1]]
    assert _records(server, alice.token, actor=bob.username) == [mine[5]]
    assert _records(server, admin.token, credentialId=cid, until=start) == []


def test_since_and_until_take_iso_or_spans_and_name_the_bad_one(server: Server) -> None:
    alice = _person(server, "alice")
    with client(server, alice.token) as http:
        cid = http.post("credentials/", json={"name": unique(), "user": "u", "password": "p"}).json()["credentialId"]
        for since in ("1d", "12h", "30m", (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "2000-01-01"):
            page = http.get("auditLog/", params={"credentialId": cid, "since": since}).json()
            assert [r["action"] for r in page["data"]] == ["credential.create"], since
        assert http.get("auditLog/", params={"credentialId": cid, "until": "1h"}).json()["data"] == []
        assert_error(http.get("auditLog/", params={"since": "yesterday"}), 422, "since")
        assert_error(http.get("auditLog/", params={"until": "2024-13-45"}), 422, "until")
        assert_error(http.get("auditLog/", params={"limit": "0"}), 422, "limit")
        # Found by the fuzzer on PostgreSQL (500s): a NUL in a filter (refused, as the schema says), a moment
        # that leaves the calendar in UTC (the calendar's end: it bounds nothing).
        assert_error(http.get("auditLog/", params={"actor": "a\x00b"}), 422, "actor")
        for bound in ({"since": "0001-01-01T00:00:00+01:00"}, {"until": "9999-12-31T23:59:59-01:00"}):
            page = http.get("auditLog/", params={"credentialId": cid, **bound}).json()
            assert [r["action"] for r in page["data"]] == ["credential.create"], bound
        paged = http.get("auditLog/", params={"credentialId": cid, "limit": 1, "since": "1d"}).json()
        assert (paged["count"], paged["totalCount"], paged["next"]) == (1, 1, None)


def test_sdk_and_cli_read_the_log_remotely_and_locally(server: Server) -> None:
    import strongroom

    alice = _person(server, "alice")
    with strongroom.Client(endpoint=server.api, token=alice.token):
        cred = strongroom.Credential.create_basic(unique(), "u", "p")
        cred.update(name=unique("renamed"))
        records = strongroom.AuditRecord.list(credential_id=cred.credential_id, since="1d")
    assert [(r.action, r.actor, r.status, r.credential_id) for r in records] == [
        ("credential.create", alice.username, 201, cred.credential_id),
        ("credential.update", alice.username, 200, cred.credential_id),
    ]
    remote = server.cli("audit", "list", "--credential", str(cred.credential_id), "--json", "--token", alice.token)
    local = server.cli("audit", "list", "--local", "--credential", str(cred.credential_id), "--since", "1d", "--json")
    assert [json.loads(line) for line in remote.stdout.splitlines()] == [r.data for r in records]
    assert [json.loads(line) for line in local.stdout.splitlines()] == [r.data for r in records]
    table = server.cli("audit", "list", "--credential", str(cred.credential_id), "--token", alice.token)
    assert "credential.update" in table.stdout and alice.username in table.stdout
    refused = server.cli("audit", "list", "--local", "--since", "last week", check=False)
    assert refused.returncode == 1 and "--since" in refused.stderr


# ---- tampering with the stored log -------------------------------------------------------------------------


def _engine(server: Server) -> Any:
    from sqlalchemy import create_engine

    return create_engine(server.database_url or f"sqlite:///{server.data_dir / 'strongroom.db'}")


@pytest.fixture(params=BACKENDS)
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A store (no server running) whose log holds creates, updates and deletes of two users."""
    with backend_database(request.param) as url:
        store = Server(data_dir=tmp_path / "data", database_url=url)
        with open_service(store) as services:
            people = []
            for prefix in ("ann", "ben"):
                username = unique(prefix)
                services.accounts.create_user(username)
                people.append(services.accounts.authenticate(services.accounts.create_token(username)[1]))
            for who in people:
                for _ in range(3):
                    made = services.credentials.create(who, {"name": unique(), "user": "u", "password": "p"})
                    cid = json.loads(made)["credentialId"]
                    services.credentials.update(who, cid, {"name": unique("renamed")})
                services.credentials.delete(who, cid)
        yield store


Tamper = Callable[[Any, int, int], str]  # (connection, shard, last seq) -> the record `verify` must name


def _edit_content(conn: Any, shard: int, last: int) -> str:
    conn.exec_driver_sql(
        'UPDATE audit_log SET content = replace(content, \'"outcome":"success"\', \'"outcome":"denied"\') '
        f"WHERE shard = {shard} AND seq = 2"
    )
    return f"record {shard}/2: its hash does not match"


def _edit_column(conn: Any, shard: int, last: int) -> str:
    conn.exec_driver_sql(f"UPDATE audit_log SET actor = 'mallory' WHERE shard = {shard} AND seq = 3")
    return f"record {shard}/3: its columns differ from its content"


def _delete_middle(conn: Any, shard: int, last: int) -> str:
    conn.exec_driver_sql(f"DELETE FROM audit_log WHERE shard = {shard} AND seq = 2")
    return f"record {shard}/3: expected {shard}/2"


def _delete_last(conn: Any, shard: int, last: int) -> str:
    conn.exec_driver_sql(f"DELETE FROM audit_log WHERE shard = {shard} AND seq = {last}")
    return f"record {shard}/{last}: missing"


def _swap(conn: Any, shard: int, last: int) -> str:
    for old, new in ((2, -2), (3, 2), (-2, 3)):
        conn.exec_driver_sql(f"UPDATE audit_log SET seq = {new} WHERE shard = {shard} AND seq = {old}")
    return f"record {shard}/2: its hash does not match"


TAMPERS = {"edit content": _edit_content, "edit a column": _edit_column, "delete a middle record": _delete_middle}
TAMPERS |= {"delete the last record": _delete_last, "swap two records": _swap}


def test_verify_names_the_first_record_edited_deleted_or_moved(filled: Server) -> None:
    engine = _engine(filled)
    try:
        with engine.connect() as conn:
            total = conn.exec_driver_sql("SELECT count(*) FROM audit_log").scalar_one()
            shard, last = conn.exec_driver_sql(
                "SELECT shard, max(seq) FROM audit_log GROUP BY shard ORDER BY count(*) DESC LIMIT 1"
            ).one()
            kept = conn.exec_driver_sql(f"SELECT * FROM audit_log WHERE shard = {shard}").all()
            columns = list(conn.exec_driver_sql("SELECT * FROM audit_log LIMIT 1").keys())
        assert total >= 14 and last >= 4
        intact = filled.cli("audit", "verify")
        assert f"Verified {total} audit records" in intact.stdout
        for what, tamper in TAMPERS.items():
            with engine.begin() as conn:
                named = tamper(conn, shard, last)
            broken = filled.cli("audit", "verify", check=False)
            assert broken.returncode == 1, f"{what}: {broken.stdout}"
            assert named in broken.stderr, f"{what}: {broken.stderr}"
            with engine.begin() as conn:  # put the chain back as it was
                conn.exec_driver_sql(f"DELETE FROM audit_log WHERE shard = {shard}")
                marks = ", ".join(f":{c}" for c in columns)
                from sqlalchemy import text

                conn.execute(
                    text(f"INSERT INTO audit_log ({', '.join(columns)}) VALUES ({marks})"), [r._asdict() for r in kept]
                )
        assert f"Verified {total} audit records" in filled.cli("audit", "verify").stdout
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_writers_on_postgres_leave_chains_that_verify(tmp_path: Path) -> None:
    with backend_database("postgres") as url:
        srv = Server(data_dir=tmp_path / "data", database_url=url)
        srv.start()
        try:
            tokens = [srv.new_user("writer") for _ in range(8)]
            failures: list[str] = []

            def write(token: str) -> None:
                with client(srv, token) as http:
                    for i in range(12):
                        made = http.post("credentials/", json={"name": f"c{i}", "user": "u", "password": "p"})
                        if made.status_code != 201:
                            failures.append(made.text)
                            continue
                        if i % 3 == 0:
                            gone = http.delete(f"credentials/{made.json()['credentialId']}/")
                            if gone.status_code != 204:
                                failures.append(gone.text)

            threads = [threading.Thread(target=write, args=(t,)) for t in tokens]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert failures == []
        finally:
            srv.stop()
        engine = _engine(srv)
        try:
            with engine.connect() as conn:
                total = conn.exec_driver_sql("SELECT count(*) FROM audit_log").scalar_one()
                unnamed = conn.execute(
                    text("SELECT count(*) FROM audit_log WHERE content LIKE :pattern"), {"pattern": '%"name":null%'}
                ).scalar_one()
        finally:
            engine.dispose()
        assert total == 8 * (12 + 4) + 8 * 2 and unnamed == 0  # and each writer's user.create and token.create
        assert f"Verified {total} audit records" in srv.cli("audit", "verify").stdout
