"""Using credentials by id (issue 17): drivers, data stores, connection tests, browsing, associations, reveal and
the SSRF guard, through a real server, with the real `datarobot` client, against a scram-sha-256 PostgreSQL
cluster and a MariaDB user that check passwords."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datarobot as dr
import httpx
import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from tests.support import (
    PeerDatabase,
    Server,
    assert_error,
    client,
    mariadb_user,
    named_user,
    scram_postgres,
    unique,
)

DENIED_HOST = "db.denied.test"
DENIED_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, PeerDatabase]]:
    with scram_postgres() as pg, mariadb_user() as maria:
        yield {"postgres": pg, "mariadb": maria}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose deny list names a host and a loopback address, with short connection timeouts."""
    env = {
        "STRONGROOM_CONNECT_DENY": f"{DENIED_HOST},{DENIED_ADDRESS}/32",
        "STRONGROOM_CONNECT_TIMEOUT": "3",
    }
    with Server(data_dir=tmp_path_factory.mktemp("ds") / "srv", extra_env=env) as server:
        yield server


@pytest.fixture
def owner(srv: Server) -> Iterator[httpx.Client]:
    with client(srv, named_user(srv, "owner")[1]) as c:
        yield c


def _driver(api: httpx.Client, database_driver: str) -> str:
    drivers = api.get("externalDataDrivers/").json()["data"]
    return str(next(d["id"] for d in drivers if d["databaseDriver"] == database_driver))


def _store(api: httpx.Client, peer: PeerDatabase, name: str | None = None) -> dict[str, Any]:
    driver = _driver(api, "postgres" if peer.scheme == "postgresql" else "mysql")
    body = {
        "type": "jdbc",
        "canonicalName": name or unique("store"),
        "params": {"driverId": driver, "jdbcUrl": peer.jdbc_url},
    }
    resp = api.post("externalDataStores/", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _basic(api: httpx.Client, user: str, password: str) -> str:
    resp = api.post("credentials/", json={"name": unique("db"), "user": user, "password": password})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["credentialId"])


@pytest.mark.parametrize("which", ["postgres", "mariadb"])
def test_the_datarobot_client_tests_and_browses_a_store(
    srv: Server, peers: dict[str, PeerDatabase], which: str
) -> None:
    """The issue's "Done when" with the real client: drivers, create, test by id / by user+password / setting
    the default, schemas and tables; a wrong password fails saying authentication failed, and never echoes it."""
    peer = peers[which]
    _, token = named_user(srv, "dr")
    dr.Client(endpoint=srv.api, token=token)
    drivers = dr.DataDriver.list()
    wanted = "postgres" if which == "postgres" else "mysql"
    driver = next(d for d in drivers if d.database_driver == wanted)
    store = dr.DataStore.create(
        data_store_type="jdbc", canonical_name=unique("shop"), driver_id=driver.id, jdbc_url=peer.jdbc_url
    )
    assert store.role == "OWNER" and store.params.jdbc_url == peer.jdbc_url
    good = dr.Credential.create_basic(name=unique("good"), user=peer.user, password=peer.password)
    bad_password = "wrong-" + peer.password
    bad = dr.Credential.create_basic(name=unique("bad"), user=peer.user, password=bad_password)

    assert store.test(credential_id=good.credential_id) == {"message": "Connection successful"}
    assert store.test(username=peer.user, password=peer.password)["message"] == "Connection successful"
    store.test(credential_id=good.credential_id, set_default_credential=True)
    for attempt in (lambda: store.test(credential_id=bad.credential_id), lambda: store.test(peer.user, bad_password)):
        with pytest.raises(dr.errors.ClientError) as failed:
            attempt()
        assert failed.value.status_code == 400
        assert "authentication failed" in str(failed.value) and bad_password not in str(failed.value)

    schemas = store.schemas(peer.user, peer.password)
    schema = "public" if which == "postgres" else peer.database
    assert schema in schemas["schemas"]
    tables = store.tables(peer.user, peer.password, schema)
    assert {"type": "TABLE", "name": "orders", "schema": schema} in [
        {k: t[k] for k in ("type", "name", "schema")} for t in tables["tables"]
    ]
    with pytest.raises(dr.errors.ClientError, match="authentication failed"):
        store.schemas(peer.user, bad_password)
    assert [r.role for r in store.get_shared_roles()] == ["OWNER"]


def test_api_uses_the_default_credential_and_previews(owner: httpx.Client, peers: dict[str, PeerDatabase]) -> None:
    """With no credential in the body the caller's default is used; preview and previewQuery return rows."""
    peer = peers["postgres"]
    store = _store(owner, peer)
    sid = store["id"]
    assert_error(owner.post(f"externalDataStores/{sid}/test/", json={}), 422, "credentialId")
    cid = _basic(owner, peer.user, peer.password)
    assert (
        owner.put(f"credentials/{cid}/associations/dataconnection:{sid}/", json={"isDefault": True}).status_code == 201
    )
    assert (
        owner.put(f"credentials/{cid}/associations/dataconnection:{sid}/", json={"isDefault": True}).status_code == 200
    )
    linked = owner.get(f"credentials/associations/dataconnection:{sid}/", params={"orderBy": "-isDefault"}).json()
    assert [(a["credentialId"], a["isDefault"], a["credentialType"]) for a in linked["data"]] == [(cid, True, "basic")]
    assert owner.get(f"credentials/{cid}/associations/").json()["data"] == [
        {"objectType": "dataconnection", "objectId": sid, "isDefault": True}
    ]
    assert owner.post(f"externalDataStores/{sid}/test/").json() == {"message": "Connection successful"}
    preview = owner.post(
        f"externalDataStores/{sid}/preview/", json={"table": "orders", "schema": "public", "maxRows": 1}
    )
    assert preview.json() == {"columns": ["id", "item"], "records": [[1, "apple"]]}
    query = owner.post(f"externalDataStores/{sid}/previewQuery/", json={"sql": "SELECT item FROM orders ORDER BY id"})
    assert query.json()["records"] == [["apple"], ["pear"]]
    # previewQuery is read-only: a write is refused by the database and nothing changes.
    write = owner.post(f"externalDataStores/{sid}/previewQuery/", json={"sql": "DELETE FROM orders"})
    assert write.status_code in (400, 422), write.text
    data = {"credentialData": {"credentialType": "basic", "user": peer.user, "password": peer.password}}
    assert owner.post(f"externalDataStores/{sid}/tables/", json={**data, "schema": "public"}).status_code == 200
    # The credential is the store's default: deleting it is refused, naming the store, unless forced.
    refused = assert_error(owner.delete(f"credentials/{cid}/"), 409)
    assert store["canonicalName"] in refused["message"]
    assert owner.delete(f"credentials/{cid}/", params={"force": "true"}).status_code == 204


def _peer_rows(peer: PeerDatabase, sql: str) -> list[tuple[Any, ...]]:
    """Rows of `sql` run on the peer as its user, outside the server."""
    if peer.scheme == "postgresql":
        import psycopg

        dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
        with psycopg.connect(dsn) as conn:
            return list(conn.execute(sql).fetchall())
    import pymysql

    conn = pymysql.connect(
        host=peer.host, port=peer.port, user=peer.user, password=peer.password, database=peer.database
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("which", ["postgres", "mariadb"])
def test_preview_query_runs_one_read_only_statement(
    owner: httpx.Client, peers: dict[str, PeerDatabase], which: str
) -> None:
    """A leading COMMIT cannot end previewQuery's read-only transaction: several statements are refused (4xx
    naming sql) and nothing is written; one statement is read-only; a plain SELECT (with a literal %) works."""
    peer = peers[which]
    sid, cid = _store(owner, peer)["id"], _basic(owner, peer.user, peer.password)
    table = unique("pwn").replace("-", "_")
    escapes = (
        f"COMMIT; CREATE TABLE {table} (x int); INSERT INTO orders VALUES (-1, 'written'); SELECT 1",
        "SELECT 1; SELECT 2",
        f"CREATE TABLE {table} (x int)",
        "INSERT INTO orders VALUES (-1, 'written')",
    )
    for sql in escapes:
        answer = owner.post(f"externalDataStores/{sid}/previewQuery/", json={"credentialId": cid, "sql": sql})
        assert_error(answer, 422, "sql")
    catalog = f"SELECT table_name FROM information_schema.tables WHERE table_name = '{table}'"
    assert _peer_rows(peer, catalog) == []
    assert _peer_rows(peer, "SELECT id FROM orders ORDER BY id") == [(1,), (2,)]
    query = {"credentialId": cid, "sql": "SELECT item, '50%' AS share FROM orders ORDER BY id"}
    fine = owner.post(f"externalDataStores/{sid}/previewQuery/", json=query)
    assert fine.status_code == 200, fine.text
    assert fine.json() == {"columns": ["item", "share"], "records": [["apple", "50%"], ["pear", "50%"]]}


def test_failures_say_why(owner: httpx.Client, peers: dict[str, PeerDatabase]) -> None:
    """Unreachable host, missing database and wrong password each get their own message."""
    peer = peers["postgres"]
    login = {"user": peer.user, "password": peer.password}
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    driver = _driver(owner, "postgres")
    cases = {
        f"jdbc:postgresql://127.0.0.1:{port}/shop": "host unreachable",
        f"jdbc:postgresql://127.0.0.1:{peer.port}/nosuchdb": "database does not exist",
    }
    for url, reason in cases.items():
        body = {"type": "jdbc", "canonicalName": unique("s"), "params": {"driverId": driver, "jdbcUrl": url}}
        sid = owner.post("externalDataStores/", json=body).json()["id"]
        answer = assert_error(owner.post(f"externalDataStores/{sid}/test/", json=login), 400)
        assert answer["message"].startswith(reason), answer
        assert peer.password not in answer["message"]


def test_crud_and_patch_echo(owner: httpx.Client, other: httpx.Client, peers: dict[str, PeerDatabase]) -> None:
    peer = peers["mariadb"]
    store = _store(owner, peer, name=unique("crud"))
    sid = store["id"]
    assert set(store) >= {"id", "type", "canonicalName", "creator", "updated", "role", "params"}
    assert owner.get("externalDataStores/", params={"type": "jdbc", "name": store["canonicalName"]}).json()["data"] == [
        store
    ]
    mariadb_url = peer.jdbc_url.replace("jdbc:mysql:", "jdbc:mariadb:")
    patched = owner.patch(
        f"externalDataStores/{sid}/", json={"canonicalName": "renamed", "params": {"jdbcUrl": mariadb_url}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["canonicalName"] == "renamed" and patched.json()["params"]["jdbcUrl"] == mariadb_url
    assert owner.get(f"externalDataStores/{sid}/").json()["canonicalName"] == "renamed"
    assert_error(other.get(f"externalDataStores/{sid}/"), 404)
    assert other.get("externalDataStores/").json()["data"] == []
    bad = {"type": "jdbc", "canonicalName": "x", "params": {"jdbcUrl": "jdbc:oracle:thin:@h:1521/x"}}
    assert_error(owner.post("externalDataStores/", json=bad), 422, "params.jdbcUrl")
    assert owner.delete(f"externalDataStores/{sid}/").status_code == 204
    assert_error(owner.get(f"externalDataStores/{sid}/"), 404)


@pytest.fixture
def other(srv: Server) -> Iterator[httpx.Client]:
    with client(srv, named_user(srv, "other")[1]) as c:
        yield c


def test_a_consumer_uses_but_never_reveals(srv: Server, owner: httpx.Client, peers: dict[str, PeerDatabase]) -> None:
    """Shared as CONSUMER (credential and store) and linked to the store by the owner: test and browse work;
    reveal is 403; the owner's reveal returns the secret with Cache-Control: no-store, and both are audited."""
    peer = peers["postgres"]
    username, token = named_user(srv, "consumer")
    store = _store(owner, peer)
    cid = _basic(owner, peer.user, peer.password)
    share = {"operation": "updateRoles", "roles": [{"username": username, "role": "CONSUMER"}]}
    assert owner.patch(f"credentials/{cid}/sharedRoles/", json=share).status_code == 204
    assert owner.patch(f"externalDataStores/{store['id']}/sharedRoles/", json=share).status_code == 204
    assert owner.put(f"credentials/{cid}/associations/dataconnection:{store['id']}/", json={}).status_code == 201
    with client(srv, token) as consumer:
        assert consumer.get(f"externalDataStores/{store['id']}/").json()["role"] == "CONSUMER"
        tested = consumer.post(f"externalDataStores/{store['id']}/test/", json={"credentialId": cid})
        assert tested.status_code == 200, tested.text
        assert (
            consumer.post(f"externalDataStores/{store['id']}/schemas/", json={"credentialId": cid}).status_code == 200
        )
        answer = assert_error(consumer.post(f"credentials/{cid}/reveal/"), 403)
        assert peer.password not in answer["message"]
        assert_error(consumer.delete(f"externalDataStores/{store['id']}/"), 403)
    revealed = owner.post(f"credentials/{cid}/reveal/")
    assert revealed.status_code == 200 and revealed.headers["cache-control"] == "no-store"
    assert revealed.json()["password"] == peer.password and revealed.json()["user"] == peer.user
    services = Services.open(Settings(data_dir=srv.data_dir, database_url=srv.database_url))
    try:
        records = [r for r in services.audit.export() if cid in r]
    finally:
        services.close()
    actions = [r.split('"action":"', 1)[1].split('"', 1)[0] for r in records]
    assert {"credential.use", "credential.reveal"} <= set(actions), actions
    assert not any(peer.password in r for r in records)


def _listener(address: str) -> tuple[socket.socket, list[Any]]:
    """A socket listening on `address`, recording every connection it accepts."""
    sock = socket.socket()
    sock.bind((address, 0))
    sock.listen()
    sock.settimeout(0.2)
    accepted: list[Any] = []

    def run() -> None:
        while sock.fileno() != -1:
            try:
                accepted.append(sock.accept())
            except (TimeoutError, OSError):
                continue

    threading.Thread(target=run, daemon=True).start()
    return sock, accepted


def test_ssrf_metadata_and_denied_hosts_are_refused_before_any_packet(owner: httpx.Client) -> None:
    """169.254.169.254, a denied host name and a denied network answer 403 naming the rule; the listener on the
    denied address never sees a connection."""
    sock, accepted = _listener(DENIED_ADDRESS)
    port = sock.getsockname()[1]
    driver = _driver(owner, "postgres")
    login = {"user": "u", "password": "p"}
    cases = {
        "jdbc:postgresql://169.254.169.254:5432/x": "link-local or cloud metadata",
        f"jdbc:postgresql://{DENIED_HOST}:5432/x": "deny list",
        f"jdbc:postgresql://{DENIED_ADDRESS}:{port}/x": "deny list",
    }
    try:
        for url, why in cases.items():
            body = {"type": "jdbc", "canonicalName": unique("ssrf"), "params": {"driverId": driver, "jdbcUrl": url}}
            sid = owner.post("externalDataStores/", json=body).json()["id"]
            answer = assert_error(owner.post(f"externalDataStores/{sid}/test/", json=login), 403)
            assert why in answer["message"], answer
        time.sleep(0.3)
        assert accepted == []
    finally:
        sock.close()


def test_secrets_used_for_tests_browsing_and_reveal_leak_nowhere(
    srv: Server, owner: httpx.Client, peers: dict[str, PeerDatabase], tmp_path: Path
) -> None:
    """Canary: a credential's password and a user/password body's password, used to test, browse and reveal,
    appear in no response except reveal's, and in no log line or stored byte."""
    peer = peers["mariadb"]
    store = _store(owner, peer)
    sid = store["id"]
    cid = _basic(owner, peer.user, peer.password)
    wrong = "canary-wrong-" + peer.password
    bodies = [
        owner.post(f"externalDataStores/{sid}/test/", json={"credentialId": cid}),
        owner.post(f"externalDataStores/{sid}/test/", json={"user": peer.user, "password": wrong}),
        owner.post(f"externalDataStores/{sid}/schemas/", json={"user": peer.user, "password": peer.password}),
        owner.post(f"externalDataStores/{sid}/tables/", json={"credentialId": cid}),
        owner.post(
            f"externalDataStores/{sid}/preview/",
            json={"credentialData": {"credentialType": "basic", "user": peer.user, "password": wrong}, "table": "t"},
        ),
    ]
    assert owner.post(f"credentials/{cid}/reveal/").json()["password"] == peer.password
    db = srv.data_dir / "strongroom.db"
    stored = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    log = srv.log_path.read_bytes()
    assert b"externalDataStores" in log
    for secret in (peer.password, wrong):
        assert not any(secret.encode() in b.content for b in bodies)
        assert secret.encode() not in stored and secret.encode() not in log


def _plain_store(api: httpx.Client, name: str | None = None) -> dict[str, Any]:
    """A store that is never connected to (created without a peer database)."""
    params = {"driverId": "5d0000000000000000000001", "jdbcUrl": "jdbc:postgresql://db.example.test/x"}
    resp = api.post(
        "externalDataStores/", json={"type": "jdbc", "canonicalName": name or unique("s"), "params": params}
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_if_match_on_a_store_without_entity_tags(owner: httpx.Client) -> None:
    """Stores send no ETag, so If-Match with any tag is false: 412 and nothing done (RFC 9110 §13.1.1); `*`
    passes; a malformed or over-long header is the 400 of /credentials/; a credential's own If-Match still works."""
    sid = _plain_store(owner)["id"]
    url = f"externalDataStores/{sid}/"
    assert_error(owner.delete(url, headers={"If-Match": '"999"'}), 412, "If-Match")
    assert_error(owner.patch(url, json={"canonicalName": "stale"}, headers={"If-Match": '"1"'}), 412, "If-Match")
    assert_error(owner.patch(url, json={"canonicalName": "x"}, headers={"If-Match": '"' + "1" * 5000 + '"'}), 400)
    assert_error(owner.delete(url, headers={"If-Match": "not a tag"}), 400, "If-Match")
    assert owner.get(url).json()["canonicalName"] != "stale"
    body = {"type": "jdbc", "canonicalName": unique("s"), "params": {"jdbcUrl": "jdbc:postgresql://h/x"}}
    assert_error(owner.post("externalDataStores/", json=body, headers={"If-Match": '"1"'}), 412, "If-Match")
    assert_error(
        owner.post(
            "credentials/", json={"name": unique("c"), "user": "u", "password": "p"}, headers={"If-Match": '"1"'}
        ),
        412,
    )
    cid = _basic(owner, "u", "p")
    assert owner.patch(f"credentials/{cid}/", json={"description": "d"}, headers={"If-Match": '"1"'}).status_code == 200
    assert owner.patch(url, json={"canonicalName": "any"}, headers={"If-Match": "*"}).status_code == 200
    assert owner.delete(url, headers={"If-Match": "*"}).status_code == 204
    assert_error(owner.delete(url, headers={"If-Match": "*"}), 404)


def test_client_mistakes_on_store_routes_are_4xx(owner: httpx.Client) -> None:
    """What used to be a 500 (a superscript port), a 201 (an unknown field, a password, a bidi name) or a 200
    (paging parameters on a list that does not page) through HTTP."""
    port = {"driverId": "5d0000000000000000000001", "fields": [{"id": "a", "name": "host", "value": "h"}]}
    port["fields"].append({"id": "b", "name": "port", "value": "¹"})
    assert_error(owner.post("externalDataStores/", json={"type": "jdbc", "canonicalName": "x", "params": port}), 422)
    sid = _plain_store(owner)["id"]
    assert_error(owner.patch(f"externalDataStores/{sid}/", json={"params": port}), 422, "params")
    body = {"type": "jdbc", "canonicalName": unique("s"), "params": {"jdbcUrl": "jdbc:postgresql://h/x"}}
    assert_error(owner.post("externalDataStores/", json={**body, "extra": 1}), 422, "extra")
    for url in ("jdbc:postgresql://u:S3CRET-CANARY-123@h/x", "jdbc:postgresql://h/x?password=S3CRET-CANARY-123"):
        message = assert_error(owner.post("externalDataStores/", json={**body, "params": {"jdbcUrl": url}}), 422)
        assert "params.jdbcUrl" in message["message"] and "credential" in message["message"]
        assert "S3CRET" not in str(message)
    assert_error(
        owner.post("externalDataStores/", json={**body, "canonicalName": "bidi\u202eevil"}), 422, "canonicalName"
    )
    for query in ({"offset": "-1"}, {"limit": "abc"}):
        assert_error(owner.get("externalDataStores/", params=query), 422, next(iter(query)))
        assert_error(owner.get("externalDataDrivers/", params=query), 422, next(iter(query)))
    assert (
        owner.get("externalDataStores/", params={"substituteUrlParameters": "True", "dataType": "all"}).status_code
        == 200
    )
