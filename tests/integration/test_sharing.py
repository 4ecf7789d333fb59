"""Sharing through the services on a real store: role changes, ownership handed over, and what is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import Conflict, Forbidden, InvalidInput, NotFound
from strongroom.services.accounts import Principal
from strongroom.store.models import Credential, CredentialAccess, CredentialRole, GroupMember
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
    for key in ("username", "id", "name"):  # PostgreSQL's text holds no NUL: it answered 500 (found by fuzzing)
        for group in (False, True):
            entry = {key: "b\x00b", "role": "CONSUMER", "shareRecipientType": "group" if group else "user"}
            with pytest.raises(InvalidInput, match=rf"roles\[0\]\.{key}: must be a non-empty string without control"):
                _share(services, alice, cid, entry)
    _share(services, alice, cid, {"username": "bob", "role": "EDITOR", "canShare": True})
    with pytest.raises(Forbidden, match="EDITOR may share as EDITOR or CONSUMER"):
        _share(services, _who(services, people["bob"]), cid, {"username": "carol", "role": "OWNER"})


def _access_rows(services: Services) -> set[tuple[str, str, int, bool]]:
    """The stored `credential_access` rows: (user, credential, role, can_share)."""
    with services.db.read() as s:
        rows = s.execute(
            select(
                CredentialAccess.user_id,
                CredentialAccess.credential_id,
                CredentialAccess.role,
                CredentialAccess.can_share,
            )
        ).all()
    return {(u, c, int(r), bool(share)) for u, c, r, share in rows}


def _expected_access(services: Services) -> set[tuple[str, str, int, bool]]:
    """The same rows worked out in Python from the roles, memberships and owners (the oracle)."""
    with services.db.read() as s:
        owners = dict(s.execute(select(Credential.id, Credential.owner_id)).all())
        members = s.execute(select(GroupMember.group_id, GroupMember.user_id)).all()
        roles = s.execute(
            select(
                CredentialRole.credential_id,
                CredentialRole.recipient_type,
                CredentialRole.recipient_id,
                CredentialRole.role,
                CredentialRole.can_share,
            )
        ).all()
    best: dict[tuple[str, str], tuple[int, bool]] = {}
    for cid, kind, rid, role, share in roles:
        for user in [rid] if kind == "user" else [u for g, u in members if g == rid]:
            if owners[cid] != user:
                was = best.get((user, cid), (0, False))
                best[(user, cid)] = (max(was[0], int(role)), was[1] or bool(share))
    return {(user, cid, role, share) for (user, cid), (role, share) in best.items()}


def test_derived_access_follows_every_change_of_roles_members_and_owners(
    store: tuple[Services, dict[str, Principal]],
) -> None:
    """`credential_access` (what lists and role checks read) equals what the roles and memberships give after
    each kind of change: a share to a user and to a group, a member added and removed, an owner handing over,
    a group deleted, a user deleted, a credential deleted."""
    services, people = store
    alice = people["alice"]
    services.accounts.create_user("dave")
    services.sharing.create_group(None, "ops")
    one = make_credential(services, alice, {"name": "one", "user": "u", "password": "p"})["credentialId"]
    two = make_credential(services, alice, {"name": "two", "user": "u", "password": "p"})["credentialId"]
    steps = [
        lambda: _share(services, alice, one, {"username": "bob", "role": "CONSUMER"}),
        lambda: _share(
            services, alice, one, {"shareRecipientType": "group", "name": "team", "role": "EDITOR", "canShare": True}
        ),
        lambda: _share(services, alice, two, {"shareRecipientType": "group", "name": "ops", "role": "CONSUMER"}),
        lambda: services.sharing.add_member(None, "ops", "carol"),
        lambda: services.sharing.add_member(None, "ops", "bob"),
        lambda: services.sharing.add_member(None, "team", "bob"),  # bob: CONSUMER directly, EDITOR via team
        lambda: services.sharing.add_member(None, "team", "alice"),  # the owner's own group: no access row
        lambda: services.sharing.remove_member(None, "team", "bob"),
        lambda: _share(
            services, alice, one, {"username": "carol", "role": "OWNER"}, {"username": "alice", "role": "CONSUMER"}
        ),
        lambda: services.sharing.delete_group(None, "ops"),
        lambda: _share(services, _who(services, people["carol"]), one, {"username": "dave", "role": "EDITOR"}),
        lambda: services.accounts.delete_user("dave"),
        lambda: services.credentials.delete(alice, two),
    ]
    assert _access_rows(services) == set()
    seen = []
    for step in steps:
        step()
        rows = _access_rows(services)
        assert rows == _expected_access(services)
        seen.append(rows)
    assert all(seen[:-1]), "every step but the last leaves someone with access"
    users = {u.username: u.id for u in services.accounts.list_users()}
    assert (users["bob"], one, 2, True) in seen[5]  # the highest of his rows, and its canShare
    handed_over = {(u, role, share) for u, c, role, share in seen[8] if c == one}
    assert (users["alice"], 2, True) in handed_over  # her team's EDITOR outranks the CONSUMER she kept
    assert not any(u == users["carol"] for u, _, _ in handed_over)  # the new owner's own: no access row


@pytest.mark.postgres
def test_concurrent_changes_of_roles_and_members_leave_the_derived_access_right(tmp_path: Path) -> None:
    """Role changes on one credential and membership changes of the users it reaches, from many threads at once
    on PostgreSQL: each rewrites overlapping derived rows, and none may fail on them (a duplicate key) or leave
    them stale; the writes take turns on one advisory lock."""
    with backend_database("postgres", migrated=True) as url:
        services = Services.open(Settings(data_dir=tmp_path, database_url=url))
        try:
            services.accounts.create_user("owner")
            owner = services.accounts.authenticate(services.accounts.create_token("owner")[1])
            names = [f"u{i}" for i in range(8)]
            for name in names:
                services.accounts.create_user(name)
            services.sharing.create_group(None, "crew")
            cid = make_credential(services, owner, {"name": "db", "user": "u", "password": "p"})["credentialId"]
            _share(services, owner, cid, {"shareRecipientType": "group", "name": "crew", "role": "CONSUMER"})

            def change(i: int) -> None:
                for _ in range(5):
                    services.sharing.add_member(None, "crew", names[i])
                    _share(services, owner, cid, {"username": names[i], "role": "EDITOR" if i % 2 else "CONSUMER"})
                    services.sharing.remove_member(None, "crew", names[i])

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(change, range(8)))
            assert _access_rows(services) == _expected_access(services)
            assert len(_access_rows(services)) == 8
        finally:
            services.close()
