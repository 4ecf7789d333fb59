"""Who may do what with data stores and the credentials they use (issue 17): every role x every action through
a real server, against the scram-sha-256 PostgreSQL cluster and the signature-checking S3 peer.

Each row's person holds the same role on a data store and on the basic credential it logs in with (and on an
s3 credential), which the owner has linked to the store (but for the unlinked consumer's row: a CONSUMER of a
credential logs in with it only where its owner or an editor linked it); 404 means "must not learn it exists",
403 "can see it, may not do this". The README's data-store permission table is this one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.services.jobs import PASSTHROUGH_ID
from tests.support import PeerDatabase, S3Peer, Server, client, s3_server, scram_postgres

ACTIONS = (
    "get",
    "update",
    "sharedRoles read",
    "sharedRoles update",
    "test",
    "schemas",
    "tables",
    "preview",
    "previewQuery",
    "s3 test",
    "reveal",
    "associate",
    "store associations",
    "credential associations",
    "update credential",
    "delete",
)
# role -> the status of each action, in ACTIONS order.
MATRIX = {
    "owner": (200, 200, 200, 204, 200, 200, 200, 200, 200, 200, 200, 201, 200, 200, 200, 204),
    "editor": (200, 200, 200, 403, 200, 200, 200, 200, 200, 200, 200, 201, 200, 200, 200, 403),
    "consumer": (200, 403, 200, 403, 200, 200, 200, 200, 200, 200, 403, 201, 200, 200, 403, 403),
    "group consumer": (200, 403, 200, 403, 200, 200, 200, 200, 200, 200, 403, 201, 200, 200, 403, 403),
    "unlinked consumer": (200, 403, 200, 403, 403, 403, 403, 403, 403, 200, 403, 201, 200, 200, 403, 403),
    "no role": (404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404),
}
ROLE_OF = {"editor": "EDITOR", "consumer": "CONSUMER", "unlinked consumer": "CONSUMER"}


@dataclass
class Person:
    username: str
    token: str


@dataclass
class Things:
    """One row's data store, the basic credential it uses and an s3 credential, all the owner's."""

    store: str
    basic: str
    s3: str


@pytest.fixture(scope="module")
def peers() -> Iterator[tuple[PeerDatabase, S3Peer]]:
    with scram_postgres() as pg, s3_server() as s3:
        yield pg, s3


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[tuple[Server, dict[str, Person], str]]:
    """The people of the matrix (all-scope tokens), an outsider to share with, and the group of the group
    consumer."""
    tag = secrets.token_hex(3)
    services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    people = {}
    try:
        for who in (*MATRIX, "outsider"):
            username = f"ds-{who.replace(' ', '-')}-{tag}"
            services.accounts.create_user(username)
            people[who] = Person(username, services.accounts.create_token(username)[1])
        team = f"ds-team-{tag}"
        services.sharing.create_group(None, team)
        services.sharing.add_member(None, team, people["group consumer"].username)
    finally:
        services.close()
    yield server, people, team


def _created(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _things(server: Server, people: dict[str, Person], team: str, role: str, pg: PeerDatabase, s3: S3Peer) -> Things:
    """The owner's store and credentials, shared so that `role`'s person holds that role on each."""
    tag = secrets.token_hex(3)
    with client(server, people["owner"].token) as http:
        drivers = http.get("externalDataDrivers/").json()["data"]
        driver = next(d["id"] for d in drivers if d["databaseDriver"] == "postgres")
        params = {"driverId": driver, "jdbcUrl": pg.jdbc_url}
        store = _created(http.post("externalDataStores/", json={"canonicalName": f"s-{tag}", "params": params}))["id"]
        basic = _created(http.post("credentials/", json={"name": f"b-{tag}", "user": pg.user, "password": pg.password}))
        keys = {"awsAccessKeyId": s3.access_key_id, "awsSecretAccessKey": s3.secret_access_key}
        s3_cred = _created(http.post("credentials/", json={"name": f"k-{tag}", "credentialType": "s3", **keys}))
        things = Things(store, basic["credentialId"], s3_cred["credentialId"])
        share = None
        if role in ROLE_OF:
            share = {"username": people[role].username, "role": ROLE_OF[role]}
        elif role == "group consumer":
            share = {"shareRecipientType": "group", "name": team, "role": "CONSUMER"}
        if share is not None:
            body = {"operation": "updateRoles", "roles": [share]}
            for path in (f"externalDataStores/{store}/", f"credentials/{things.basic}/", f"credentials/{things.s3}/"):
                assert http.patch(f"{path}sharedRoles/", json=body).status_code == 204
            if role != "unlinked consumer":
                link = f"credentials/{things.basic}/associations/dataconnection:{store}/"
                assert http.put(link, json={}).status_code == 201
    return things


def _act(http: httpx.Client, action: str, things: Things, people: dict[str, Person], s3: S3Peer) -> int:
    store, login = f"externalDataStores/{things.store}/", {"credentialId": things.basic}
    requests: dict[str, Any] = {
        "get": lambda: http.get(store),
        "update": lambda: http.patch(store, json={"canonicalName": f"renamed-{secrets.token_hex(3)}"}),
        "sharedRoles read": lambda: http.get(f"{store}sharedRoles/"),
        "sharedRoles update": lambda: http.patch(
            f"{store}sharedRoles/",
            json={"operation": "updateRoles", "roles": [{"username": people["outsider"].username, "role": "CONSUMER"}]},
        ),
        "test": lambda: http.post(f"{store}test/", json=login),
        "schemas": lambda: http.post(f"{store}schemas/", json=login),
        "tables": lambda: http.post(f"{store}tables/", json={**login, "schema": "public"}),
        "preview": lambda: http.post(f"{store}preview/", json={**login, "table": "orders", "maxRows": 1}),
        "previewQuery": lambda: http.post(f"{store}previewQuery/", json={**login, "sql": "SELECT 1", "maxRows": 1}),
        "s3 test": lambda: http.post(
            f"credentials/{things.s3}/test/", json={"url": s3.url, "endpointUrl": s3.endpoint_url}
        ),
        "reveal": lambda: http.post(f"credentials/{things.basic}/reveal/"),
        "associate": lambda: http.put(
            f"credentials/{things.basic}/associations/dataconnection:{things.store}/", json={"isDefault": True}
        ),
        "store associations": lambda: http.get(f"credentials/associations/dataconnection:{things.store}/"),
        "credential associations": lambda: http.get(f"credentials/{things.basic}/associations/"),
        "update credential": lambda: http.patch(f"credentials/{things.basic}/", json={"description": "changed"}),
        "delete": lambda: http.delete(store),
    }
    response: httpx.Response = requests[action]()
    if response.status_code >= 400:
        assert isinstance(response.json().get("message"), str), response.text
    return response.status_code


@pytest.mark.parametrize("role", list(MATRIX))
def test_data_store_permission_matrix(
    world: tuple[Server, dict[str, Person], str], peers: tuple[PeerDatabase, S3Peer], role: str
) -> None:
    server, people, team = world
    pg, s3 = peers
    things = _things(server, people, team, role, pg, s3)
    with client(server, people[role].token) as http:
        got = tuple(_act(http, action, things, people, s3) for action in ACTIONS)
    assert dict(zip(ACTIONS, got, strict=True)) == dict(zip(ACTIONS, MATRIX[role], strict=True))


def test_a_store_role_does_not_open_a_credential(
    world: tuple[Server, dict[str, Person], str], peers: tuple[PeerDatabase, S3Peer]
) -> None:
    """A CONSUMER of the store who holds no role on the credential cannot connect with it (404, as for an
    unknown id), nor link it; with a login of their own the same store works."""
    server, people, team = world
    pg, s3 = peers
    things = _things(server, people, team, "owner", pg, s3)
    share = {"operation": "updateRoles", "roles": [{"username": people["consumer"].username, "role": "CONSUMER"}]}
    with client(server, people["owner"].token) as http:
        assert http.patch(f"externalDataStores/{things.store}/sharedRoles/", json=share).status_code == 204
    with client(server, people["consumer"].token) as http:
        store = f"externalDataStores/{things.store}/"
        assert http.post(f"{store}test/", json={"credentialId": things.basic}).status_code == 404
        link = http.put(f"credentials/{things.basic}/associations/dataconnection:{things.store}/", json={})
        assert link.status_code == 404
        assert http.post(f"{store}test/", json={"user": pg.user, "password": pg.password}).status_code == 200


def _people(server: Server, *names: str) -> dict[str, Person]:
    """New users (all-scope tokens) by role in a scenario."""
    tag = secrets.token_hex(3)
    services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        people = {}
        for name in names:
            username = f"ds-{name}-{tag}"
            services.accounts.create_user(username)
            people[name] = Person(username, services.accounts.create_token(username)[1])
        return people
    finally:
        services.close()


def _new_store(http: httpx.Client, name: str) -> str:
    """A store of the caller's (nothing connects to it in these tests)."""
    drivers = http.get("externalDataDrivers/").json()["data"]
    driver = next(d["id"] for d in drivers if d["databaseDriver"] == "postgres")
    params = {"driverId": driver, "jdbcUrl": "jdbc:postgresql://127.0.0.1:5432/x"}
    return str(_created(http.post("externalDataStores/", json={"canonicalName": name, "params": params}))["id"])


def _share(http: httpx.Client, path: str, username: str, role: str) -> None:
    body = {"operation": "updateRoles", "roles": [{"username": username, "role": role}]}
    assert http.patch(f"{path}sharedRoles/", json=body).status_code == 204


def _default_use(http: httpx.Client, store: str) -> list[tuple[int, str]]:
    """What a data-store test and a batch job answer when they take the caller's default credential."""
    intake = {"type": "jdbc", "dataStoreId": store, "table": "orders"}
    answers = (
        http.post(f"externalDataStores/{store}/test/", json={}),
        http.post("batchPredictions/", json={"deploymentId": PASSTHROUGH_ID, "intakeSettings": intake}),
    )
    return [(r.status_code, r.json()["message"]) for r in answers]


def test_a_revoked_credential_leaves_no_trace_in_associations(world: tuple[Server, dict[str, Person], str]) -> None:
    """Once the owner sets a consumer to NO_ROLE, the consumer's association of the credential with their own store
    is neither listed (not even the credential's later name) nor taken as their default: a test and a job answer
    as for a store where they set none. Losing the role on a store hides the link from the credential's list
    too. A new role brings the link back."""
    server = world[0]
    people = _people(server, "alice", "bob")
    alice, bob = client(server, people["alice"].token), client(server, people["bob"].token)
    with alice, bob:
        cid = _created(
            alice.post(
                "credentials/",
                json={"name": secrets.token_hex(4), "description": "alice private desc", "user": "u", "password": "p"},
            )
        )["credentialId"]
        _share(alice, f"credentials/{cid}/", people["bob"].username, "CONSUMER")
        bob_store, bare_store = _new_store(bob, "bobstore"), _new_store(bob, "bare")
        link = f"credentials/{cid}/associations/dataconnection:{bob_store}/"
        assert bob.put(link, json={"isDefault": True}).status_code == 201
        listed = f"credentials/associations/dataconnection:{bob_store}/"
        assert [a["credentialId"] for a in bob.get(listed, params={"orderBy": "-isDefault"}).json()["data"]] == [cid]
        no_default = _default_use(bob, bare_store)
        assert [status for status, _ in no_default] == [422, 422]

        _share(alice, f"credentials/{cid}/", people["bob"].username, "NO_ROLE")
        assert alice.patch(f"credentials/{cid}/", json={"name": "renamed-after-revoke"}).status_code == 200
        answer = bob.get(listed, params={"orderBy": "-isDefault"})
        assert answer.status_code == 200 and answer.json()["data"] == []
        assert "renamed-after-revoke" not in answer.text and "alice private desc" not in answer.text
        assert _default_use(bob, bob_store) == no_default
        assert bob.get(f"credentials/{cid}/").status_code == 404

        # Bob's own credential linked to Alice's store: gone from his list once the store is no longer shared.
        alice_store = _new_store(alice, "alicestore")
        _share(alice, f"externalDataStores/{alice_store}/", people["bob"].username, "CONSUMER")
        own = _created(bob.post("credentials/", json={"name": secrets.token_hex(4), "user": "u", "password": "p"}))
        mine = f"credentials/{own['credentialId']}/associations/"
        assert bob.put(f"{mine}dataconnection:{alice_store}/", json={}).status_code == 201
        assert [a["objectId"] for a in bob.get(mine).json()["data"]] == [alice_store]
        _share(alice, f"externalDataStores/{alice_store}/", people["bob"].username, "NO_ROLE")
        assert bob.get(mine).json()["data"] == []

        _share(alice, f"credentials/{cid}/", people["bob"].username, "CONSUMER")
        assert [a["name"] for a in bob.get(listed).json()["data"]] == ["renamed-after-revoke"]


def test_a_delete_refusal_names_only_stores_the_caller_sees(world: tuple[Server, dict[str, Person], str]) -> None:
    """A credential that is the default of the owner's store and of a consumer's private store: the owner's plain
    delete is 409 naming their store and counting the other, never naming or identifying it; someone who may not
    delete gets the delete's own 404 or 403. Once the consumer loses the role, their link no longer holds the
    delete up, and afterwards they cannot tell a deleted credential from a revoked one."""
    server = world[0]
    people = _people(server, "alice", "bob", "eve")
    alice, bob = client(server, people["alice"].token), client(server, people["bob"].token)
    eve = client(server, people["eve"].token)
    with alice, bob, eve:
        cid = _created(alice.post("credentials/", json={"name": secrets.token_hex(4), "user": "u", "password": "p"}))[
            "credentialId"
        ]
        _share(alice, f"credentials/{cid}/", people["bob"].username, "CONSUMER")
        bob_store = _new_store(bob, f"bobstore-{secrets.token_hex(3)}")
        alice_store = _new_store(alice, f"alicestore-{secrets.token_hex(3)}")
        for who, store in ((bob, bob_store), (alice, alice_store)):
            assert (
                who.put(f"credentials/{cid}/associations/dataconnection:{store}/", json={"isDefault": True}).status_code
                == 201
            )

        refused = alice.delete(f"credentials/{cid}/")
        assert refused.status_code == 409, refused.text
        message = refused.json()["message"]
        assert alice_store in message and "1 other user's data store" in message, message
        assert bob_store not in refused.text and "bobstore" not in refused.text
        assert eve.delete(f"credentials/{cid}/").status_code == 404
        assert bob.delete(f"credentials/{cid}/").status_code == 403

        _share(alice, f"credentials/{cid}/", people["bob"].username, "NO_ROLE")
        revoked = _default_use(bob, bob_store)
        refused = alice.delete(f"credentials/{cid}/")
        assert refused.status_code == 409 and "other user" not in refused.json()["message"], refused.text
        assert alice.delete(f"externalDataStores/{alice_store}/").status_code == 204
        assert alice.delete(f"credentials/{cid}/").status_code == 204
        assert _default_use(bob, bob_store) == revoked


def test_data_store_sharing_validates_like_credential_sharing(world: tuple[Server, dict[str, Person], str]) -> None:
    """Every body a credential's sharedRoles refuses, a data store's refuses with the same status and message, and
    changes nothing: canShare not a boolean, one user twice, too many entries, a huge name (answered briefly),
    unknown keys in an entry or at the top."""
    server = world[0]
    people = _people(server, "alice", "bob")
    bob = people["bob"].username
    entry = {"username": bob, "role": "CONSUMER"}
    bodies = {
        "canShare string": [{**entry, "canShare": "no"}],
        "same user twice": [entry, entry],
        "101 entries": [entry] * 101,
        "5000 entries": [entry] * 5000,
        "huge name": [{"username": "nobody" + "X" * 300_000, "role": "CONSUMER"}],
        "unknown entry key": [{**entry, "canUseData": False}],
    }
    with client(server, people["alice"].token) as alice:
        cid = _created(alice.post("credentials/", json={"name": secrets.token_hex(4), "user": "u", "password": "p"}))[
            "credentialId"
        ]
        store = _new_store(alice, "validated")
        cases = [(name, {"operation": "updateRoles", "roles": roles}) for name, roles in bodies.items()]
        cases.append(("unknown top-level key", {"operation": "updateRoles", "roles": [entry], "force": True}))
        for name, body in cases:
            answers = [
                alice.patch(f"{path}sharedRoles/", json=body)
                for path in (f"credentials/{cid}/", f"externalDataStores/{store}/")
            ]
            assert [a.status_code for a in answers] == [422, 422], (name, [a.text[:200] for a in answers])
            assert answers[0].json()["message"] == answers[1].json()["message"], name
            assert len(answers[1].content) < 1000, name
        assert [r["role"] for r in alice.get(f"externalDataStores/{store}/sharedRoles/").json()["data"]] == ["OWNER"]


def test_pointing_a_store_elsewhere_drops_the_other_users_links(world: tuple[Server, dict[str, Person], str]) -> None:
    """An EDITOR who changes where a store connects cannot take the owner's default credential with it: the
    other users' links go in the same change (audited as `repointed`); a new name, or the editor's own link, stays."""
    server = world[0]
    people = _people(server, "owner", "editor")
    owner, editor = client(server, people["owner"].token), client(server, people["editor"].token)
    with owner, editor:
        store = _new_store(owner, secrets.token_hex(4))
        _share(owner, f"externalDataStores/{store}/", people["editor"].username, "EDITOR")
        links = f"credentials/associations/dataconnection:{store}/"
        for http in (owner, editor):
            cid = _created(http.post("credentials/", json={"name": secrets.token_hex(4), "user": "u", "password": "p"}))
            assert http.put(f"credentials/{cid['credentialId']}/{links.split('/', 1)[1]}", json={"isDefault": True})
        assert len(owner.get(links).json()["data"]) == 1

        assert editor.patch(f"externalDataStores/{store}/", json={"canonicalName": "renamed"}).status_code == 200
        assert len(owner.get(links).json()["data"]) == 1  # a new name points nowhere new
        same = owner.get(f"externalDataStores/{store}/").json()["params"]
        assert editor.patch(f"externalDataStores/{store}/", json={"params": same}).status_code == 200
        assert len(owner.get(links).json()["data"]) == 1  # nor do the same params

        elsewhere = {**same, "jdbcUrl": "jdbc:postgresql://127.0.0.2:5432/x"}
        assert editor.patch(f"externalDataStores/{store}/", json={"params": elsewhere}).status_code == 200
        assert owner.get(links).json()["data"] == []
        assert [status for status, _ in _default_use(owner, store)] == [422, 422]
        assert len(editor.get(links).json()["data"]) == 1  # the one who pointed it keeps theirs
    services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        audit, _ = services.audit.list(None, actor=people["editor"].username, action="dataStore.update")
    finally:
        services.close()
    assert [r["detail"]["repointed"] for r in audit] == [False, False, True]
