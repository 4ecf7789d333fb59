"""Who may do what: every role x every action x every scope, through a real server (issue: access control).

404 means "must not learn it exists" (exactly the answer for an unknown id); 403 means "can see it, may not
do this"; 401 means the token no longer works (a disabled user). The README's permission table is this one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from tests.support import Server, client

ACTIONS = ("list", "get", "reveal", "update name", "replace secret", "share", "delete")
# role -> the status each action answers, in ACTIONS order ("seen"/"unseen": whether list shows it).
MATRIX = {
    "owner": ("seen", 200, 200, 200, 200, 204, 204),
    "editor": ("seen", 200, 200, 200, 200, 403, 403),
    "editor with canShare": ("seen", 200, 200, 200, 200, 204, 403),
    "consumer": ("seen", 200, 403, 403, 403, 403, 403),
    "group consumer": ("seen", 200, 403, 403, 403, 403, 403),
    "unrelated user": ("unseen", 404, 404, 404, 404, 404, 404),
    "admin": ("unseen", 404, 404, 404, 404, 404, 404),
    "disabled consumer": (401, 401, 401, 401, 401, 401, 401),
}
ROLE_OF = {"editor": "EDITOR", "editor with canShare": "EDITOR", "consumer": "CONSUMER"}


@dataclass
class Person:
    username: str
    token: str


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[tuple[Server, dict[str, Person]]]:
    """The people of the matrix, each with an all-scope token; `team` is the group the group consumer is in."""
    tag = secrets.token_hex(3)
    services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    people = {}
    try:
        for who in (*MATRIX, "outsider"):
            username = f"{who.replace(' ', '-')}-{tag}"
            services.accounts.create_user(username, admin=who == "admin")
            people[who] = Person(username, services.accounts.create_token(username)[1])
        services.sharing.create_group(None, f"team-{tag}")
        services.sharing.add_member(None, f"team-{tag}", people["group consumer"].username)
    finally:
        services.close()
    yield server, people


def _credential(server: Server, owner: Person, role: str, people: dict[str, Person], tag: str) -> str:
    """A credential of `owner`'s, shared so that `role`'s person holds that role."""
    with client(server, owner.token) as http:
        made = http.post("/credentials/", json={"name": f"m-{tag}", "user": "u", "password": "p"})
        assert made.status_code == 201, made.text
        cid = made.json()["credentialId"]
        share = None
        if role in ROLE_OF or role == "disabled consumer":
            share = {"username": people[role].username, "role": ROLE_OF.get(role, "CONSUMER")}
            share["canShare"] = role == "editor with canShare"
        elif role == "group consumer":
            team = f"team-{people['owner'].username.rsplit('-', 1)[1]}"
            share = {"shareRecipientType": "group", "name": team, "role": "CONSUMER"}
        if share is not None:
            r = http.patch(f"/credentials/{cid}/sharedRoles/", json={"operation": "updateRoles", "roles": [share]})
            assert r.status_code == 204, r.text
    return cid


def _act(http: httpx.Client, action: str, cid: str, people: dict[str, Person]) -> object:
    if action == "list":
        r = http.get("/credentials/", params={"limit": 1000})
        if r.status_code != 200:
            return r.status_code
        return "seen" if cid in {c["credentialId"] for c in r.json()["data"]} else "unseen"
    if action == "get":
        return http.get(f"/credentials/{cid}/").status_code
    if action == "reveal":
        return http.post(f"/credentials/{cid}/reveal/").status_code
    if action == "update name":
        return http.patch(f"/credentials/{cid}/", json={"name": f"renamed-{secrets.token_hex(3)}"}).status_code
    if action == "replace secret":
        return http.patch(f"/credentials/{cid}/", json={"password": "rotated"}).status_code
    if action == "share":
        change = {"username": people["outsider"].username, "role": "CONSUMER"}
        return http.patch(
            f"/credentials/{cid}/sharedRoles/", json={"operation": "updateRoles", "roles": [change]}
        ).status_code
    assert action == "delete"
    return http.delete(f"/credentials/{cid}/").status_code


@pytest.mark.parametrize("role", list(MATRIX))
def test_permission_matrix(world: tuple[Server, dict[str, Person]], role: str) -> None:
    server, people = world
    tag = people["owner"].username.rsplit("-", 1)[1]
    cid = _credential(server, people["owner"], role, people, f"{tag}-{role.replace(' ', '-')}")
    if role == "disabled consumer":
        services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
        try:
            services.accounts.set_disabled(people[role].username, True)
        finally:
            services.close()
    with client(server, people[role].token) as http:
        got = tuple(_act(http, action, cid, people) for action in ACTIONS)
    assert dict(zip(ACTIONS, got, strict=True)) == dict(zip(ACTIONS, MATRIX[role], strict=True))


def test_unknown_id_answers_exactly_as_a_hidden_one(world: tuple[Server, dict[str, Person]]) -> None:
    """404 for a credential one has no role on is byte-for-byte the 404 of an id that does not exist."""
    server, people = world
    cid = _credential(server, people["owner"], "owner", people, "hidden")
    with client(server, people["unrelated user"].token) as http:
        hidden = http.get(f"/credentials/{cid}/")
        unknown = http.get(f"/credentials/{'0' * 24}/")
    assert (hidden.status_code, hidden.json()) == (unknown.status_code, unknown.json())


SCOPED = {  # token scopes -> the owner's answers, in ACTIONS order
    ("read",): ("seen", 200, 403, 403, 403, 403, 403),
    ("write",): (403, 403, 403, 200, 200, 204, 204),
    ("use",): (403, 403, 200, 403, 403, 403, 403),
}


@pytest.mark.parametrize("scopes", list(SCOPED), ids=lambda s: "+".join(s))
def test_scopes_limit_what_a_token_may_do(world: tuple[Server, dict[str, Person]], scopes: tuple[str, ...]) -> None:
    server, people = world
    cid = _credential(server, people["owner"], "owner", people, f"scoped-{'-'.join(scopes)}")
    services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        token = services.accounts.create_token(people["owner"].username, name="scoped", scopes=scopes)[1]
    finally:
        services.close()
    with client(server, token) as http:
        got = tuple(_act(http, action, cid, people) for action in ACTIONS)
        forbidden = http.delete(f"/credentials/{cid}/") if "write" not in scopes else None
    assert dict(zip(ACTIONS, got, strict=True)) == dict(zip(ACTIONS, SCOPED[scopes], strict=True))
    if forbidden is not None:
        assert "lacks the 'write' scope" in forbidden.json()["message"]


def test_admin_scope_needs_an_admin_user(world: tuple[Server, dict[str, Person]]) -> None:
    server, people = world
    with client(server, people["owner"].token) as http:
        refused = http.get("/groups/")
    with client(server, people["admin"].token) as http:
        allowed = http.get("/groups/")
    assert refused.status_code == 403 and "administrator" in refused.json()["message"]
    assert allowed.status_code == 200
