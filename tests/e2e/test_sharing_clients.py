"""Sharing through the SDK (`cred.share`, `cred.get_access_list`) and the CLI (`credentials share`, `credentials
access`) against a real server: the recipient really gains, and loses, access."""

from __future__ import annotations

import json

import strongroom
from tests.support import Server, client, http_client, open_service, unique


def _user(server: Server, prefix: str) -> tuple[str, str, str]:
    """(username, user id, token) of a new user."""
    with open_service(server) as services:
        username = unique(prefix)
        user = services.accounts.create_user(username)
        return username, user.id, services.accounts.create_token(username)[1]


def _sees(server: Server, token: str, cid: str) -> int:
    with client(server, token) as http:
        return http.get(f"credentials/{cid}/").status_code


def test_sdk_shares_with_users_and_groups_and_reads_the_access_list(server: Server) -> None:
    alice, alice_id, alice_token = _user(server, "alice")
    bob, bob_id, bob_token = _user(server, "bob")
    carol, _, carol_token = _user(server, "carol")
    team = unique("team")
    with open_service(server) as services:
        group = services.sharing.create_group(None, team)
        services.sharing.add_member(None, team, carol)
    with strongroom.Client(endpoint=server.api, token=alice_token):
        cred = strongroom.Credential.create_basic(unique(), "u", "p")
        cid = str(cred.credential_id)
        assert _sees(server, bob_token, cid) == _sees(server, carol_token, cid) == 404
        cred.share(bob, "EDITOR", can_share=True)
        cred.share(role="CONSUMER", group=team)
        access = cred.get_access_list()
        assert access[0] == strongroom.SharingRole(alice_id, alice, "OWNER", "user", True)
        assert sorted(access[1:], key=lambda r: r.name) == sorted(
            [
                strongroom.SharingRole(bob_id, bob, "EDITOR", "user", True),
                strongroom.SharingRole(group.id, team, "CONSUMER", "group", False),
            ],
            key=lambda r: r.name,
        )
        assert _sees(server, bob_token, cid) == _sees(server, carol_token, cid) == 200
        cred.share(bob, "NO_ROLE")
        assert _sees(server, bob_token, cid) == 404
        try:
            cred.share("nobody-" + unique(), "CONSUMER")
        except strongroom.ClientError as exc:
            assert exc.status_code == 404 and "nobody-" in exc.message
        else:
            raise AssertionError("sharing with an unknown user succeeded")


def test_cli_shares_and_shows_who_has_access(server: Server) -> None:
    alice, _, alice_token = _user(server, "alice")
    bob, _, bob_token = _user(server, "bob")
    carol, _, carol_token = _user(server, "carol")
    team = unique("team")
    with open_service(server) as services:
        services.sharing.create_group(None, team)
        services.sharing.add_member(None, team, carol)
    with client(server, alice_token) as http:
        cid = http.post("credentials/", json={"name": unique(), "user": "u", "password": "p"}).json()["credentialId"]
    auth = ("--token", alice_token)
    shared = server.cli("credentials", "share", cid, "--user", bob, "--role", "CONSUMER", *auth)
    assert f"with user {bob} as CONSUMER" in shared.stderr
    server.cli("credentials", "share", cid, "--group", team, "--role", "editor", "--can-share", *auth)
    assert _sees(server, bob_token, cid) == _sees(server, carol_token, cid) == 200
    listed = json.loads(server.cli("credentials", "access", cid, "--json", *auth).stdout)
    assert {(e["name"], e["role"], e["shareRecipientType"], e["canShare"]) for e in listed} == {
        (alice, "OWNER", "user", True),
        (bob, "CONSUMER", "user", False),
        (team, "EDITOR", "group", True),
    }
    assert listed[0]["name"] == alice
    table = server.cli("credentials", "access", cid, *auth).stdout
    assert all(name in table for name in (alice, bob, team)) and "EDITOR" in table
    server.cli("credentials", "share", cid, "--user", bob, "--role", "NO_ROLE", *auth)
    assert _sees(server, bob_token, cid) == 404
    with http_client(base_url=server.api, headers={"Authorization": f"Bearer {bob_token}"}) as http:
        assert http.get(f"credentials/{cid}/sharedRoles/").status_code == 404
    refused = server.cli("credentials", "share", cid, "--user", bob, "--role", "BOSS", *auth, check=False)
    assert refused.returncode == 1 and "--role" in refused.stderr
    both = server.cli("credentials", "share", cid, "--user", bob, "--group", team, *auth, check=False)
    assert both.returncode == 1 and "exactly one recipient" in both.stderr
    denied = server.cli(
        "credentials", "share", cid, "--user", alice, "--role", "CONSUMER", "--token", bob_token, check=False
    )
    assert denied.returncode == 1 and "not found" in denied.stderr
