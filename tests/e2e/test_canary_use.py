"""Canary scan of using credentials (issue 17, "Done when"): the database password, the S3 secret key and the
S3 session token, used for data-store tests and browsing, S3 checks and reveal (stored and as inline
credentialData, right and wrong), appear in no response but reveal's, no log line, no audit record (over the
API and exported) and no stored byte, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import PeerDatabase, S3Peer, Server, http_client, log_with, s3_server, scram_postgres, stored_bytes


@pytest.fixture(scope="module")
def peers() -> Iterator[tuple[PeerDatabase, S3Peer]]:
    with scram_postgres() as pg, s3_server() as s3:
        yield pg, s3


def test_secrets_used_through_the_server_leak_nowhere(
    server: Server, peers: tuple[PeerDatabase, S3Peer], tmp_path: Path
) -> None:
    pg, s3 = peers
    assert s3.temporary is not None and s3.temporary.session_token
    wrong_password, wrong_secret, wrong_token = (f"canary-{secrets.token_hex(12)}" for _ in range(3))
    planted = [
        pg.password,
        wrong_password,
        s3.secret_access_key,
        s3.temporary.secret_access_key,
        s3.temporary.session_token,
        wrong_secret,
        wrong_token,
    ]
    token = server.new_user("canary-use")
    answers: list[httpx.Response] = []
    with http_client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:

        def call(method: str, url: str, status: int, body: dict[str, Any] | None = None) -> httpx.Response:
            resp = api.request(method, url, json=body)
            assert resp.status_code == status, f"{method} {url}: {resp.text}"
            answers.append(resp)
            return resp

        def created(body: dict[str, Any]) -> str:
            return str(
                call("POST", "credentials/", 201, {"name": f"c-{secrets.token_hex(4)}", **body}).json()["credentialId"]
            )

        drivers = call("GET", "externalDataDrivers/", 200).json()["data"]
        driver = next(d["id"] for d in drivers if d["databaseDriver"] == "postgres")
        params = {"driverId": driver, "jdbcUrl": pg.jdbc_url}
        store = call("POST", "externalDataStores/", 201, {"canonicalName": "canary", "params": params}).json()["id"]
        basic = created({"user": pg.user, "password": pg.password})
        session = {
            "credentialType": "s3",
            "awsAccessKeyId": s3.temporary.access_key_id,
            "awsSecretAccessKey": s3.temporary.secret_access_key,
            "awsSessionToken": s3.temporary.session_token,
        }
        keys = {"credentialType": "s3", "awsAccessKeyId": s3.access_key_id, "awsSecretAccessKey": s3.secret_access_key}
        stored_s3 = [created(session), created(keys)]
        bad_s3 = [
            created({**keys, "awsSecretAccessKey": wrong_secret}),
            created({**session, "awsSessionToken": wrong_token}),
        ]
        ds = f"externalDataStores/{store}/"
        by_id, inline = {"credentialId": basic}, {"credentialData": {"credentialType": "basic", "user": pg.user}}
        call("POST", f"{ds}test/", 200, by_id)
        call("POST", f"{ds}test/", 400, {"user": pg.user, "password": wrong_password})
        call("POST", f"{ds}schemas/", 200, {"user": pg.user, "password": pg.password})
        call("POST", f"{ds}tables/", 200, {**by_id, "schema": "public"})
        call("POST", f"{ds}preview/", 200, {**by_id, "table": "orders", "maxRows": 2})
        call("POST", f"{ds}previewQuery/", 200, {**by_id, "sql": "SELECT item FROM orders", "maxRows": 2})
        call(
            "POST",
            f"{ds}previewQuery/",
            400,
            {"credentialData": {**inline["credentialData"], "password": wrong_password}, "sql": "SELECT 1"},
        )
        check = {"url": f"{s3.url}/", "endpointUrl": s3.endpoint_url}
        for cid in stored_s3:
            call("POST", f"credentials/{cid}/test/", 200, check)
        for cid in bad_s3:
            call("POST", f"credentials/{cid}/test/", 400, check)
        call("POST", "credentials/test/", 200, {**check, "credentialData": session})
        call("POST", "credentials/test/", 400, {**check, "credentialData": {**session, "awsSessionToken": wrong_token}})
        revealed = [api.post(f"credentials/{cid}/reveal/") for cid in (basic, *stored_s3)]
        assert [r.json().get("password") or r.json().get("awsSecretAccessKey") for r in revealed] == [
            pg.password,
            s3.temporary.secret_access_key,
            s3.secret_access_key,
        ]
        audit = call("GET", "auditLog/", 200).content
        answers.pop()

    assert b"credential.use" in audit and b"credential.reveal" in audit
    exported = server.cli("audit", "export")
    assert basic in exported.stdout
    # The server is shared by other tests: wait for this test's own last logged request (every earlier line of
    # this test is then in the log too).
    log = log_with(server, f"/credentials/{stored_s3[-1]}/reveal/".encode())
    assert f"/credentials/{stored_s3[0]}/test/".encode() in log and f"/credentials/{basic}/reveal/".encode() in log
    scanned = {
        "audit records answered": audit,
        "audit export": (exported.stdout + exported.stderr).encode(),
        "server log": log,
        "stored rows": stored_bytes(server, tmp_path),
    }
    assert basic.encode() in scanned["stored rows"] and store.encode() in scanned["stored rows"]
    for value in planted:
        needle = value.encode()
        for where, content in scanned.items():
            assert needle not in content, f"a secret used through the server is in the {where}"
        assert not any(needle in r.content for r in answers), "a secret used through the server was answered"
