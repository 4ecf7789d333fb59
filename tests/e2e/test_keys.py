"""Master keys: rotation under live traffic, resumed after SIGKILL, retirement, fail-fast start, AWS KMS."""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, update

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.crypto import DecryptionError
from strongroom.errors import MasterKeyError
from strongroom.store.models import Credential, KeyVersion
from tests.support import (
    AWS_ENV,
    BACKENDS,
    Server,
    backend_database,
    binding_of,
    default_signals,
    free_port,
    http_client,
    make_credential,
    secrets_of,
    stored_bytes,
)

# `keys rotate` where no server runs: nothing has to adopt the new version, so the rotation need not wait for it.
NO_SERVER = ("--settle", "0")


@pytest.fixture
def store_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A stopped server of its own (rotation changes its keys), on the backend given by `backend`."""
    with backend_database(request.param) as url:
        srv = Server(data_dir=tmp_path / "data", database_url=url)
        yield srv
        srv.stop()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    """A SQLite server of its own, stopped at teardown even when the test fails midway."""
    server = Server(data_dir=tmp_path / "data")
    yield server
    server.stop()


def settings_of(srv: Server, **extra: Any) -> Settings:
    kms = {k.removeprefix("STRONGROOM_").lower(): v for k, v in srv.extra_env.items() if k.startswith("STRONGROOM_")}
    return Settings(data_dir=srv.data_dir, database_url=srv.database_url, **kms, **extra)


def seed(srv: Server, n: int) -> tuple[str, dict[str, str]]:
    """A user with a token and `n` basic credentials created in-process (fast: without an fsync per credential,
    which only a crash of the seeding itself could miss); returns token and passwords."""
    service = Services.open(settings_of(srv, sqlite_synchronous="OFF"))
    try:
        username = f"seed-{secrets.token_hex(4)}"
        service.accounts.create_user(username)
        token = service.accounts.create_token(username)[1]
        who = service.accounts.authenticate(token)
        passwords = {}
        for i in range(n):
            password = f"pw-{i}-{secrets.token_hex(6)}"
            made = make_credential(service, who, {"name": f"seed-{i}", "user": "u", "password": password})
            passwords[made["credentialId"]] = password
        return token, passwords
    finally:
        service.close()


def opened(srv: Server) -> dict[str, tuple[int, dict[str, Any]]]:
    """Every stored credential, decrypted in a fresh process-local store: id -> (key version, secret fields)."""
    service = Services.open(settings_of(srv))
    try:
        with service.db.read() as s:
            return {row.id: (row.key_version, secrets_of(service, row)) for row in s.scalars(select(Credential))}
    finally:
        service.close()


def version_counts(srv: Server) -> dict[int, int]:
    engine = create_engine(settings_of(srv).resolved_database_url)
    try:
        with engine.connect() as conn:
            query = select(Credential.key_version, func.count()).group_by(Credential.key_version)
            return {v: n for v, n in conn.execute(query).all()}
    finally:
        engine.dispose()


def cli_json(srv: Server, *args: str, check: bool = True) -> Any:
    return json.loads(srv.cli(*args, "--json", check=check).stdout)


def serve_once(srv: Server) -> str:
    """Run `strongroom serve` expecting it to refuse to start; its output."""
    result = subprocess.run(
        [sys.executable, "-m", "strongroom", "serve"], env=srv.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0, "the server started although its keys are wrong"
    return result.stdout + result.stderr


# ---- rotation under load ---------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Reads and writes against a live server from a few threads; every response is recorded with its time."""

    api: str
    token: str
    readonly: list[str]  # credentials only read, so a GET never races a DELETE
    owned: list[list[str]]  # per writer thread: the credentials it alone patches and deletes
    expected: dict[str, str]  # credential id -> the password last acknowledged
    stop: threading.Event = field(default_factory=threading.Event)
    log: list[tuple[float, str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _client(self) -> httpx.Client:
        return http_client(base_url=self.api, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def _record(self, kind: str, resp: httpx.Response, ok: int) -> bool:
        self.log.append((time.monotonic(), kind, resp.status_code))
        if resp.status_code != ok:
            self.errors.append(f"{kind} -> {resp.status_code} {resp.text[:200]}")
        return resp.status_code == ok

    def reader(self) -> None:
        with self._client() as client:
            while not self.stop.is_set():
                self._record("get", client.get(f"credentials/{random.choice(self.readonly)}/"), 200)
                self._record("list", client.get("credentials/", params={"limit": 50}), 200)

    def writer(self, mine: list[str]) -> None:
        rng = random.Random()
        with self._client() as client:
            while not self.stop.is_set():
                password = secrets.token_hex(8)
                resp = client.post(
                    "credentials/", json={"name": secrets.token_hex(6), "user": "u", "password": password}
                )
                if self._record("create", resp, 201):
                    self.expected[resp.json()["credentialId"]] = password
                    mine.append(resp.json()["credentialId"])
                target = rng.choice(mine)
                password = secrets.token_hex(8)
                if self._record("patch", client.patch(f"credentials/{target}/", json={"password": password}), 200):
                    self.expected[target] = password
                if rng.random() < 0.3:
                    gone = mine.pop(rng.randrange(len(mine)))
                    if self._record("delete", client.delete(f"credentials/{gone}/"), 204):
                        del self.expected[gone]

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.reader) for _ in range(2)]
        threads += [threading.Thread(target=self.writer, args=(mine,)) for mine in self.owned]
        for t in threads:
            t.start()
        return threads


@pytest.mark.parametrize("store_server", BACKENDS, indirect=True)
def test_rotation_under_concurrent_load(store_server: Server, tmp_path: Path) -> None:
    """`keys rotate` against a serving server: zero failed requests, every data key re-wrapped, every secret
    decrypts to the last acknowledged value, and the server writes with the new version without a restart."""
    srv = store_server
    token, passwords = seed(srv, 300)
    srv.start()
    ids = list(passwords)
    owned = ids[60:]
    traffic = Traffic(srv.api, token, ids[:60], [owned[0::3], owned[1::3], owned[2::3]], dict(passwords))
    threads = traffic.run()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        report = cli_json(srv, "keys", "rotate", "--batch-size", "50")
        finished = time.monotonic()
        time.sleep(1.0)  # traffic goes on after the rotation, now under the new version only
    finally:
        traffic.stop.set()
        for t in threads:
            t.join(timeout=60)

    during = [(kind, status) for at, kind, status in traffic.log if started <= at <= finished]
    print(
        f"\nrotation under load ({'postgres' if srv.database_url else 'sqlite'}): {report['rewrapped']} re-wrapped "
        f"({report['retried']} retried after a concurrent change) in {report['seconds']}s; {len(during)} requests "
        f"during it ({sum(k in ('create', 'patch', 'delete') for k, _ in during)} writes), "
        f"{len(traffic.log)} in all, {len(traffic.errors)} failed"
    )
    assert traffic.errors == []
    assert report["newVersion"] == 2 and report["active"] == 2 and report["left"] == 0 and report["failed"] == 0
    # At least the 60 read-only rows; others may have been re-sealed under version 2 by a PATCH meanwhile.
    assert report["rewrapped"] >= 60, report
    assert {"get", "create", "patch"} <= {kind for kind, _ in during}, "no traffic ran during the rotation"

    with http_client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}) as client:
        after = f"after-{secrets.token_hex(8)}"
        resp = client.post("credentials/", json={"name": "after-rotation", "user": "u", "password": after})
        assert resp.status_code == 201
        traffic.expected[resp.json()["credentialId"]] = after
    srv.stop()

    stored = opened(srv)
    assert {cid: (version, secret["password"]) for cid, (version, secret) in stored.items()} == {
        cid: (2, password) for cid, password in traffic.expected.items()
    }
    # Canary scan after the rotation: no password in the database, the server log or the command's output.
    scanned = stored_bytes(srv, tmp_path) + srv.log_path.read_bytes() + json.dumps(report).encode()
    assert not [p for p in traffic.expected.values() if p.encode() in scanned]


def test_running_server_writes_with_the_new_version_without_restart(srv: Server) -> None:
    """Creates only (no PATCH meets a re-wrapped row): the server re-reads the changed key file by itself."""
    token, _ = seed(srv, 2)
    srv.start()
    with http_client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.post("credentials/", json={"name": "before", "user": "u", "password": "p"}).status_code == 201
        assert cli_json(srv, "keys", "rotate")["newVersion"] == 2
        resp = client.post("credentials/", json={"name": "after", "user": "u", "password": "after"})
        assert resp.status_code == 201
        # A key file gone from under a running server: it keeps the keys it has, no failing requests.
        key_file = srv.data_dir / "master.key"
        key_file.rename(key_file.with_name("moved.key"))
        time.sleep(1.2)  # past the re-read interval, so the next write looks at the file
        assert client.post("credentials/", json={"name": "unusable", "user": "u", "password": "p"}).status_code == 201
        key_file.with_name("moved.key").rename(key_file)
    srv.stop()
    assert "keeping the master keys already loaded" in srv.log_path.read_text()
    assert opened(srv)[resp.json()["credentialId"]] == (2, {"user": "u", "password": "after"})
    assert version_counts(srv) == {2: 5}


def test_rewrap_never_undoes_a_concurrent_patch(srv: Server) -> None:
    """A server that has not yet adopted the new version PATCHes a row between the re-wrap's read and its
    write: the conditional update skips that row (the PATCH wins), a later pass re-wraps it, and it
    decrypts to the patched value."""
    token, passwords = seed(srv, 3)
    stale = Services.open(settings_of(srv))
    stale._refreshed_at = float("inf")  # still on version 1, as a server between two key-file reads
    rotator = Services.open(settings_of(srv))
    try:
        assert rotator.keys.start_rotation() == 2
        target = min(passwords)
        wrap = rotator.barrier.keys.wrap

        def wrap_while_patched(data_key: bytes, aad: bytes) -> tuple[int, bytes]:
            if target.encode() in aad and passwords[target] != "raced":
                stale.credentials.update(stale.accounts.authenticate(token), target, {"password": "raced"})
                passwords[target] = "raced"
            return wrap(data_key, aad)

        rotator.barrier.keys.wrap = wrap_while_patched  # type: ignore[method-assign]
        report = rotator.keys.rewrap(settle=0)
    finally:
        stale.close()
        rotator.close()
    assert report["retried"] == 1 and report["rewrapped"] == 3 and report["left"] == 0
    assert {c: (v, s["password"]) for c, (v, s) in opened(srv).items()} == {c: (2, p) for c, p in passwords.items()}


# ---- crash and resume --------------------------------------------------------------------------------------


def interrupt_rotation(srv: Server, sig: int, once_rewrapped: int) -> dict[int, int]:
    """Start a slow `keys rotate`, send it `sig` once that many data keys are on version 2; the counts then."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "strongroom", "keys", "rotate", "--batch-size", "10", "--pause", "0.02", *NO_SERVER],
        env=srv.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=default_signals,  # Ctrl-C must reach it even when this run ignores SIGINT (nohup, trap '' INT)
    )
    deadline = time.monotonic() + 120
    while version_counts(srv).get(2, 0) < once_rewrapped and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) != 0, "the rotation finished before it could be interrupted"
    return version_counts(srv)


@pytest.mark.parametrize("store_server", BACKENDS, indirect=True)
def test_rotation_interrupted_then_killed_midway_resumes(store_server: Server) -> None:
    """Ctrl-C, then SIGKILL, the rotate process mid-run: each rerun adds no version and carries on; the last
    one finishes, and every secret decrypts to its value."""
    srv = store_server
    _, passwords = seed(srv, 600)
    after_ctrl_c = interrupt_rotation(srv, signal.SIGINT, 50)
    assert after_ctrl_c.get(1, 0) > 0 and after_ctrl_c.get(2, 0) >= 50, f"not stopped midway: {after_ctrl_c}"
    midway = interrupt_rotation(srv, signal.SIGKILL, after_ctrl_c[2] + 50)
    assert midway.get(1, 0) > 0 and midway.get(2, 0) >= after_ctrl_c[2] + 50, f"not killed midway: {midway}"
    assert cli_json(srv, "keys", "status")["onOlderVersions"] == midway[1]

    report = cli_json(srv, "keys", "rotate", *NO_SERVER)
    assert report["newVersion"] is None and report["active"] == 2  # resumed, not rotated again
    assert report["rewrapped"] == midway[1] and report["left"] == 0
    again = cli_json(srv, "keys", "rotate", *NO_SERVER, "--resume")
    assert again["newVersion"] is None and again["rewrapped"] == 0

    assert {cid: (v, secret["password"]) for cid, (v, secret) in opened(srv).items()} == {
        cid: (2, password) for cid, password in passwords.items()
    }
    engine = create_engine(settings_of(srv).resolved_database_url)
    with engine.connect() as conn:
        assert [v for (v,) in conn.execute(select(KeyVersion.version).order_by(KeyVersion.version))] == [1, 2]
    engine.dispose()


def test_rotate_of_a_quiet_store(srv: Server) -> None:
    """A figure for the report: rotating 5,000 credentials with nothing else running (no timing asserted)."""
    seed(srv, 5000)
    report = cli_json(srv, "keys", "rotate", *NO_SERVER)
    print(
        f"\nquiet rotate: {report['rewrapped']} data keys re-wrapped in {report['seconds']}s "
        f"(of which {report['settleSeconds']}s waiting for servers to adopt the version)"
    )
    assert report["rewrapped"] == 5000 and report["left"] == 0
    assert version_counts(srv) == {2: 5000}


# ---- retire -------------------------------------------------------------------------------------------------


def test_retire_only_once_nothing_uses_the_version(srv: Server) -> None:
    _, passwords = seed(srv, 5)
    service = Services.open(settings_of(srv))
    assert service.keys.start_rotation() == 2  # a rotation that stopped before re-wrapping anything
    service.close()

    active = srv.cli("keys", "retire", "2", check=False)
    assert active.returncode == 1 and "master key version 2 is active" in active.stderr
    used = srv.cli("keys", "retire", "1", check=False)
    assert used.returncode == 1 and "still wraps the data keys of 5 credential(s)" in used.stderr
    status = cli_json(srv, "keys", "status")
    assert status["active"] == 2 and status["onOlderVersions"] == 5
    assert [(v["version"], v["credentials"], v["active"]) for v in status["versions"]] == [(1, 5, False), (2, 0, True)]

    cli_json(srv, "keys", "rotate", *NO_SERVER, "--resume")
    srv.cli("keys", "retire", "1")
    again = srv.cli("keys", "retire", "1", check=False)
    assert again.returncode == 1 and again.stderr == "Error: master key version 1 is already retired\n"
    keyring = json.loads((srv.data_dir / "master.key").read_text())
    assert list(keyring["keys"]) == ["2"] and keyring["active"] == 2
    assert [v["retired"] for v in cli_json(srv, "keys", "status")["versions"]] == [True, False]
    assert {cid: secret["password"] for cid, (_, secret) in opened(srv).items()} == passwords
    srv.start()  # the start check no longer needs version 1
    srv.stop()


def test_two_rotations_at_once_never_put_two_keys_under_one_version(srv: Server) -> None:
    """Both processes picked version 2: the second to reach the key file is refused and the first key stays."""
    _, passwords = seed(srv, 3)
    first, second = Services.open(settings_of(srv)), Services.open(settings_of(srv))
    try:
        first.barrier.keys.add_version(2, None)
        written = (srv.data_dir / "master.key").read_text()
        with pytest.raises(MasterKeyError, match="already holds master key version 2"):
            second.barrier.keys.add_version(2, None)
        assert (srv.data_dir / "master.key").read_text() == written
    finally:
        first.close()
        second.close()
    assert cli_json(srv, "keys", "rotate", *NO_SERVER)["rewrapped"] == 3  # the first rotation is finished by a rerun
    assert {c: (v, s["password"]) for c, (v, s) in opened(srv).items()} == {c: (2, p) for c, p in passwords.items()}


def test_environment_keys_cannot_be_rewritten_but_a_new_version_is_adopted(srv: Server) -> None:
    """With STRONGROOM_MASTER_KEY the operator adds the version; `keys rotate` then re-wraps under it."""
    one = base64.b64encode(os.urandom(32)).decode()
    srv.extra_env["STRONGROOM_MASTER_KEY"] = one
    _, passwords = seed(srv, 3)
    refused = srv.cli("keys", "rotate", check=False)
    assert refused.returncode == 1 and "add version 2 to that keyring yourself" in refused.stderr
    two = base64.b64encode(os.urandom(32)).decode()
    keyring = {"format": "strongroom-keyring-1", "active": 2, "keys": {"1": one, "2": two}}
    srv.extra_env["STRONGROOM_MASTER_KEY"] = json.dumps(keyring)
    report = cli_json(srv, "keys", "rotate", *NO_SERVER)
    assert report["newVersion"] is None and report["active"] == 2 and report["rewrapped"] == 3
    assert {cid: (v, s["password"]) for cid, (v, s) in opened(srv).items()} == {c: (2, p) for c, p in passwords.items()}


# ---- fail fast ------------------------------------------------------------------------------------------------


def test_missing_or_wrong_key_version_refused_at_start(srv: Server) -> None:
    """A key file without the version the data needs, or with a different key under that number, stops the
    server at start with a message naming the version; the right file serves normally."""
    key_file = srv.data_dir / "master.key"
    token, _ = seed(srv, 4)
    before_rotation = key_file.read_text()
    cli_json(srv, "keys", "rotate", *NO_SERVER)
    rotated = key_file.read_text()

    key_file.write_text(before_rotation)
    output = serve_once(srv)
    assert f"master key version 2 is missing from key file {key_file}" in output
    assert "4 credential(s) are sealed with it" in output

    doc = json.loads(rotated)
    doc["keys"]["2"] = base64.b64encode(os.urandom(32)).decode()
    key_file.write_text(json.dumps(doc))
    output = serve_once(srv)
    assert f"master key version 2 from key file {key_file} does not match" in output

    key_file.write_text(rotated)
    srv.start()
    with http_client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}) as client:
        cid = client.get("credentials/").json()["data"][0]["credentialId"]
        assert client.patch(f"credentials/{cid}/", json={"password": "new"}).status_code == 200
    srv.stop()


# ---- AWS KMS -------------------------------------------------------------------------------------------------


def test_kms_provider_against_a_local_kms(srv: Server, kms: Any, kms_endpoint: str) -> None:
    """Data keys wrapped by KMS Encrypt under the configured key; `keys rotate --kms-key-id` moves them to
    another KMS key while serving; the wrapped keys are bound to their record; a lost key fails fast."""
    first = kms.create_key(Description="strongroom v1")["KeyMetadata"]["Arn"]
    second = kms.create_key(Description="strongroom v2")["KeyMetadata"]["Arn"]
    srv.extra_env.update(AWS_ENV)
    srv.extra_env.update({"STRONGROOM_KMS_KEY_ID": first, "STRONGROOM_KMS_ENDPOINT_URL": kms_endpoint})
    token, _ = seed(srv, 0)
    srv.start()
    expected = {}
    with http_client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}) as client:
        for i in range(20):
            password = f"kms-canary-{i}-{secrets.token_hex(8)}"
            resp = client.post("credentials/", json={"name": f"k{i}", "user": "u", "password": password})
            assert resp.status_code == 201
            expected[resp.json()["credentialId"]] = password
        patched = next(iter(expected))
        assert client.patch(f"credentials/{patched}/", json={"password": "patched-canary"}).status_code == 200
        expected[patched] = "patched-canary"

        report = cli_json(srv, "keys", "rotate", "--kms-key-id", second)
        assert report["newVersion"] == 2 and report["rewrapped"] == 20 and report["left"] == 0
        resp = client.post("credentials/", json={"name": "after", "user": "u", "password": "after-canary"})
        assert resp.status_code == 201  # the running server adopted version 2 from the database
        expected[resp.json()["credentialId"]] = "after-canary"
    status = cli_json(srv, "keys", "status")
    assert [(v["version"], v["keyRef"], v["credentials"]) for v in status["versions"]] == [
        (1, first, 0),
        (2, second, 21),
    ]
    srv.stop()

    assert {c: (v, s["password"]) for c, (v, s) in opened(srv).items()} == {c: (2, p) for c, p in expected.items()}
    db_bytes = b"".join(f.read_bytes() for f in srv.data_dir.glob("strongroom.db*"))
    assert not [p for p in expected.values() if p.encode() in db_bytes]
    assert not (srv.data_dir / "master.key").exists()  # nothing local holds key material

    service = Services.open(settings_of(srv))
    try:
        with service.db.read() as s:
            a, b = s.scalars(select(Credential).limit(2)).all()
        assert len(a.wrapped_key) != 12 + 32 + 16  # a KMS ciphertext blob, not a local AES-GCM wrap
        with pytest.raises(DecryptionError):  # EncryptionContext binds the wrapped key to its record
            service.barrier.keys.unwrap(2, a.wrapped_key, binding_of(b).aad())
    finally:
        service.close()

    without_kms = Server(data_dir=srv.data_dir)
    assert f"it is the AWS KMS key {second}; set STRONGROOM_KMS_KEY_ID" in serve_once(without_kms)

    lost = kms_key_arn_that_does_not_exist(second)
    engine = create_engine(settings_of(srv).resolved_database_url)
    with engine.begin() as conn:
        conn.execute(update(KeyVersion).where(KeyVersion.version == 2).values(key_ref=lost))
    engine.dispose()
    output = serve_once(srv)
    assert f"master key version 2 (KMS key {lost}) cannot be used from AWS KMS" in output


def kms_key_arn_that_does_not_exist(arn: str) -> str:
    """The ARN of a deleted key: same account and region, another key id."""
    return arn.rsplit("/", 1)[0] + "/" + "00000000-0000-4000-8000-000000000000"


def test_kms_unreachable_fails_fast_at_start(srv: Server) -> None:
    """No KMS answering at the configured endpoint: `serve` exits at once saying so, instead of serving 500s."""
    srv.extra_env.update(AWS_ENV)
    srv.extra_env.update(
        {"STRONGROOM_KMS_KEY_ID": "alias/strongroom", "STRONGROOM_KMS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    )
    output = serve_once(srv)
    assert "AWS KMS is unreachable" in output and "Traceback" not in output
