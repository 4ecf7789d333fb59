"""The SDK's connect helpers (issue 17, "Connect helpers in the SDK") through a real server: `connect.sql` gives
a SQLAlchemy engine logged in to the scram PostgreSQL cluster or the MariaDB user (by credential id or the
caller's default credential for the store), `connect.s3` a boto3 client of the signature-checking S3 peer
(session token and custom endpoint honoured); a CONSUMER gets a 403 ClientError saying it cannot reveal."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from strongroom import connect
from strongroom.client import Client, ClientError, StrongroomSDKError
from tests.support import (
    PeerDatabase,
    S3Peer,
    Server,
    client,
    mariadb_user,
    named_user,
    s3_server,
    scram_postgres,
    unique,
)


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, PeerDatabase]]:
    with scram_postgres() as pg, mariadb_user() as maria:
        yield {"postgres": pg, "mariadb": maria}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Peer]:
    with s3_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(data_dir=tmp_path_factory.mktemp("connect") / "srv") as server:
        yield server


@pytest.fixture(scope="module")
def owner_token(srv: Server) -> str:
    return named_user(srv, "owner")[1]


@pytest.fixture
def owner(srv: Server, owner_token: str) -> Iterator[httpx.Client]:
    with client(srv, owner_token) as c:
        yield c


@pytest.fixture
def sdk(srv: Server, owner_token: str) -> Iterator[Client]:
    with Client(endpoint=srv.api, token=owner_token) as c:
        yield c


def _store(api: httpx.Client, peer: PeerDatabase) -> str:
    drivers = api.get("externalDataDrivers/").json()["data"]
    wanted = "postgres" if peer.scheme == "postgresql" else "mysql"
    driver = next(d["id"] for d in drivers if d["databaseDriver"] == wanted)
    body = {"type": "jdbc", "canonicalName": unique("shop"), "params": {"driverId": driver, "jdbcUrl": peer.jdbc_url}}
    resp = api.post("externalDataStores/", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _credential(api: httpx.Client, body: dict[str, Any]) -> str:
    resp = api.post("credentials/", json={"name": unique("c"), **body})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["credentialId"])


def _items(engine: sa.engine.Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.text("SELECT item FROM orders ORDER BY id"))]


@pytest.mark.parametrize("which", ["postgres", "mariadb"])
def test_sql_connects_by_credential_id_and_by_the_default(
    owner: httpx.Client, sdk: Client, peers: dict[str, PeerDatabase], which: str
) -> None:
    peer = peers[which]
    store = _store(owner, peer)
    cid = _credential(owner, {"user": peer.user, "password": peer.password})
    engine = connect.sql(store, cid, client=sdk)
    try:
        assert _items(engine) == ["apple", "pear"]
        assert peer.password not in repr(engine) and peer.password not in str(engine.url)
    finally:
        engine.dispose()
    with pytest.raises(StrongroomSDKError, match="no default credential"):
        connect.sql(store, client=sdk)
    link = owner.put(f"credentials/{cid}/associations/dataconnection:{store}/", json={"isDefault": True})
    assert link.status_code == 201, link.text
    engine = connect.sql(store, client=sdk, pool_pre_ping=True)
    try:
        assert _items(engine) == ["apple", "pear"]
    finally:
        engine.dispose()


def test_a_wrong_password_fails_at_the_database(
    owner: httpx.Client, sdk: Client, peers: dict[str, PeerDatabase]
) -> None:
    peer = peers["postgres"]
    store = _store(owner, peer)
    cid = _credential(owner, {"user": peer.user, "password": "wrong-" + peer.password})
    engine = connect.sql(store, cid, client=sdk)
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            _items(engine)
    finally:
        engine.dispose()


def test_a_consumer_gets_a_clear_403(
    srv: Server, owner: httpx.Client, peers: dict[str, PeerDatabase], s3: S3Peer
) -> None:
    """Shared as CONSUMER (store and credentials), connect.sql and connect.s3 fail with a 403 ClientError naming
    the roles that may reveal; the secret is in no error."""
    peer = peers["postgres"]
    store = _store(owner, peer)
    cid = _credential(owner, {"user": peer.user, "password": peer.password})
    s3_cid = _credential(
        owner,
        {"credentialType": "s3", "awsAccessKeyId": s3.access_key_id, "awsSecretAccessKey": s3.secret_access_key},
    )
    username, token = named_user(srv, "consumer")
    share = {"operation": "updateRoles", "roles": [{"username": username, "role": "CONSUMER"}]}
    for path in (f"credentials/{cid}/", f"credentials/{s3_cid}/", f"externalDataStores/{store}/"):
        assert owner.patch(f"{path}sharedRoles/", json=share).status_code == 204
    with Client(endpoint=srv.api, token=token) as consumer:
        for attempt in (lambda: connect.sql(store, cid, client=consumer), lambda: connect.s3(s3_cid, client=consumer)):
            with pytest.raises(ClientError) as refused:
                attempt()
            assert refused.value.status_code == 403
            message = str(refused.value)
            assert "only its OWNER or an EDITOR may reveal" in message and "CONSUMER" in message, message
            assert peer.password not in message and s3.secret_access_key not in message


def test_s3_signs_with_the_keys_and_the_session_token(owner: httpx.Client, sdk: Client, s3: S3Peer) -> None:
    assert s3.temporary is not None and s3.temporary.session_token
    keys = {"credentialType": "s3", "awsAccessKeyId": s3.access_key_id, "awsSecretAccessKey": s3.secret_access_key}
    session = {
        "credentialType": "s3",
        "awsAccessKeyId": s3.temporary.access_key_id,
        "awsSecretAccessKey": s3.temporary.secret_access_key,
        "awsSessionToken": s3.temporary.session_token,
    }
    plain = connect.s3(_credential(owner, keys), endpoint_url=s3.endpoint_url, client=sdk)
    plain.put_object(Bucket=s3.bucket, Key="connect/one.txt", Body=b"hello")
    temporary = connect.s3(_credential(owner, session), endpoint_url=s3.endpoint_url, client=sdk)
    assert temporary.get_object(Bucket=s3.bucket, Key="connect/one.txt")["Body"].read() == b"hello"
    without_token = {k: v for k, v in session.items() if k != "awsSessionToken"}
    broken = connect.s3(_credential(owner, without_token), endpoint_url=s3.endpoint_url, client=sdk)
    with pytest.raises(Exception, match="InvalidAccessKeyId"):
        broken.list_objects_v2(Bucket=s3.bucket)
    basic = _credential(owner, {"user": "u", "password": "p"})
    with pytest.raises(StrongroomSDKError, match="needs a credential of type s3"):
        connect.s3(basic, client=sdk)


def test_a_missing_extra_is_named(
    owner: httpx.Client, sdk: Client, peers: dict[str, PeerDatabase], s3: S3Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SQLAlchemy or boto3 installed, the helper says which extra to install."""
    store = _store(owner, peers["mariadb"])
    cid = _credential(owner, {"user": "u", "password": "p"})
    s3_cid = _credential(owner, {"credentialType": "s3", "awsAccessKeyId": "AKIA1", "awsSecretAccessKey": "k"})
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(StrongroomSDKError, match=re.escape("pip install 'strongroom[connect-sql]'")):
        connect.sql(store, cid, client=sdk)
    with pytest.raises(StrongroomSDKError, match=re.escape("pip install 'strongroom[connect-s3]'")):
        connect.s3(s3_cid, client=sdk)
