"""Sharing through the services on a real store: role changes, ownership handed over, and what is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import Conflict, Forbidden, InvalidInput, NotFound
from strongroom.services.accounts import Principal
from tests.support import backend_database, make_credential

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Services, dict[str, Principal]]]:
    with backend_database(request.param, migrated=True) as url:
        services = Services.open(Settings(data_dir=tmp_path, database_url=url))
        people = {}
        for name in ("alice", "bob", "carol"):
            services.accounts.create_user(name)
            people[name] = services.accounts.authenticate(services.accounts.create_token(name)[1])
        services.sharing.create_group(None, "team")
        services.sharing.add_member(None, "team", "carol")
        try:
            yield services, people
        finally:
            services.close()


def _share(services: Services, who: Principal, cid: str, *roles: dict[str, object]) -> None:
    services.sharing.update_roles(who, cid, {"operation": "updateRoles", "roles": list(roles)})


def _who(services: Services, who: Principal) -> Principal:
    """The principal again, as a new request would see it (the `shared` flag may have changed)."""
    return services.accounts.authenticate(services.accounts.create_token(who.username, name="again")[1])


def test_the_owner_hands_over_to_a_user_named_owner_in_the_same_change(
    store: tuple[Services, dict[str, Principal]],
) -> None:
    services, people = store
    alice, bob = people["alice"], people["bob"]
    cid = make_credential(services, alice, {"name": "db", "user": "u", "password": "p"})["credentialId"]
    _share(services, alice, cid, {"username": "bob", "role": "OWNER"}, {"username": "alice", "role": "NO_ROLE"})
    bob = _who(services, bob)
    assert services.credentials.secrets(bob, cid)["password"] == "p"  # re-sealed for its new owner
    with pytest.raises(NotFound):
        services.credentials.get(_who(services, alice), cid)
    access = services.sharing.access_list(bob, cid)
    assert [(a["name"], a["role"]) for a in access] == [("bob", "OWNER")]
    records, _ = services.audit.list(bob, credential_id=cid, action="credential.share")
    assert records[-1]["detail"]["newOwnerId"] == bob.user_id
    assert services.audit.verify().first_bad is None


def test_the_owner_may_step_down_to_editor_behind_an_existing_owner(
    store: tuple[Services, dict[str, Principal]],
) -> None:
    services, people = store
    alice = people["alice"]
    cid = make_credential(services, alice, {"name": "db", "user": "u", "password": "p"})["credentialId"]
    _share(services, alice, cid, {"username": "bob", "role": "OWNER"})
    _share(services, alice, cid, {"username": "alice", "role": "EDITOR"})
    roles = {a["name"]: a["role"] for a in services.sharing.access_list(_who(services, alice), cid)}
    assert roles == {"bob": "OWNER", "alice": "EDITOR"}
    with pytest.raises(Forbidden):  # an editor may not delete
        services.credentials.delete(_who(services, alice), cid)


@pytest.mark.parametrize(
    "roles",
    [
        [{"username": "alice", "role": "NO_ROLE"}],
        [{"shareRecipientType": "group", "name": "team", "role": "OWNER"}, {"username": "alice", "role": "CONSUMER"}],
    ],
    ids=["nobody", "only-a-group"],
)
def test_a_credential_never_loses_its_last_owner(
    store: tuple[Services, dict[str, Principal]], roles: list[dict[str, object]]
) -> None:
    services, people = store
    alice = people["alice"]
    cid = make_credential(services, alice, {"name": "db", "user": "u", "password": "p"})["credentialId"]
    with pytest.raises(Conflict, match="without an owner"):
        _share(services, alice, cid, *roles)
    assert services.credentials.secrets(alice, cid)["password"] == "p"
    assert [a["name"] for a in services.sharing.access_list(alice, cid)] == ["alice"]  # nothing applied


def test_a_handover_onto_a_name_the_heir_uses_is_refused(store: tuple[Services, dict[str, Principal]]) -> None:
    services, people = store
    alice, bob = people["alice"], people["bob"]
    cid = make_credential(services, alice, {"name": "same", "user": "u", "password": "p"})["credentialId"]
    make_credential(services, bob, {"name": "same", "user": "b", "password": "b"})
    with pytest.raises(Conflict, match="already has a credential named"):
        _share(services, alice, cid, {"username": "bob", "role": "OWNER"}, {"username": "alice", "role": "NO_ROLE"})
    assert services.credentials.secrets(alice, cid)["password"] == "p"


def test_group_members_gain_and_lose_access_at_once(store: tuple[Services, dict[str, Principal]]) -> None:
    services, people = store
    alice = people["alice"]
    cid = make_credential(services, alice, {"name": "db", "user": "u", "password": "p"})["credentialId"]
    _share(services, alice, cid, {"shareRecipientType": "group", "name": "team", "role": "CONSUMER"})
    carol = _who(services, people["carol"])
    wire, _ = services.credentials.get(carol, cid)
    assert json.loads(wire)["role"] == "CONSUMER"
    assert [json.loads(w)["credentialId"] for w in services.credentials.list(carol).items] == [cid]
    services.sharing.remove_member(None, "team", "carol")
    with pytest.raises(NotFound):
        services.credentials.get(carol, cid)


def test_bad_role_changes_name_what_is_wrong(store: tuple[Services, dict[str, Principal]]) -> None:
    services, people = store
    alice = people["alice"]
    cid = make_credential(services, alice, {"name": "db", "user": "u", "password": "p"})["credentialId"]
    with pytest.raises(NotFound, match="no user 'nobody'"):
        _share(services, alice, cid, {"username": "nobody", "role": "CONSUMER"})
    with pytest.raises(InvalidInput, match="names the same user"):
        _share(services, alice, cid, {"username": "bob", "role": "CONSUMER"}, {"username": "bob", "role": "EDITOR"})
    with pytest.raises(InvalidInput, match=r"roles\[0\]\.role"):
        _share(services, alice, cid, {"username": "bob", "role": "ADMIN"})
    _share(services, alice, cid, {"username": "bob", "role": "EDITOR", "canShare": True})
    with pytest.raises(Forbidden, match="EDITOR may share as EDITOR or CONSUMER"):
        _share(services, _who(services, people["bob"]), cid, {"username": "carol", "role": "OWNER"})
