"""Users, tokens and groups over HTTP, through the SDK and through the real CLI, with their audit records."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from tests.support import BACKENDS, Server, backend_database, client


@pytest.fixture(scope="module", params=BACKENDS)
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own that writes tokens' last use every 0.2 s (instead of 30 s)."""
    with (
        backend_database(request.param) as url,
        Server(tmp_path_factory.mktemp("accounts"), url, {"STRONGROOM_LAST_USED_FLUSH": "0.2"}) as server,
    ):
        yield server


@pytest.fixture(scope="module")
def root(srv: Server) -> str:
    """An administrator's token, both made with the local CLI."""
    name = f"root-{secrets.token_hex(3)}"
    assert "administrator" in srv.cli("users", "create", name, "--admin").stdout
    return str(json.loads(srv.cli("tokens", "create", name, "--json").stdout)["token"])


def _local_user(srv: Server, prefix: str = "u") -> tuple[str, str]:
    name = f"{prefix}-{secrets.token_hex(3)}"
    srv.cli("users", "create", name)
    return name, str(json.loads(srv.cli("tokens", "create", name, "--json").stdout)["token"])


def _records(srv: Server, action: str) -> list[dict[str, Any]]:
    services = Services.open(Settings(data_dir=srv.data_dir, database_url=srv.database_url))
    try:
        contents, _ = services.audit.audit.records(action=action, limit=1000)
    finally:
        services.close()
    return [json.loads(c) for c in contents]


def test_admins_manage_users_over_rest(srv: Server, root: str) -> None:
    name = f"bob-{secrets.token_hex(3)}"
    with client(srv, root) as admin:
        made = admin.post("/users/", json={"username": name})
        assert made.status_code == 201, made.text
        assert made.json()["username"] == name and made.json()["isAdmin"] is False
        assert admin.post("/users/", json={"username": name}).status_code == 409
        page = admin.get("/users/", params={"limit": 1})
        assert page.status_code == 200 and page.json()["count"] == 1 and page.json()["next"]
        everyone = {u["username"]: u for u in admin.get("/users/", params={"limit": 1000}).json()["data"]}
        assert everyone[name] == {**made.json(), "disabled": False}

        token = str(json.loads(srv.cli("tokens", "create", name, "--json").stdout)["token"])
        with client(srv, token) as bob:
            assert bob.get("/credentials/").status_code == 200
            refused = bob.get("/users/")
            assert refused.status_code == 403 and "administrator" in refused.json()["message"]
            assert bob.post("/users/", json={"username": "x" + name}).status_code == 403
            cid = bob.post("/credentials/", json={"name": "c", "user": "u", "password": "p"}).json()["credentialId"]

            off = admin.patch(f"/users/{name}/", json={"disabled": True})
            assert off.status_code == 200 and off.json()["disabled"] is True
            assert bob.get("/credentials/").status_code == 401  # at once
            assert bob.get(f"/credentials/{cid}/").status_code == 401
            assert admin.patch(f"/users/{name}/", json={"disabled": False}).json()["disabled"] is False
            assert bob.get(f"/credentials/{cid}/").status_code == 200
            left = admin.patch(f"/users/{name}/", json={"disabled": None, "isAdmin": False})  # null: left as it is
            assert left.status_code == 200 and (left.json()["disabled"], left.json()["isAdmin"]) == (False, False)
            assert admin.patch(f"/users/{name}/", json={"disabled": None, "isAdmin": None}).status_code == 422

            kept = admin.delete(f"/users/{name}/")
            assert kept.status_code == 409 and "owns 1 credential" in kept.json()["message"]
            assert bob.delete(f"/credentials/{cid}/").status_code == 204
            assert admin.delete(f"/users/{name}/").status_code == 204
            assert bob.get("/credentials/").status_code == 401
        assert admin.delete(f"/users/{name}/").status_code == 404
        assert admin.patch("/users/nobody-here/", json={"disabled": True}).status_code == 404
        assert admin.patch(f"/users/{name}/", json={"disabled": "yes"}).status_code == 422

    for action, status in (("user.create", 201), ("user.update", 200), ("user.delete", 204)):
        mine = [r for r in _records(srv, action) if r["detail"].get("username") == name]
        successes = [r for r in mine if r["outcome"] == "success"]
        assert successes and all(r["status"] == status for r in successes), action
    changes = [r["detail"] for r in _records(srv, "user.update") if r["detail"].get("username") == name]
    assert [c.get("disabled") for c in changes] == [True, False, None]  # the last one left it as it was
    assert changes[-1]["isAdmin"] is False


def test_admins_cannot_lock_themselves_out(srv: Server, root: str) -> None:
    with client(srv, root) as admin:
        me = next(u for u in admin.get("/users/", params={"limit": 1000}).json()["data"] if u["isAdmin"])
        assert admin.patch(f"/users/{me['username']}/", json={"disabled": True}).status_code == 409
        assert admin.delete(f"/users/{me['username']}/").status_code == 409


def test_api_keys_are_each_users_own(srv: Server, root: str) -> None:
    name, token = _local_user(srv, "carol")
    _, other_token = _local_user(srv, "dave")
    with client(srv, token) as carol, client(srv, other_token) as dave:
        made = carol.post("/account/apiKeys/", json={"name": "ci", "scopes": ["read"]})
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["token"].startswith("sr_") and key["scopes"] == ["read"] and key["lastUsedAt"] is None
        listed = carol.get("/account/apiKeys/")
        assert listed.status_code == 200 and key["token"] not in listed.text
        assert {k["name"] for k in listed.json()["data"]} == {"default", "ci"}
        assert all("token" not in k for k in listed.json()["data"])

        with client(srv, key["token"]) as ci:
            assert ci.get("/credentials/").status_code == 200
            denied = ci.post("/account/apiKeys/", json={"name": "more"})
            assert denied.status_code == 403 and "'write'" in denied.json()["message"]
        admin_scope = carol.post("/account/apiKeys/", json={"name": "root", "scopes": ["admin"]})
        assert admin_scope.status_code == 403 and "administrator" in admin_scope.json()["message"]
        default = carol.post("/account/apiKeys/", json={"name": "d"}).json()
        assert default["scopes"] == ["read", "write", "use"]  # a non-admin's new token never gets `admin`
        nulled = carol.post("/account/apiKeys/", json={"name": "n", "scopes": None, "expiresAt": None}).json()
        assert nulled["scopes"] == default["scopes"]  # null is absent, as the OpenAPI document says
        bad = carol.post("/account/apiKeys/", json={"name": "x", "expiresAt": "2001-01-01T00:00:00Z"})
        assert bad.status_code == 422
        # An offset that carries the calendar's first or last minute beyond it in UTC (found by the fuzzer: 500):
        before_time = carol.post("/account/apiKeys/", json={"name": "y", "expiresAt": "0001-01-01T00:00:00+00:02"})
        assert before_time.status_code == 422 and "expiresAt" in before_time.json()["message"], before_time.text
        last = carol.post("/account/apiKeys/", json={"name": "z", "expiresAt": "9999-12-31T23:59:00-00:02"})
        assert last.status_code == 201 and last.json()["expiresAt"] == "9999-12-31T23:59:59.999999Z", last.text

        assert dave.delete(f"/account/apiKeys/{key['id']}/").status_code == 404
        assert key["id"] not in dave.get("/account/apiKeys/").text
        assert carol.delete(f"/account/apiKeys/{key['id']}/").status_code == 204
        assert httpx.get(f"{srv.api}/version/", headers={"Authorization": f"Bearer {key['token']}"}).status_code == 401
        revoked = {k["id"]: k for k in carol.get("/account/apiKeys/").json()["data"]}[key["id"]]
        assert revoked["revoked"] is True

    made_records = [r for r in _records(srv, "token.create") if r["detail"].get("tokenId") == key["id"]]
    assert len(made_records) == 1 and made_records[0]["actor"]["username"] == name
    revoke_records = [r for r in _records(srv, "token.revoke") if r["detail"].get("tokenId") == key["id"]]
    assert len(revoke_records) == 1 and revoke_records[0]["outcome"] == "success"
    assert all(key["token"] not in json.dumps(r) for r in [*made_records, *revoke_records])


def _last_used(srv: Server, token: str, key_id: str) -> str | None:
    with client(srv, token) as http:
        return {k["id"]: k for k in http.get("/account/apiKeys/").json()["data"]}[key_id]["lastUsedAt"]  # type: ignore[no-any-return]


def test_last_use_is_recorded_once_a_minute(srv: Server) -> None:
    _, token = _local_user(srv, "erin")
    with client(srv, token) as erin:
        key = erin.post("/account/apiKeys/", json={"name": "job", "scopes": ["read"]}).json()
        cid = erin.post("/credentials/", json={"name": "c", "user": "u", "password": "p"}).json()["credentialId"]
    with client(srv, key["token"]) as job:
        assert job.get(f"/credentials/{cid}/").status_code == 200  # the fused GET path
        deadline = time.monotonic() + 10
        while (first := _last_used(srv, token, key["id"])) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first is not None
        assert job.get("/credentials/").status_code == 200
        time.sleep(0.6)  # three flushes
        assert _last_used(srv, token, key["id"]) == first  # not rewritten within the minute


def test_sdk_users_and_api_keys(srv: Server, root: str) -> None:
    import strongroom as sr

    name = f"sdk-{secrets.token_hex(3)}"
    with sr.Client(endpoint=srv.api, token=root):
        user = sr.User.create(name)
        assert user.username == name and not user.disabled and not user.is_admin
        assert name in [u.username for u in sr.User.list()]
        assert sr.User.disable(name).disabled and not sr.User.enable(name).disabled
        key = sr.ApiKey.create("sdk", scopes=["read"])
        assert key.token and key.token not in repr(key) and key.scopes == ["read"]
        assert key.key_id in [k.key_id for k in sr.ApiKey.list()]
        sr.ApiKey.revoke(key.key_id)
        assert next(k for k in sr.ApiKey.list() if k.key_id == key.key_id).revoked
        sr.User.delete(name)
        with pytest.raises(sr.ClientError) as missing:
            sr.User.disable(name)
        assert missing.value.status_code == 404


def test_cli_remote_users_tokens_groups(srv: Server, root: str) -> None:
    env = {"STRONGROOM_API_TOKEN": root}
    name = f"rem-{secrets.token_hex(3)}"

    def cli(*args: str, check: bool = True) -> Any:
        result = srv.cli(*args, check=False, env=env)
        assert not check or result.returncode == 0, result.stderr
        return result

    assert json.loads(cli("users", "create", name, "--json").stdout)["username"] == name
    listed = {u["username"]: u for u in json.loads(cli("users", "list", "--json").stdout)}
    assert listed[name]["disabled"] is False
    cli("users", "disable", name)
    assert {u["username"]: u for u in json.loads(cli("users", "list", "--json").stdout)}[name]["disabled"] is True
    cli("users", "enable", name)

    group = f"team-{secrets.token_hex(3)}"
    cli("groups", "create", group)
    cli("groups", "add", group, name)
    assert {g["name"]: g["members"] for g in json.loads(cli("groups", "list", "--json").stdout)}[group] == [name]
    cli("groups", "remove", group, name)
    cli("groups", "delete", group)
    assert group not in cli("groups", "list").stdout

    made = json.loads(
        cli("tokens", "create", "--name", "laptop", "--scope", "read", "--expires", "1d", "--json").stdout
    )
    assert made["token"].startswith("sr_") and made["scopes"] == ["read"] and made["expiresAt"]
    mine = cli("tokens", "list").stdout
    assert made["id"] in mine and made["token"] not in mine
    named = cli("tokens", "list", name, check=False)
    assert named.returncode == 1 and "drop USERNAME" in named.stderr
    cli("tokens", "revoke", made["id"])
    assert json.loads(cli("tokens", "list", "--json").stdout)[-1]["revoked"] is True

    # a non-admin token: the server's 403 names the requirement, in one line
    _, plain = _local_user(srv, "plain")
    env["STRONGROOM_API_TOKEN"] = plain
    refused = cli("users", "list", check=False)
    assert refused.returncode == 1 and "administrator" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("groups", "create", "nope", check=False).returncode == 1

    env["STRONGROOM_API_TOKEN"] = root
    cli("users", "delete", name)
    assert name not in cli("users", "list").stdout
    actions = {r["detail"].get("group") for r in _records(srv, "group.add_member")}
    assert group in actions
    assert [r["action"] for r in _records(srv, "group.delete") if r["detail"].get("group") == group] == ["group.delete"]


def test_cli_local_users_and_groups(srv: Server) -> None:
    name = f"loc-{secrets.token_hex(3)}"
    srv.cli("users", "create", name, "--admin")
    assert {u["username"]: u for u in json.loads(srv.cli("users", "list", "--json").stdout)}[name]["isAdmin"]
    token = json.loads(srv.cli("tokens", "create", name, "--json").stdout)["token"]
    srv.cli("users", "disable", name)
    assert httpx.get(f"{srv.api}/version/", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    srv.cli("users", "enable", name)
    with client(srv, token) as http:
        assert http.get("/users/").status_code == 200  # an administrator made with --admin
        http.post("/credentials/", json={"name": "c", "user": "u", "password": "p"})
    kept = srv.cli("users", "delete", name, check=False)
    assert kept.returncode == 1 and "owns 1 credential" in kept.stderr

    group = f"g-{secrets.token_hex(3)}"
    srv.cli("groups", "create", group)
    srv.cli("groups", "add", group, name)
    assert {g["name"]: g["members"] for g in json.loads(srv.cli("groups", "list", "--json").stdout)}[group] == [name]
    srv.cli("groups", "remove", group, name)
    srv.cli("groups", "delete", group)
    created = [r for r in _records(srv, "group.create") if r["detail"].get("group") == group]
    assert len(created) == 1 and created[0]["actor"] is None  # local administration


def test_cli_endpoint_without_token_is_refused(srv: Server, tmp_path: Path) -> None:
    result = srv.cli("users", "list", "--endpoint", srv.api, check=False)
    assert result.returncode == 1 and "STRONGROOM_API_TOKEN" in result.stderr


def test_local_changes_reach_the_servers_repeated_reads_at_once(srv: Server) -> None:
    """A GET repeated while nothing changes may be answered from memory (SQLite); a change made by another
    process on the same store (the local CLI, a second server) shows in the very next answer."""
    name, token = _local_user(srv, "hot")
    with client(srv, token) as http:
        cid = http.post("/credentials/", json={"name": "hot", "user": "u", "password": "p"}).json()["credentialId"]
        for _ in range(3):
            assert http.get(f"/credentials/{cid}/").json()["name"] == "hot"
        services = Services.open(Settings(data_dir=srv.data_dir, database_url=srv.database_url))
        try:
            owner = services.accounts.authenticate(token)
            services.credentials.update(owner, cid, {"name": "renamed"})
        finally:
            services.close()
        assert http.get(f"/credentials/{cid}/").json()["name"] == "renamed"

        # A consumer's list of what is shared with them (also answered from memory while nothing changes).
        reader, reader_token = _local_user(srv, "reader")
        share = {"operation": "updateRoles", "roles": [{"username": reader, "role": "CONSUMER"}]}
        assert http.patch(f"/credentials/{cid}/sharedRoles/", json=share).status_code == 204
        with client(srv, reader_token) as consumer:
            for _ in range(3):
                assert [c["credentialId"] for c in consumer.get("/credentials/").json()["data"]] == [cid]
            services = Services.open(Settings(data_dir=srv.data_dir, database_url=srv.database_url))
            try:
                unshare = {"operation": "updateRoles", "roles": [{"username": reader, "role": "NO_ROLE"}]}
                services.sharing.update_roles(services.accounts.authenticate(token), cid, unshare)
            finally:
                services.close()
            assert consumer.get("/credentials/").json()["data"] == []

        key = json.loads(srv.cli("tokens", "list", name, "--json").stdout)[-1]["id"]
        srv.cli("tokens", "revoke", key)
        assert http.get(f"/credentials/{cid}/").status_code == 401
