"""Who may do what with data stores and the credentials they use (issue 17): every role x every action through
a real server, against the scram-sha-256 PostgreSQL cluster and the signature-checking S3 peer.

Each row's person holds the same role on a data store and on the basic credential it logs in with (and on an
s3 credential); 404 means "must not learn it exists", 403 "can see it, may not do this". The README's
data-store permission table is this one.
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
from tests.support import PeerDatabase, S3Peer, Server, s3_server, scram_postgres

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
    "no role": (404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404, 404),
}
ROLE_OF = {"editor": "EDITOR", "consumer": "CONSUMER"}


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


def _client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _created(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _things(server: Server, people: dict[str, Person], team: str, role: str, pg: PeerDatabase, s3: S3Peer) -> Things:
    """The owner's store and credentials, shared so that `role`'s person holds that role on each."""
    tag = secrets.token_hex(3)
    with _client(server, people["owner"].token) as http:
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
    with _client(server, people[role].token) as http:
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
    with _client(server, people["owner"].token) as http:
        assert http.patch(f"externalDataStores/{things.store}/sharedRoles/", json=share).status_code == 204
    with _client(server, people["consumer"].token) as http:
        store = f"externalDataStores/{things.store}/"
        assert http.post(f"{store}test/", json={"credentialId": things.basic}).status_code == 404
        link = http.put(f"credentials/{things.basic}/associations/dataconnection:{things.store}/", json={})
        assert link.status_code == 404
        assert http.post(f"{store}test/", json={"user": pg.user, "password": pg.password}).status_code == 200
