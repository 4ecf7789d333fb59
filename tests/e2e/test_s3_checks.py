"""S3 checks of s3 credentials (issue 17, "S3 checks"): `POST credentials/{id}/test/` and `POST credentials/test/`
list one key against a moto S3 server that checks signatures, and each failure says which it is (bad access
key, signature mismatch, bad session token, bucket missing, access denied, endpoint unreachable, timed out)
without a secret; the endpoint goes through the SSRF guard first; consumers may test; uses are audited."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.services.accounts import SCOPES
from tests.support import S3Peer, Server, assert_error, client, s3_server, unique

DENIED_HOST = "s3.denied.test"
DENIED_ADDRESS = "127.0.0.2"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Peer]:
    with s3_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a deny list (a host and a loopback address) and a one-second read timeout."""
    env = {
        "STRONGROOM_CONNECT_DENY": f"{DENIED_HOST},{DENIED_ADDRESS}/32",
        "STRONGROOM_CONNECT_TIMEOUT": "2",
        "STRONGROOM_STATEMENT_TIMEOUT": "1",
    }
    with Server(data_dir=tmp_path_factory.mktemp("s3") / "srv", extra_env=env) as server:
        yield server


def _user(server: Server, prefix: str, scopes: tuple[str, ...] = SCOPES) -> tuple[str, str]:
    """(username, token with `scopes`) of a new user."""
    services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        username = unique(prefix)
        services.accounts.create_user(username)
        return username, services.accounts.create_token(username, scopes=scopes)[1]
    finally:
        services.close()


@pytest.fixture(scope="module")
def owner(srv: Server) -> Iterator[httpx.Client]:
    with client(srv, _user(srv, "owner")[1]) as c:
        yield c


def _s3_body(peer: S3Peer, **changes: Any) -> dict[str, Any]:
    body = {
        "credentialType": "s3",
        "awsAccessKeyId": peer.access_key_id,
        "awsSecretAccessKey": peer.secret_access_key,
    }
    if peer.session_token:
        body["awsSessionToken"] = peer.session_token
    return {**body, **changes}


def _credential(api: httpx.Client, peer: S3Peer, **changes: Any) -> str:
    resp = api.post("credentials/", json={"name": unique("s3"), **_s3_body(peer, **changes)})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["credentialId"])


def _check(peer: S3Peer, url: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"url": url or f"s3://{peer.bucket}/in/", "endpointUrl": peer.endpoint_url, **extra}


def test_the_right_keys_and_session_credentials_list_one_key(owner: httpx.Client, s3: S3Peer) -> None:
    """A stored key, a stored session credential and inline credentialData pass; credentialData is not kept."""
    assert s3.temporary is not None
    s3.client().put_object(Bucket=s3.bucket, Key="in/a.csv", Body=b"a\n")
    for peer in (s3, s3.temporary):
        answer = owner.post(f"credentials/{_credential(owner, peer)}/test/", json=_check(s3))
        assert answer.status_code == 200, answer.text
        assert (
            answer.json()["message"].startswith("Connection successful") and "(1 key seen)" in answer.json()["message"]
        )
    before = owner.get("credentials/").json()["count"]
    inline = owner.post("credentials/test/", json={**_check(s3), "credentialData": _s3_body(s3.temporary)})
    assert inline.status_code == 200, inline.text
    assert owner.get("credentials/").json()["count"] == before


def test_each_failure_says_why_and_never_echoes_a_secret(owner: httpx.Client, s3: S3Peer) -> None:
    assert s3.temporary is not None and s3.denied is not None
    wrong_secret = "canary-" + s3.secret_access_key[::-1]
    wrong_token = "canary-token-" + s3.access_key_id
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    cases = [
        ({"awsSecretAccessKey": wrong_secret}, s3, _check(s3), "signature mismatch", "awsSecretAccessKey"),
        ({"awsAccessKeyId": "AKIA0000000000UNKNOWN"}, s3, _check(s3), "bad access key", "awsAccessKeyId"),
        ({"awsSessionToken": wrong_token}, s3.temporary, _check(s3), "bad session token", "awsSessionToken"),
        ({}, s3, _check(s3, "s3://no-such-bucket/x"), "bucket missing", "url"),
        ({}, s3.denied, _check(s3), "access denied", "url"),
        ({}, s3, {**_check(s3), "endpointUrl": dead}, "endpoint unreachable", "endpointUrl"),
        (
            {},
            s3,
            {**_check(s3), "endpointUrl": "http://s3.no-such-host.invalid"},
            "endpoint unreachable",
            "endpointUrl",
        ),
    ]
    for changes, peer, check, reason, field in cases:
        cid = _credential(owner, peer, **changes)
        for resp in (
            owner.post(f"credentials/{cid}/test/", json=check),
            owner.post("credentials/test/", json={**check, "credentialData": _s3_body(peer, **changes)}),
        ):
            answer = assert_error(resp, 400, field)
            assert answer["message"].startswith(reason), (reason, answer)
            for secret in (wrong_secret, wrong_token, peer.secret_access_key, s3.secret_access_key):
                assert secret not in resp.text


def test_a_silent_endpoint_times_out(owner: httpx.Client, s3: S3Peer) -> None:
    """An endpoint that accepts the connection and never answers: "timed out" after the read timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(sock.accept()[0]), daemon=True).start()
    try:
        cid = _credential(owner, s3)
        check = {**_check(s3), "endpointUrl": f"http://127.0.0.1:{sock.getsockname()[1]}"}
        answer = assert_error(owner.post(f"credentials/{cid}/test/", json=check), 400, "endpointUrl")
        assert answer["message"].startswith("timed out"), answer
    finally:
        for s in (*held, sock):
            s.close()


def test_the_endpoint_passes_the_ssrf_guard_before_any_packet(owner: httpx.Client, s3: S3Peer) -> None:
    """169.254.169.254, a denied host and a denied address answer 403 naming the rule; the listener on the
    denied address never sees a connection, and the key is not opened (no use is audited)."""
    sock = socket.socket()
    sock.bind((DENIED_ADDRESS, 0))
    sock.listen()
    sock.setblocking(False)
    cid = _credential(owner, s3)
    cases = {
        "http://169.254.169.254": "link-local or cloud metadata",
        f"http://{DENIED_HOST}:9000": "deny list",
        f"http://{DENIED_ADDRESS}:{sock.getsockname()[1]}": "deny list",
    }
    try:
        for endpoint, why in cases.items():
            answer = assert_error(
                owner.post(f"credentials/{cid}/test/", json={**_check(s3), "endpointUrl": endpoint}), 403
            )
            assert why in answer["message"], answer
        with pytest.raises(BlockingIOError):
            sock.accept()
    finally:
        sock.close()


def test_bad_input_names_the_field(owner: httpx.Client, s3: S3Peer) -> None:
    cid = _credential(owner, s3)
    basic = owner.post("credentials/", json={"name": unique("b"), "user": "u", "password": "p"}).json()["credentialId"]
    assert_error(owner.post(f"credentials/{cid}/test/", json={"url": "http://x/y"}), 422, "url")
    assert_error(owner.post(f"credentials/{cid}/test/", json={}), 422, "url")
    assert_error(
        owner.post(f"credentials/{cid}/test/", json={**_check(s3), "endpointUrl": "ftp://h"}), 422, "endpointUrl"
    )
    assert_error(owner.post(f"credentials/{cid}/test/", json={**_check(s3), "region": "moon"}), 422, "region")
    assert_error(owner.post(f"credentials/{basic}/test/", json=_check(s3)), 422, "credentialId")
    no_secret = {**_check(s3), "credentialData": {"credentialType": "s3", "awsAccessKeyId": "AKIAX"}}
    assert_error(owner.post("credentials/test/", json=no_secret), 422, "awsSecretAccessKey")
    assert_error(owner.post("credentials/test/", json=_check(s3)), 422, "credentialData")
    assert_error(owner.post("credentials/test/", json={**_check(s3), "credentialData": "x"}), 422, "credentialData")


def test_a_consumer_may_test_others_may_not_and_uses_are_audited(srv: Server, owner: httpx.Client, s3: S3Peer) -> None:
    """Shared as CONSUMER the credential can be tested; without a role it is 404; a token without the use
    scope gets 403; every test by id is a credential.use audit record with the purpose and URL, no secret."""
    cid = _credential(owner, s3)
    username, token = _user(srv, "consumer")
    share = {"operation": "updateRoles", "roles": [{"username": username, "role": "CONSUMER"}]}
    with client(srv, token) as consumer:
        assert_error(consumer.post(f"credentials/{cid}/test/", json=_check(s3)), 404)
        assert owner.patch(f"credentials/{cid}/sharedRoles/", json=share).status_code == 204
        tested = consumer.post(f"credentials/{cid}/test/", json=_check(s3))
        assert tested.status_code == 200, tested.text
        assert_error(consumer.post(f"credentials/{cid}/reveal/"), 403)
    with client(srv, _user(srv, "reader", scopes=("read",))[1]) as reader:
        assert_error(reader.post("credentials/test/", json={**_check(s3), "credentialData": _s3_body(s3)}), 403)
    services = Services.open(Settings(data_dir=srv.data_dir, database_url=srv.database_url))
    try:
        records = [r for r in services.audit.export() if cid in r and '"credential.use"' in r]
    finally:
        services.close()
    assert len(records) == 1 and '"credential.test"' in records[0] and s3.bucket in records[0], records
    assert username in records[0]
    assert s3.secret_access_key not in records[0]


def test_s3_secrets_used_for_checks_and_reveal_leak_nowhere(srv: Server, owner: httpx.Client, s3: S3Peer) -> None:
    """Canary: the S3 secret key and session token of stored and inline credentials, used for checks (passing
    and failing) and revealed, appear in no response but reveal's, no log line, no audit record, no stored
    byte."""
    assert s3.temporary is not None and s3.temporary.session_token
    wrong_secret = "canary-" + s3.secret_access_key[::-1]
    stored = _credential(owner, s3.temporary)
    wrong = _credential(owner, s3, awsSecretAccessKey=wrong_secret)
    inline = {**_check(s3), "credentialData": _s3_body(s3.temporary)}
    responses = [
        owner.post(f"credentials/{stored}/test/", json=_check(s3)),
        owner.post(f"credentials/{wrong}/test/", json=_check(s3)),
        owner.post("credentials/test/", json=inline),
        owner.post(
            "credentials/test/", json={**_check(s3), "credentialData": _s3_body(s3, awsSecretAccessKey=wrong_secret)}
        ),
    ]
    assert [r.status_code for r in responses] == [200, 400, 200, 400]
    revealed = owner.post(f"credentials/{stored}/reveal/").json()
    assert revealed["awsSessionToken"] == s3.temporary.session_token
    services = Services.open(Settings(data_dir=srv.data_dir, database_url=srv.database_url))
    try:
        audit = "\n".join(services.audit.export())
    finally:
        services.close()
    assert "credential.test" in audit
    db = srv.data_dir / "strongroom.db"
    rows = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    log = srv.log_path.read_bytes()
    assert b"/test/" in log
    secrets = (s3.temporary.secret_access_key, s3.temporary.session_token, s3.secret_access_key, wrong_secret)
    for secret in secrets:
        assert not any(secret in r.text for r in responses)
        assert secret not in audit
        assert secret.encode() not in rows and secret.encode() not in log
