"""A CONSUMER of a credential logs in with it only where its owner (or an editor) linked it: a store of the
consumer's own, pointed at a server of theirs, never receives the password (connection tests, browsing, batch
jobs at creation and at run time), through a real server against a scram-sha-256 PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from tests.support import (
    Listener,
    PeerDatabase,
    Server,
    assert_error,
    client,
    closing_listener,
    named_user,
    scram_postgres,
    unique,
    wait_for_job,
)

PASSTHROUGH = "5e0000000000000000000001"
NOT_LINKED = "may only be used with data stores its owner has linked it to"


@pytest.fixture(scope="module")
def peer() -> Iterator[PeerDatabase]:
    with scram_postgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(data_dir=tmp_path_factory.mktemp("links") / "srv") as server:
        yield server


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A port that counts every connection made to it (where the consumer's own store points)."""
    with closing_listener() as found:
        yield found


def _store(api: httpx.Client, jdbc_url: str) -> str:
    drivers = api.get("externalDataDrivers/").json()["data"]
    driver = next(d["id"] for d in drivers if d["databaseDriver"] == "postgres")
    body = {"type": "jdbc", "canonicalName": unique("store"), "params": {"driverId": driver, "jdbcUrl": jdbc_url}}
    resp = api.post("externalDataStores/", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _share(api: httpx.Client, path: str, username: str, role: str) -> None:
    body = {"operation": "updateRoles", "roles": [{"username": username, "role": role}]}
    resp = api.patch(f"{path}/sharedRoles/", json=body)
    assert resp.status_code == 204, resp.text


def _audit(server: Server, credential_id: str) -> list[dict[str, Any]]:
    services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        return [json.loads(r) for r in services.audit.export() if credential_id in r]
    finally:
        services.close()


@pytest.fixture
def shared(srv: Server, peer: PeerDatabase) -> Iterator[tuple[httpx.Client, httpx.Client, str, str]]:
    """(owner, consumer, consumer's username, credential id): the owner's basic credential for the peer, shared
    with the consumer as CONSUMER."""
    _, owner_token = named_user(srv, "owner")
    username, token = named_user(srv, "consumer")
    with client(srv, owner_token) as owner, client(srv, token) as consumer:
        resp = owner.post("credentials/", json={"name": unique("db"), "user": peer.user, "password": peer.password})
        cid = str(resp.json()["credentialId"])
        _share(owner, f"credentials/{cid}", username, "CONSUMER")
        yield owner, consumer, username, cid


def test_a_consumer_cannot_send_the_credential_to_a_store_of_theirs(
    srv: Server, peer: PeerDatabase, listener: Listener, shared: tuple[httpx.Client, httpx.Client, str, str]
) -> None:
    """Every use of the credential with the consumer's own store (test, browse, their default, a job's intake or
    output) is 403 saying what to do, audited as a denial naming the credential; nothing connects there."""
    _, consumer, _, cid = shared
    assert_error(consumer.post(f"credentials/{cid}/reveal/"), 403)
    evil = _store(consumer, f"jdbc:postgresql://127.0.0.1:{listener.port}/x")
    uses = {
        "test": {},
        "schemas": {},
        "tables": {},
        "preview": {"table": "orders"},
        "previewQuery": {"sql": "SELECT 1"},
    }
    for route, extra in uses.items():
        answer = assert_error(
            consumer.post(f"externalDataStores/{evil}/{route}/", json={"credentialId": cid, **extra}),
            403,
            "credentialId",
        )
        assert NOT_LINKED in answer["message"] and f"dataconnection:{evil}" in answer["message"], answer
    # Their own link, even as their default, vouches for nothing.
    linked = consumer.put(f"credentials/{cid}/associations/dataconnection:{evil}/", json={"isDefault": True})
    assert linked.status_code == 201, linked.text
    assert_error(consumer.post(f"externalDataStores/{evil}/test/", json={}), 403, "credentialId")
    jdbc = {"type": "jdbc", "dataStoreId": evil, "table": "t", "credentialId": cid}
    for body in ({"intakeSettings": jdbc}, {"outputSettings": {**jdbc, "statementType": "insert"}}):
        field = next(iter(body))
        resp = consumer.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, **body})
        assert NOT_LINKED in assert_error(resp, 403, f"{field}.credentialId")["message"]
    assert consumer.get("batchPredictions/").json()["totalCount"] == 0
    assert listener.accepted == []
    denials = [r for r in _audit(srv, cid) if r["outcome"] == "denied" and NOT_LINKED in r["detail"]["reason"]]
    assert len(denials) == len(uses) + 3 and all(r["target"]["credentialId"] == cid for r in denials), denials
    assert not any(peer.password in json.dumps(r) for r in _audit(srv, cid))


def test_an_owner_link_lets_a_consumer_use_it_until_the_store_is_repointed(
    srv: Server, peer: PeerDatabase, listener: Listener, shared: tuple[httpx.Client, httpx.Client, str, str]
) -> None:
    """The owner links the credential to their store (shared with the consumer as EDITOR): the consumer's test,
    previewQuery and job work; once the consumer points the store at their own server the owner's link is gone
    and the use is 403 again, with no connection made."""
    owner, consumer, username, cid = shared
    store = _store(owner, peer.jdbc_url)
    _share(owner, f"externalDataStores/{store}", username, "EDITOR")
    assert_error(consumer.post(f"externalDataStores/{store}/test/", json={"credentialId": cid}), 403, "credentialId")
    assert owner.put(f"credentials/{cid}/associations/dataconnection:{store}/", json={}).status_code == 201
    tested = consumer.post(f"externalDataStores/{store}/test/", json={"credentialId": cid})
    assert tested.status_code == 200, tested.text
    query = consumer.post(
        f"externalDataStores/{store}/previewQuery/", json={"credentialId": cid, "sql": "SELECT id FROM orders"}
    )
    assert query.status_code == 200 and query.json()["records"] == [[1], [2]], query.text
    intake = {"type": "jdbc", "dataStoreId": store, "table": "orders", "credentialId": cid}
    created = consumer.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": intake})
    assert created.status_code == 202, created.text
    assert wait_for_job(consumer, created.json()["id"])["status"] == "COMPLETED"
    drivers = consumer.get("externalDataDrivers/").json()["data"]
    driver = next(d["id"] for d in drivers if d["databaseDriver"] == "postgres")
    repoint = {"params": {"driverId": driver, "jdbcUrl": f"jdbc:postgresql://127.0.0.1:{listener.port}/x"}}
    assert consumer.patch(f"externalDataStores/{store}/", json=repoint).status_code == 200
    answer = assert_error(consumer.post(f"externalDataStores/{store}/test/", json={"credentialId": cid}), 403)
    assert NOT_LINKED in answer["message"]
    assert listener.accepted == []


def test_owners_and_editors_use_it_with_any_store(
    srv: Server, peer: PeerDatabase, shared: tuple[httpx.Client, httpx.Client, str, str]
) -> None:
    """An EDITOR of the credential (who may reveal it anyway) tests it with a store of their own no one linked."""
    owner, _, _, cid = shared
    username, token = named_user(srv, "editor")
    _share(owner, f"credentials/{cid}", username, "EDITOR")
    with client(srv, token) as editor:
        store = _store(editor, peer.jdbc_url)
        tested = editor.post(f"externalDataStores/{store}/test/", json={"credentialId": cid})
        assert tested.status_code == 200, tested.text
    store = _store(owner, peer.jdbc_url)
    assert owner.post(f"externalDataStores/{store}/test/", json={"credentialId": cid}).status_code == 200


def test_a_job_whose_user_became_a_consumer_fails_before_connecting(
    srv: Server, listener: Listener, shared: tuple[httpx.Client, httpx.Client, str, str]
) -> None:
    """Created while the user was an EDITOR of the credential, run after they became a CONSUMER of it: the job
    fails saying why, and its output's store is never connected to."""
    owner, consumer, username, cid = shared
    _share(owner, f"credentials/{cid}", username, "EDITOR")
    evil = _store(consumer, f"jdbc:postgresql://127.0.0.1:{listener.port}/x")
    output = {"type": "jdbc", "dataStoreId": evil, "table": "t", "credentialId": cid, "statementType": "insert"}
    created = consumer.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "outputSettings": output})
    assert created.status_code == 202, created.text
    job = created.json()
    _share(owner, f"credentials/{cid}", username, "CONSUMER")
    assert consumer.put(job["links"]["csvUpload"], content=b"a,b\n1,2\n").status_code == 202
    failed = wait_for_job(consumer, job["id"])
    assert failed["status"] == "FAILED" and failed["statusDetails"].startswith("jdbc output: "), failed
    assert NOT_LINKED in failed["statusDetails"], failed
    assert listener.accepted == []
