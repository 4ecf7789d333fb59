"""OAuth access tokens that refresh themselves, once (issue 17, item 3), against a real authorization server
(npm's oidc-provider, tests/peers/oauth): providers, POST credentials/{id}/accessToken/, rotation, single flight
across threads and processes, a revoked refresh token, the consumer's view, and no token leaking anywhere."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from tests.support import (
    OAuthPeer,
    Server,
    assert_error,
    backend_database,
    client,
    closing_listener,
    free_port,
    oauth_peer,
    stored_bytes,
    unique,
)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthPeer]:
    with oauth_peer(tmp_path_factory.mktemp("oauth")) as running:
        yield running


def _provider(admin: httpx.Client, peer: OAuthPeer, client_id: str, **extra: Any) -> str:
    method = "client_secret_post" if client_id == "post" else "client_secret_basic"
    body = {
        "name": unique(f"idp-{client_id}"),
        "tokenUrl": peer.token_url,
        "clientId": client_id,
        "clientSecret": peer.secrets[client_id],
        "tokenEndpointAuthMethod": method,
        **extra,
    }
    created = admin.post("oauthProviders/", json=body)
    assert created.status_code == 201, created.text
    assert "clientSecret" not in created.json()
    return str(created.json()["id"])


@pytest.fixture(scope="module")
def providers(server: Server, peer: OAuthPeer) -> dict[str, str]:
    """One provider per client of the peer, created by an administrator of `server`."""
    with client(server, server.new_user("admin", admin=True)) as admin:
        return {c: _provider(admin, peer, c) for c in ("app", "post", "brief")}


def _credential(api: httpx.Client, peer: OAuthPeer, provider_id: str, client_id: str) -> tuple[str, dict[str, Any]]:
    """An oauth credential holding a refresh token the peer issued through a real authorization-code flow."""
    tokens = peer.authorize(client_id)
    body = {
        "name": unique("oauth"),
        "credentialType": "oauth",
        "token": tokens["access_token"],
        "refreshToken": tokens["refresh_token"],
        "oauthProviderId": provider_id,
    }
    created = api.post("credentials/", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["oauthProviderId"] == provider_id
    return str(created.json()["credentialId"]), tokens


@pytest.mark.parametrize("client_id", ["app", "post"])
def test_a_token_is_refreshed_once_then_reused(
    api: httpx.Client, peer: OAuthPeer, providers: dict[str, str], client_id: str
) -> None:
    """The first use refreshes (the stored token's expiry is unknown) with either client authentication; the
    answer is a token the provider accepts; later uses get the same token without calling the provider."""
    cid, first = _credential(api, peer, providers[client_id], client_id)
    before = peer.refreshes(client_id)
    answer = api.post(f"credentials/{cid}/accessToken/")
    assert answer.status_code == 200, answer.text
    token = answer.json()
    assert token["tokenType"] == "Bearer" and token["expiresAt"].endswith("Z")
    assert token["accessToken"] != first["access_token"]
    assert peer.userinfo(token["accessToken"]).json()["sub"] == "tester"
    assert peer.refreshes(client_id) == {**before, "success": before["success"] + 1}
    again = api.post(f"credentials/{cid}/accessToken/")
    assert again.json() == token
    assert peer.refreshes(client_id) == {**before, "success": before["success"] + 1}


def test_the_rotated_refresh_token_is_stored(api: httpx.Client, peer: OAuthPeer, providers: dict[str, str]) -> None:
    """`brief` tokens expire within the margin, so every use refreshes: each refresh must present the refresh
    token the previous one rotated in (a used one is refused and revokes the grant), and the credential's
    original refresh token no longer works at the provider."""
    cid, first = _credential(api, peer, providers["brief"], "brief")
    before = peer.refreshes("brief")
    seen = set()
    for _ in range(3):
        answer = api.post(f"credentials/{cid}/accessToken/")
        assert answer.status_code == 200, answer.text
        seen.add(answer.json()["accessToken"])
    assert len(seen) == 3
    assert peer.refreshes("brief") == {**before, "success": before["success"] + 3}
    old = peer.token_request("brief", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert old.status_code == 400 and old.json()["error"] == "invalid_grant"


def test_twenty_threads_cause_one_refresh(api: httpx.Client, peer: OAuthPeer, providers: dict[str, str]) -> None:
    cid, _ = _credential(api, peer, providers["app"], "app")
    before = peer.refreshes("app")
    start = threading.Barrier(20)

    def ask(_: int) -> httpx.Response:
        start.wait()
        return api.post(f"credentials/{cid}/accessToken/")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
    assert len({a.json()["accessToken"] for a in answers}) == 1
    assert peer.refreshes("app") == {**before, "success": before["success"] + 1}


def test_a_revoked_refresh_token_asks_for_reauthorisation_once(
    api: httpx.Client, peer: OAuthPeer, providers: dict[str, str]
) -> None:
    """Revoked at the provider: a 409 saying to re-authorise; the next call answers the same without reaching
    the provider; a new refresh token stored with PATCH clears the mark."""
    cid, tokens = _credential(api, peer, providers["app"], "app")
    peer.revoke("app", tokens["refresh_token"])
    before = peer.refreshes("app")
    refused = assert_error(api.post(f"credentials/{cid}/accessToken/"), 409, "refreshToken")
    assert "rejected the refresh token (invalid_grant): re-authorise credential" in refused["message"]
    assert cid in refused["message"]
    assert peer.refreshes("app") == {**before, "error": before["error"] + 1}
    again = assert_error(api.post(f"credentials/{cid}/accessToken/"), 409, "refreshToken")
    assert again["message"] == refused["message"]
    assert peer.refreshes("app") == {**before, "error": before["error"] + 1}
    audit = api.get("auditLog/", params={"credentialId": cid}).json()["data"]
    refusals = [r for r in audit if r["action"] == "credential.use"]
    assert [(r["outcome"], r["status"]) for r in refusals] == [("failed", 409)] * 2
    renewed = peer.authorize("app")
    assert api.patch(f"credentials/{cid}/", json={"refreshToken": renewed["refresh_token"]}).status_code == 200
    answer = api.post(f"credentials/{cid}/accessToken/")
    assert answer.status_code == 200, answer.text
    assert peer.refreshes("app") == {"success": before["success"] + 1, "error": before["error"] + 1}


def test_a_consumer_gets_access_tokens_but_never_the_refresh_token(
    server: Server, api: httpx.Client, peer: OAuthPeer, providers: dict[str, str]
) -> None:
    cid, _ = _credential(api, peer, providers["app"], "app")
    username = f"consumer-{unique()}"
    token = server.new_user(username)
    name = next(u for u in _usernames(server) if u.startswith(username))
    share = {"operation": "updateRoles", "roles": [{"username": name, "role": "CONSUMER"}]}
    assert api.patch(f"credentials/{cid}/sharedRoles/", json=share).status_code == 204
    with client(server, token) as consumer:
        answer = consumer.post(f"credentials/{cid}/accessToken/")
        assert answer.status_code == 200, answer.text
        assert set(answer.json()) == {"accessToken", "expiresAt", "tokenType"}
        assert_error(consumer.post(f"credentials/{cid}/reveal/"), 403)
    with client(server, server.new_user("stranger")) as stranger:
        assert_error(stranger.post(f"credentials/{cid}/accessToken/"), 404)


def _usernames(server: Server) -> list[str]:
    with client(server, server.new_user("lister", admin=True)) as admin:
        return [u["username"] for u in admin.get("users/", params={"limit": 1000}).json()["data"]]


def test_providers_are_for_administrators_and_checked(server: Server, api: httpx.Client, peer: OAuthPeer) -> None:
    assert_error(api.get("oauthProviders/"), 403)
    body = {"name": "x", "tokenUrl": peer.token_url, "clientId": "app", "clientSecret": "s"}
    assert_error(api.post("oauthProviders/", json=body), 403)
    with client(server, server.new_user("admin", admin=True)) as admin:
        assert_error(admin.post("oauthProviders/", json={**body, "tokenUrl": "ftp://x/"}), 422, "tokenUrl")
        assert_error(admin.post("oauthProviders/", json={**body, "clientSecret": ""}), 422, "clientSecret")
        assert_error(admin.post("oauthProviders/", json={**body, "tokenEndpointAuthMethod": "x"}), 422)
        assert_error(admin.post("oauthProviders/", json={**body, "extra": 1}), 422, "extra")
        created = admin.post("oauthProviders/", json={**body, "name": unique("idp")})
        assert created.status_code == 201, created.text
        listed = admin.get("oauthProviders/").json()["data"]
        assert created.json() in listed and all("clientSecret" not in p for p in listed)
        named = {"name": unique(), "credentialType": "oauth", "token": "t", "refreshToken": "r"}
        cid = api.post("credentials/", json={**named, "oauthProviderId": created.json()["id"]}).json()["credentialId"]
        in_use = assert_error(admin.delete(f"oauthProviders/{created.json()['id']}/"), 409, "oauthProvider")
        assert "1 oauth credential(s) name this provider" in in_use["message"]
        assert api.delete(f"credentials/{cid}/").status_code == 204
        assert admin.delete(f"oauthProviders/{created.json()['id']}/").status_code == 204
        assert_error(admin.get(f"oauthProviders/{created.json()['id']}/"), 404)


def test_what_cannot_be_refreshed_says_why(server: Server, api: httpx.Client, peer: OAuthPeer) -> None:
    basic = api.post("credentials/", json={"name": unique(), "user": "u", "password": "p"}).json()["credentialId"]
    assert_error(api.post(f"credentials/{basic}/accessToken/"), 409, "credentialType")
    bare = {"name": unique(), "credentialType": "oauth", "token": "t", "refreshToken": "r"}
    cid = api.post("credentials/", json=bare).json()["credentialId"]
    assert_error(api.post(f"credentials/{cid}/accessToken/"), 409, "oauthProviderId")
    with client(server, server.new_user("admin", admin=True)) as admin:
        closed = f"http://127.0.0.1:{free_port()}/token"
        provider = _provider(admin, peer, "app", tokenUrl=closed)
    assert api.patch(f"credentials/{cid}/", json={"oauthProviderId": provider}).status_code == 200
    down = assert_error(api.post(f"credentials/{cid}/accessToken/"), 502, "oauthProvider")
    assert "127.0.0.1" in down["message"] and "unreachable" in down["message"]
    with client(server, server.new_user("admin", admin=True)) as admin:
        metadata = _provider(admin, peer, "app", tokenUrl="http://169.254.169.254/latest/token")
    assert api.patch(f"credentials/{cid}/", json={"oauthProviderId": metadata}).status_code == 200
    refused = assert_error(api.post(f"credentials/{cid}/accessToken/"), 403)
    assert "169.254.169.254" in refused["message"] and "link-local" in refused["message"]


def test_a_failing_provider_is_called_once_not_by_every_waiting_caller(
    server: Server, api: httpx.Client, peer: OAuthPeer
) -> None:
    """A provider that drops every connection: 20 concurrent callers all get a 502 naming its host, and it sees
    one connection (the failure is remembered for a few seconds instead of retried by each waiting caller)."""
    with closing_listener() as broken, client(server, server.new_user("admin", admin=True)) as admin:
        provider = _provider(admin, peer, "app", tokenUrl=f"http://127.0.0.1:{broken.port}/token")
        cid, _ = _credential(api, peer, provider, "app")
        start = threading.Barrier(20)

        def ask(_: int) -> httpx.Response:
            start.wait()
            return api.post(f"credentials/{cid}/accessToken/")

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, range(20)))
        assert [a.status_code for a in answers] == [502] * 20
        assert all("127.0.0.1" in a.json()["message"] for a in answers)
        assert len(broken.accepted) == 1


def test_inline_credential_data_is_refreshed_once_and_never_stored(
    api: httpx.Client, peer: OAuthPeer, providers: dict[str, str]
) -> None:
    """POST credentials/accessToken/ with DataRobot's inline oauth credentialData: the named provider's token
    endpoint and client (or the data's own client), the rotated refresh token handed back; the data's keys are
    validated as declared (a stored credential's `refreshToken` is not one of them)."""
    tokens = peer.authorize("app")
    body = {
        "credentialData": {"credentialType": "oauth", "oauthRefreshToken": tokens["refresh_token"]},
        "oauthProviderId": providers["app"],
    }
    answer = api.post("credentials/accessToken/", json=body)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert peer.userinfo(got["accessToken"]).status_code == 200
    assert got["refreshToken"] not in (tokens["refresh_token"], "")
    brief = peer.authorize("brief")
    own_client = {
        "credentialType": "oauth",
        "oauthRefreshToken": brief["refresh_token"],
        "oauthClientId": "brief",
        "oauthClientSecret": peer.secrets["brief"],
    }
    before = peer.refreshes("brief")
    answer = api.post("credentials/accessToken/", json={**body, "credentialData": own_client})
    assert answer.status_code == 200, answer.text
    assert peer.refreshes("brief")["success"] == before["success"] + 1
    stored_names = {"credentialType": "oauth", "refreshToken": "r"}
    assert_error(
        api.post("credentials/accessToken/", json={**body, "credentialData": stored_names}), 422, "refreshToken"
    )
    spent = {**body, "credentialData": {"credentialType": "oauth", "oauthRefreshToken": tokens["refresh_token"]}}
    assert_error(api.post("credentials/accessToken/", json=spent), 409, "credentialData.oauthRefreshToken")
    unknown = {**body, "oauthProviderId": "0" * 24}
    assert_error(api.post("credentials/accessToken/", json=unknown), 404)


def test_a_provider_that_never_answers_is_a_504_naming_its_host(peer: OAuthPeer, tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "srv", extra_env={"STRONGROOM_STATEMENT_TIMEOUT": "1"})
    srv.start()
    try:
        with closing_listener(hold=True) as hung, client(srv, srv.new_user("admin", admin=True)) as admin:
            provider = _provider(admin, peer, "app", tokenUrl=f"http://127.0.0.1:{hung.port}/token")
            with client(srv, srv.new_user()) as api:
                cid, _ = _credential(api, peer, provider, "app")
                late = assert_error(api.post(f"credentials/{cid}/accessToken/"), 504, "oauthProvider")
                assert "127.0.0.1 did not answer in time" in late["message"]
            assert len(hung.accepted) == 1
    finally:
        srv.stop()


def test_a_re_sealed_credential_keeps_its_rotated_refresh_token(
    api: httpx.Client, peer: OAuthPeer, providers: dict[str, str], server: Server
) -> None:
    """A PATCH of a public field re-seals the credential's secret (a new seal generation) without changing its
    tokens: the stored state, holding the rotated refresh token, stays in force (the credential's own refresh
    token is spent, and presenting it would revoke the grant)."""
    cid, _ = _credential(api, peer, providers["brief"], "brief")
    assert api.post(f"credentials/{cid}/accessToken/").status_code == 200
    with client(server, server.new_user("admin", admin=True)) as admin:
        twin = _provider(admin, peer, "brief")
    assert api.patch(f"credentials/{cid}/", json={"oauthProviderId": twin}).status_code == 200
    again = api.post(f"credentials/{cid}/accessToken/")
    assert again.status_code == 200, again.text


def test_tokens_and_client_secrets_leak_nowhere(
    server: Server, api: httpx.Client, peer: OAuthPeer, providers: dict[str, str], tmp_path: Path
) -> None:
    """Canary: the refresh tokens (issued and rotated), the client secret and the access tokens appear in no
    response but the accessToken answer, no log line, no audit record and no stored byte."""
    cid, tokens = _credential(api, peer, providers["brief"], "brief")
    issued = [api.post(f"credentials/{cid}/accessToken/").json()["accessToken"] for _ in range(2)]
    revealed = api.post(f"credentials/{cid}/reveal/").json()  # the owner's reveal: the credential as stored
    assert revealed["refreshToken"] == tokens["refresh_token"]
    inline = peer.authorize("app")
    data = {"credentialType": "oauth", "oauthRefreshToken": inline["refresh_token"]}
    handed = api.post("credentials/accessToken/", json={"credentialData": data, "oauthProviderId": providers["app"]})
    assert handed.status_code == 200, handed.text
    issued += [handed.json()["accessToken"], handed.json()["refreshToken"], inline["refresh_token"]]
    planted = [tokens["refresh_token"], tokens["access_token"], peer.secrets["brief"], peer.secrets["app"], *issued]
    seen = [
        api.get(f"credentials/{cid}/").text,
        api.get("credentials/").text,
        api.get("auditLog/", params={"credentialId": cid}).text,
    ]
    audit = api.get("auditLog/", params={"credentialId": cid}).json()["data"]
    assert [r["action"] for r in audit].count("credential.use") == 2
    with client(server, server.new_user("admin", admin=True)) as admin:
        seen.append(admin.get("oauthProviders/").text)
        uses = admin.get("auditLog/", params={"action": "credential.use", "since": "10m", "limit": 1000})
        assert any(r["detail"].get("providerId") == providers["app"] for r in uses.json()["data"]), uses.text
        seen.append(uses.text)
    stored = stored_bytes(server, tmp_path)
    log = server.log_path.read_bytes()
    for value in planted:
        assert all(value not in text for text in seen)
        assert value.encode() not in stored
        assert value.encode() not in log


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def two_servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two server processes on one PostgreSQL database and master key, with four store threads each: a burst
    then needs a few connections per process, not one per caller (the machine's PostgreSQL is shared)."""
    env = {"STRONGROOM_STORE_THREADS": "4"}
    with backend_database(request.param) as url:
        first = Server(data_dir=tmp_path / "data", database_url=url, extra_env=env)
        first.start()
        second = Server(data_dir=tmp_path / "data", database_url=url, extra_env=env)
        second.start()
        yield first, second
        first.stop()
        second.stop()


def test_two_processes_cause_one_refresh(two_servers: tuple[Server, Server], peer: OAuthPeer) -> None:
    """20 concurrent calls, half to each process of one database: one refresh at the provider (the lock is the
    database's), every caller gets the same token."""
    a, b = two_servers
    token = a.new_user("owner")
    with client(a, a.new_user("admin", admin=True)) as admin:
        provider = _provider(admin, peer, "app")
    with client(a, token) as api:
        cid, _ = _credential(api, peer, provider, "app")
    before = peer.refreshes("app")
    start = threading.Barrier(20)

    def ask(i: int) -> httpx.Response:
        with client(a if i % 2 else b, token) as http:
            start.wait()
            return http.post(f"credentials/{cid}/accessToken/")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers if r.status_code != 200]
    assert len({r.json()["accessToken"] for r in answers}) == 1
    assert peer.refreshes("app") == {**before, "success": before["success"] + 1}


def test_connect_oauth_sends_a_bearer_the_provider_accepts(
    server: Server, peer: OAuthPeer, providers: dict[str, str], token: str
) -> None:
    """`strongroom.connect.oauth`: an httpx client whose requests carry the credential's access token; with a
    `brief` credential (expiring within the margin) each request fetches a new one, refreshed by the server."""
    import strongroom
    from strongroom import connect

    with client(server, token) as api:
        cid, _ = _credential(api, peer, providers["app"], "app")
        brief, _ = _credential(api, peer, providers["brief"], "brief")
    with strongroom.Client(endpoint=server.api, token=token) as sdk:
        fetched = strongroom.AccessToken.fetch(cid, sdk)
        assert fetched.access_token and fetched.access_token not in repr(fetched)
        strongroom.set_client(sdk)
        try:
            assert strongroom.Credential.get(cid).access_token() == fetched
        finally:
            strongroom.set_client(None)
        with connect.oauth(cid, client=sdk, base_url=peer.base) as http:
            assert http.get("/me").json()["sub"] == "tester"
            assert http.get("/me").status_code == 200
        before = peer.refreshes("brief")
        with connect.oauth(brief, client=sdk, base_url=peer.base) as http:
            assert [http.get("/me").status_code for _ in range(2)] == [200, 200]
        assert peer.refreshes("brief")["success"] == before["success"] + 2


def test_key_rotation_moves_oauth_secrets_and_token_states(peer: OAuthPeer, tmp_path: Path) -> None:
    """`keys rotate` re-wraps providers' client secrets and stored token states too, so the old version can be
    retired and the credential still gives its token and refreshes."""
    srv = Server(data_dir=tmp_path / "srv")
    srv.start()
    try:
        with client(srv, srv.new_user("admin", admin=True)) as admin:
            providers = {c: _provider(admin, peer, c) for c in ("app", "brief")}
        with client(srv, srv.new_user()) as api:
            cid, _ = _credential(api, peer, providers["app"], "app")
            brief, _ = _credential(api, peer, providers["brief"], "brief")
            first = api.post(f"credentials/{cid}/accessToken/").json()
            assert api.post(f"credentials/{brief}/accessToken/").status_code == 200
            srv.cli("keys", "rotate")
            srv.cli("keys", "retire", "1")
            assert api.post(f"credentials/{cid}/accessToken/").json() == first
            refreshed = api.post(f"credentials/{brief}/accessToken/")
            assert refreshed.status_code == 200, refreshed.text
    finally:
        srv.stop()


def test_cli_manages_providers_locally_and_remotely(server: Server, api: httpx.Client, peer: OAuthPeer) -> None:
    """`strongroom oauth-providers`: create in the local store (the secret read from stdin, never an option or
    printed), list and delete over HTTP with an admin token; a provider made locally refreshes credentials."""
    name = unique("cli-idp")
    made = server.cli(
        "oauth-providers", "create", name, "--token-url", peer.token_url, "--client-id", "app", "--json",
        input=peer.secrets["app"] + "\n",
    )  # fmt: skip
    provider = json.loads(made.stdout)
    assert provider["name"] == name and peer.secrets["app"] not in made.stdout + made.stderr
    cid, _ = _credential(api, peer, provider["id"], "app")
    assert api.post(f"credentials/{cid}/accessToken/").status_code == 200
    admin = server.new_user("admin", admin=True)
    listed = json.loads(server.cli("oauth-providers", "list", "--json", "--token", admin).stdout)
    assert provider["id"] in [p["id"] for p in listed]
    assert api.delete(f"credentials/{cid}/").status_code == 204
    server.cli("oauth-providers", "delete", provider["id"], "--token", admin)
    left = json.loads(server.cli("oauth-providers", "list", "--json", "--token", admin).stdout)
    assert provider["id"] not in [p["id"] for p in left]
    refused = server.cli("oauth-providers", "list", "--token", server.new_user(), check=False)
    assert refused.returncode == 1 and "administrator" in refused.stderr


def test_a_passphrase_backup_carries_oauth_secrets_to_a_new_master_key(peer: OAuthPeer, tmp_path: Path) -> None:
    """A self-contained archive re-wraps providers' client secrets and token states like credentials, so a store
    restored under a fresh master key still answers the stored token and refreshes with the rotated one."""
    srv = Server(data_dir=tmp_path / "srv")
    srv.start()
    restored = Server(data_dir=tmp_path / "restored")
    try:
        with client(srv, srv.new_user("admin", admin=True)) as admin:
            providers = {c: _provider(admin, peer, c) for c in ("app", "brief")}
        token = srv.new_user()
        with client(srv, token) as api:
            cid, _ = _credential(api, peer, providers["app"], "app")
            brief, _ = _credential(api, peer, providers["brief"], "brief")
            first = api.post(f"credentials/{cid}/accessToken/").json()
            assert api.post(f"credentials/{brief}/accessToken/").status_code == 200  # rotated: only the state has it
        (tmp_path / "passphrase").write_text("correct horse battery staple")
        archive = tmp_path / "store.backup"
        srv.cli("backup", str(archive), "--passphrase-file", str(tmp_path / "passphrase"))
        srv.stop()
        restored.cli("restore", str(archive), "--passphrase-file", str(tmp_path / "passphrase"))
        restored.start()
        with client(restored, token) as api:
            assert api.post(f"credentials/{cid}/accessToken/").json() == first
            again = api.post(f"credentials/{brief}/accessToken/")
            assert again.status_code == 200, again.text
    finally:
        srv.stop()
        restored.stop()


def test_one_callers_refused_client_never_makes_the_provider_look_down(
    api: httpx.Client, other_api: httpx.Client, peer: OAuthPeer, providers: dict[str, str]
) -> None:
    """At the real provider: another user's inline call with a client the provider does not know is a 502
    naming invalid_client, and neither it nor its repetition keeps anyone from the provider: the owner's credential
    refreshes at once, and the other user's next call reaches the provider again (no "not tried again")."""
    cid, _ = _credential(api, peer, providers["app"], "app")
    bogus = {"credentialType": "oauth", "oauthRefreshToken": "x", "oauthClientId": "bogus"}
    body = {"credentialData": bogus, "oauthProviderId": providers["app"]}
    refused = assert_error(other_api.post("credentials/accessToken/", json=body), 502, "oauthProvider")
    assert "invalid_client" in refused["message"] and "not tried again" not in refused["message"]
    answer = api.post(f"credentials/{cid}/accessToken/")
    assert answer.status_code == 200, answer.text
    again = assert_error(other_api.post("credentials/accessToken/", json=body), 502, "oauthProvider")
    assert "not tried again" not in again["message"]


@dataclass
class _TokenEndpoint:
    """A tiny token endpoint in this test's process, for what a real provider cannot show: the client
    authentication each request carried (path /ok: client `good` gets tokens, any other 401 invalid_client),
    a provider that fails (/down: 503) and one whose answer is larger than any token answer (/huge)."""

    port: int
    seen: list[tuple[str, str | None, dict[str, list[str]]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def calls(self, path: str) -> int:
        return sum(1 for p, _, _ in self.seen if p == f"/{path}")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[_TokenEndpoint]:
    state = _TokenEndpoint(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            auth = self.headers.get("Authorization")
            state.seen.append((self.path, auth, form))
            basic = base64.b64decode(auth[6:]).decode() if auth and auth.startswith("Basic ") else ""
            client_id = basic.split(":")[0] if basic else form.get("client_id", [""])[0]
            if self.path == "/down":
                status, out = 503, b'{"error": "temporarily_unavailable"}'
            elif self.path == "/huge":
                status, out = 200, b'{"access_token": "' + b"a" * (2 << 20) + b'"}'
            elif client_id != "good":
                status, out = 401, b'{"error": "invalid_client"}'
            else:
                status, out = 200, b'{"access_token": "at", "expires_in": 3600}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_the_providers_secret_goes_only_with_its_own_client_id(
    server: Server, api: httpx.Client, endpoint: _TokenEndpoint, method: str
) -> None:
    """Inline data naming another client than the provider's, without a secret, is sent as that public client
    (its id in the body, no Authorization, no secret at all), never with the provider's secret; data without a
    client id (or with the provider's) is sent as the provider's client, with its secret (a fake token endpoint
    in the test records each request's client authentication, which a real provider does not show)."""
    secret = "ProviderSecretCanary" + unique("")
    body = {"name": unique("fake"), "tokenUrl": endpoint.url("ok"), "clientId": "good", "clientSecret": secret}
    with client(server, server.new_user("admin", admin=True)) as admin:
        created = admin.post("oauthProviders/", json={**body, "tokenEndpointAuthMethod": method})
    assert created.status_code == 201, created.text
    provider = created.json()["id"]

    def inline(**extra: str) -> httpx.Response:
        data = {"credentialType": "oauth", "oauthRefreshToken": "rt", **extra}
        return api.post("credentials/accessToken/", json={"credentialData": data, "oauthProviderId": provider})

    start = len(endpoint.seen)
    assert_error(inline(oauthClientId="bogus"), 502, "oauthProvider")
    (_, auth, form), *_ = endpoint.seen[start:]
    assert auth is None and form["client_id"] == ["bogus"] and "client_secret" not in form
    assert all(secret not in json.dumps([a, f]) for _, a, f in endpoint.seen)
    for extra in ({}, {"oauthClientId": "good"}):
        assert inline(**extra).status_code == 200
        _, auth, form = endpoint.seen[-1]
        presented = (
            base64.b64decode(auth[6:]).decode() if auth else f"{form['client_id'][0]}:{form['client_secret'][0]}"
        )
        assert presented == f"good:{secret}"


def test_a_provider_that_fails_is_spared_per_grant_and_a_huge_answer_is_refused(
    server: Server, api: httpx.Client, other_api: httpx.Client, endpoint: _TokenEndpoint
) -> None:
    """A 5xx from the provider is remembered for the grant that met it: its next call is answered without the
    provider, while another user's call still reaches it. An answer over 1 MiB is a 502 naming the provider's
    host (read no further), and is not taken for the provider being down (a fake token endpoint in the test
    serves both, which a real provider cannot be made to do)."""
    with client(server, server.new_user("admin", admin=True)) as admin:
        ids = {}
        for path in ("down", "huge"):
            made = {"name": unique(path), "tokenUrl": endpoint.url(path), "clientId": "good", "clientSecret": "s"}
            ids[path] = admin.post("oauthProviders/", json=made).json()["id"]
    body = {"name": unique("oauth"), "credentialType": "oauth", "token": "t", "refreshToken": "r"}
    cid = api.post("credentials/", json={**body, "oauthProviderId": ids["down"]}).json()["credentialId"]
    failed = assert_error(api.post(f"credentials/{cid}/accessToken/"), 502, "oauthProvider")
    assert "127.0.0.1 failed (temporarily_unavailable)" in failed["message"]
    calls = endpoint.calls("down")
    spared = assert_error(api.post(f"credentials/{cid}/accessToken/"), 502, "oauthProvider")
    assert "not tried again" in spared["message"] and endpoint.calls("down") == calls
    data = {"credentialType": "oauth", "oauthRefreshToken": "other"}
    other = assert_error(
        other_api.post("credentials/accessToken/", json={"credentialData": data, "oauthProviderId": ids["down"]}), 502
    )
    assert "not tried again" not in other["message"] and endpoint.calls("down") == calls + 1
    huge = {"credentialData": data, "oauthProviderId": ids["huge"]}
    calls = endpoint.calls("huge")
    for _ in range(2):
        refused = assert_error(api.post("credentials/accessToken/", json=huge), 502, "oauthProvider")
        assert "127.0.0.1 answered more than 1 MiB" in refused["message"]
    assert endpoint.calls("huge") == calls + 2
