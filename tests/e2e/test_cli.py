"""The `strongroom` command line against the live server: its commands' logic in-process, its error output as a
user sees it from a real subprocess."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from tests.support import Server


@pytest.fixture
def cli_user(server: Server) -> tuple[str, str]:
    """A user and token made with the CLI itself."""
    username = f"cli-{secrets.token_hex(4)}"
    created = server.cli("users", "create", username, "--json")
    assert json.loads(created.stdout)["username"] == username
    issued = json.loads(server.cli("tokens", "create", username, "--name", "laptop", "--json").stdout)
    assert issued["token"].startswith("sr_") and issued["scopes"] == ["read", "write", "use", "admin"]
    return username, issued["token"]


def test_users_and_tokens(server: Server, cli_user: tuple[str, str]) -> None:
    username, token = cli_user
    auth = {"Authorization": f"Token {token}"}
    assert httpx.get(f"{server.api}/version/", headers=auth).status_code == 200

    users = json.loads(server.cli("users", "list", "--json").stdout)
    assert username in [u["username"] for u in users]
    tokens = json.loads(server.cli("tokens", "list", username, "--json").stdout)
    assert len(tokens) == 1 and tokens[0]["name"] == "laptop" and not tokens[0]["revoked"]
    listing = server.cli("tokens", "list", username).stdout + json.dumps(tokens)
    assert token not in listing and token[:8] in listing  # only a prefix is ever shown again

    duplicate = server.cli("users", "create", username, check=False)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    server.cli("tokens", "revoke", tokens[0]["id"])
    assert httpx.get(f"{server.api}/version/", headers=auth).status_code == 401


def test_credentials_lifecycle(server: Server, cli_user: tuple[str, str]) -> None:
    _, token = cli_user
    env = ["--token", token]
    made = server.cli(
        "credentials",
        *env,
        "create",
        "basic",
        "--name",
        "warehouse",
        "--description",
        "nightly ETL",
        "--from-json",
        "-",
        "--json",
        input=json.dumps({"user": "etl", "password": "pw-from-stdin"}),
    )
    cred = json.loads(made.stdout)
    assert cred["name"] == "warehouse" and cred["credentialType"] == "basic" and "password" not in cred
    cid = cred["credentialId"]

    s3 = server.cli("credentials", *env, "create", "s3", "--name", "lake", "--config-id", "cfg-1", "--json").stdout
    assert json.loads(s3)["configId"] == "cfg-1"

    listed = json.loads(server.cli("credentials", *env, "list", "--json").stdout)
    assert sorted(c["name"] for c in listed) == ["lake", "warehouse"]
    only_basic = json.loads(server.cli("credentials", *env, "list", "--type", "basic", "--json").stdout)
    assert [c["credentialId"] for c in only_basic] == [cid]
    table = server.cli("credentials", *env, "list").stdout
    assert "warehouse" in table and "nightly ETL" in table

    server.cli("credentials", *env, "update", cid, "--set", "password=rotated")
    renamed = json.loads(server.cli("credentials", *env, "update", cid, "--name", "dwh", "--json").stdout)
    assert renamed["name"] == "dwh" and renamed["description"] == ""  # DataRobot rule: name alone clears it
    assert json.loads(server.cli("credentials", *env, "get", cid, "--json").stdout)["name"] == "dwh"

    server.cli("credentials", *env, "delete", cid, "--yes")
    gone = server.cli("credentials", *env, "get", cid, check=False)
    assert gone.returncode == 1 and "not found" in gone.stderr and "Traceback" not in gone.stderr


def test_cli_reports_validation_errors_cleanly(server: Server, cli_user: tuple[str, str]) -> None:
    _, token = cli_user
    result = server.cli(
        "credentials",
        "--token",
        token,
        "create",
        "s3",
        "--name",
        "half",
        "--aws-access-key-id",
        "AKIA",
        check=False,
        process=True,
    )
    assert result.returncode == 1
    assert "awsSecretAccessKey" in result.stderr and "Traceback" not in result.stderr


def test_bad_token_is_a_clean_error(server: Server) -> None:
    result = server.cli("credentials", "--token", "sr_not-a-real-token", "list", check=False, process=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "token" in result.stderr.lower()
