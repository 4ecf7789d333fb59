"""Reliability: acknowledged writes survive SIGKILL; a database outage is a quick 503 and heals by itself."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import ServiceUnavailable
from strongroom.store.db import Database, unavailable
from strongroom.store.models import Credential, CredentialCount, User
from tests.support import Server, backend_database, free_port, http_client, secrets_of

PG_BIN = Path(os.environ.get("STRONGROOM_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
DSN_PASSWORD = "dsn-pw-canary-" + secrets.token_hex(4)  # trust auth ignores it; it must never be echoed


# ---- crash safety ------------------------------------------------------------------------------------------


@dataclass
class Writers:
    """Threads creating credentials as fast as the server acknowledges them, recording every 2xx."""

    api: str
    token: str
    label: str
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (name, password sent)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with http_client(base_url=self.api, headers=headers, timeout=30) as http:
            i = 0
            while not self.stop.is_set():
                name, password = f"{self.label}-w{n}-{i}", secrets.token_hex(16)
                try:
                    r = http.post("/credentials/", json={"name": name, "user": "etl", "password": password})
                except httpx.TransportError:
                    return  # the server died with this request in flight: its outcome is unknown, not acked
                if 200 <= r.status_code < 300:
                    with self.lock:
                        self.acked[r.json()["credentialId"]] = (name, password)
                i += 1

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def _await_dead_sessions(service: Services, timeout: float = 30) -> None:
    """Wait until no other PostgreSQL session of the store is busy: a statement the database had already
    received from the killed server still commits after its client died, and the checks must see a still store."""
    others = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND state <> 'idle'"
    )
    deadline = time.monotonic() + timeout
    with service.db.engine.connect() as conn:
        while conn.execute(others).scalar_one() > 0:
            assert time.monotonic() < deadline, "the killed server's database sessions did not end"
            time.sleep(0.05)
            conn.rollback()


def _verify_store(settings: Settings, token: str, acked: dict[str, tuple[str, str]]) -> int:
    """Open the store in-process and check every acked create and every row; returns the owner's row count."""
    service = Services.open(settings)
    try:
        if not service.db.is_sqlite:
            _await_dead_sessions(service)
        owner = service.accounts.authenticate(token).user_id
        with service.db.read() as s:
            rows = list(s.scalars(select(Credential).where(Credential.owner_id == owner)))
            counted = s.scalar(
                select(func.coalesce(func.sum(CredentialCount.n), 0)).where(CredentialCount.owner_id == owner)
            )
        opened = {}
        for row in rows:  # nothing half-written: every row has its key and ciphertext and decrypts
            assert row.wrapped_key and row.ciphertext, f"row {row.id} lacks its wrapped key or ciphertext"
            opened[row.id] = (row.name, secrets_of(service, row))
        for cid, (name, password) in acked.items():
            assert cid in opened, f"acknowledged create {cid} ({name}) is missing"
            assert opened[cid] == (name, {"user": "etl", "password": password}), f"{cid} does not match what was sent"
        assert counted == len(rows), f"count table says {counted}, there are {len(rows)} rows"
        return len(rows)
    finally:
        service.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_acknowledged_creates_survive_sigkill(backend: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("STRONGROOM_CRASH_SEED") or secrets.randbits(32))
    rng = random.Random(seed)
    print(f"\ncrash test ({backend}): seed {seed} (rerun with STRONGROOM_CRASH_SEED={seed})")
    with backend_database(backend) as url:
        srv = Server(data_dir=tmp_path / "data", database_url=url)
        try:
            srv.start()
            token = srv.new_user("crash")
            settings = Settings(data_dir=srv.data_dir, database_url=url)
            acked: dict[str, tuple[str, str]] = {}
            kills = 0
            for cycle in range(3):
                writers = Writers(srv.api, token, f"c{cycle}")
                threads = [threading.Thread(target=writers.run, args=(n,)) for n in range(4)]
                for t in threads:
                    t.start()
                deadline = time.monotonic() + 30
                while writers.count() < 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.05, 1.0))
                srv.stop(signal.SIGKILL)  # mid-write: some creates are in flight, unacknowledged
                kills += 1
                writers.stop.set()
                for t in threads:
                    t.join(timeout=60)
                assert writers.count() >= 5, f"seed {seed}: too few creates before the kill"
                acked.update(writers.acked)
                rows = _verify_store(settings, token, acked)
                srv.start()  # the same data, after the crash
                with http_client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                    page = http.get("/credentials/", params={"limit": 1000}).json()
                    total, listed = page["totalCount"], page["data"]
                    while page["next"]:  # group commit can land more than one page of creates before a kill
                        page = http.get(page["next"]).json()
                        listed += page["data"]
                    assert total == rows == len(listed), f"seed {seed}: list disagrees with rows"
                    assert acked.keys() <= {c["credentialId"] for c in listed}
                    assert http.get("/credentials/", params={"limit": 1}).json()["totalCount"] == rows
            print(f"crash test ({backend}): {kills} SIGKILLs survived, {len(acked)} acknowledged creates verified")
        finally:
            srv.stop()


# ---- database outage ------------------------------------------------------------------------------------------


@dataclass
class ThrowawayCluster:
    """A private PostgreSQL cluster (initdb into a temp dir) that a test may stop and start at will."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres:{DSN_PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        """Run a PostgreSQL binary, as user postgres when we are root (initdb and postgres refuse root)."""
        command = [str(PG_BIN / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return (self.root / "data" / "postmaster.pid").exists()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN}; set STRONGROOM_TEST_PG_BIN")
    root = Path(tempfile.mkdtemp(prefix="strongroom-pg-"))  # not under tmp_path: user postgres must reach it
    pg = ThrowawayCluster(root)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        if pg.running():
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _fill_pools(srv: Server, token: str, cid: str) -> None:
    """Concurrent reads and updates, so the server's pools hold several connections for an outage to kill."""
    headers = {"Authorization": f"Bearer {token}"}

    def work(n: int) -> None:
        with http_client(base_url=srv.api, headers=headers, timeout=30) as http:
            for _ in range(5):
                assert http.get(f"/credentials/{cid}/").status_code == 200
                assert http.get("/credentials/").status_code == 200
            assert http.patch(f"/credentials/{cid}/", json={"description": f"d{n}"}).status_code == 200

    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(work, n) for n in range(8)]:
            done.result()  # re-raises a failed assertion from the thread


def _assert_503(r: httpx.Response, what: str) -> None:
    assert r.status_code == 503, f"{what}: {r.status_code} {r.text}"
    assert r.headers["content-type"] == "application/json"
    assert r.headers["retry-after"].isdigit()
    message = r.json()["message"]
    assert "database" in message and "retry" in message, message
    assert DSN_PASSWORD not in r.text and "postgresql" not in r.text.lower(), r.text


def test_postgres_outage_is_503_and_recovers_without_restart(cluster: ThrowawayCluster, tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", database_url=cluster.url, extra_env={"STRONGROOM_DB_TIMEOUT": "5"})
    srv.start()
    try:
        token = srv.new_user("outage")
        with http_client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            cid = http.post("/credentials/", json={"name": "before", "user": "u", "password": "p"}).json()[
                "credentialId"
            ]
            _fill_pools(srv, token, cid)
            requests: list[tuple[str, str, dict[str, Any]]] = [
                ("auth", "/version/", {}),
                ("get", f"/credentials/{cid}/", {}),
                ("list", "/credentials/", {}),
                ("create", "/credentials/", {"json": {"name": "during", "user": "u", "password": "p"}}),
                ("update", f"/credentials/{cid}/", {"json": {"name": "renamed"}}),
                ("delete", f"/credentials/{cid}/", {}),
                ("bad token", "/version/", {"headers": {"Authorization": "Bearer sr_unknown-token"}}),
            ]
            methods = {"create": "POST", "update": "PATCH", "delete": "DELETE"}

            cluster.stop()
            slowest, answered = 0.0, 0
            for _ in range(3):
                for what, path, kwargs in requests:
                    started = time.monotonic()
                    r = http.request(methods.get(what, "GET"), path, **kwargs)
                    slowest = max(slowest, time.monotonic() - started)
                    _assert_503(r, what)
                    answered += 1
            assert slowest < 4, f"a request took {slowest:.1f}s during the outage"
            assert srv.proc is not None and srv.proc.poll() is None
            assert httpx.get(f"{srv.base}/healthz").status_code == 200

            cluster.start()
            started = time.monotonic()
            first = http.get(f"/credentials/{cid}/")  # the very next request must succeed
            recovered = time.monotonic() - started
            assert first.status_code == 200, first.text
            assert http.post("/credentials/", json={"name": "after", "user": "u", "password": "p"}).status_code == 201

            # An outage nobody noticed: the pools hold only dead connections; the next requests (writes first)
            # all succeed, whichever pool they draw from.
            later = http.post("/credentials/", json={"name": "later", "user": "u", "password": "p"}).json()
            _fill_pools(srv, token, later["credentialId"])
            cluster.stop()
            cluster.start()
            assert http.post("/credentials/", json={"name": "unseen", "user": "u", "password": "p"}).status_code == 201
            assert http.patch(f"/credentials/{later['credentialId']}/", json={"name": "later2"}).status_code == 200
            for _ in range(12):
                assert http.get(f"/credentials/{cid}/").status_code == 200
            assert http.get("/credentials/").json()["totalCount"] == 4
        print(
            f"\noutage: {answered} requests during the outage, all 503 (slowest {slowest * 1000:.0f} ms); "
            f"first request after restart succeeded in {recovered * 1000:.0f} ms"
        )
    finally:
        srv.stop()
        if not cluster.running():
            cluster.start()
    assert DSN_PASSWORD not in srv.log_path.read_text()


def test_server_fails_fast_naming_the_database_when_it_is_down(cluster: ThrowawayCluster, tmp_path: Path) -> None:
    cluster.stop()
    try:
        srv = Server(data_dir=tmp_path / "data", database_url=cluster.url)
        with pytest.raises(RuntimeError, match="server exited") as failed:
            srv.start()  # exits rather than waiting: interpreter start-up dominates, so no wall-clock bound here
        message = str(failed.value)
        assert f"cannot use the database at 127.0.0.1:{cluster.port}/postgres" in message, message
        assert DSN_PASSWORD not in message
    finally:
        cluster.start()


def test_sqlite_locked_beyond_busy_timeout_is_503(tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data", extra_env={"STRONGROOM_DB_TIMEOUT": "1"})
    srv.start()
    try:
        token = srv.new_user("locked")
        with http_client(base_url=srv.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            cid = http.post("/credentials/", json={"name": "a", "user": "u", "password": "p"}).json()["credentialId"]
            holder = sqlite3.connect(srv.data_dir / "strongroom.db", isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock for longer than busy_timeout
            try:
                # The setting's 1 s, not the 30 s default: a request waiting the default would time out here.
                body = {"name": "b", "user": "u", "password": "p"}
                _assert_503(http.post("/credentials/", json=body, timeout=20), "create")
                _assert_503(http.patch(f"/credentials/{cid}/", json={"name": "c"}, timeout=20), "update")
                assert http.get(f"/credentials/{cid}/").status_code == 200  # WAL readers are not blocked
            finally:
                holder.rollback()
                holder.close()
            assert http.post("/credentials/", json={"name": "b", "user": "u", "password": "p"}).status_code == 201
    finally:
        srv.stop()


def test_sqlite_file_that_cannot_be_opened_fails_start_clearly(tmp_path: Path) -> None:
    blocked = tmp_path / "data" / "strongroom.db"
    blocked.mkdir(parents=True)  # a directory where the database file should be
    srv = Server(data_dir=tmp_path / "data")
    with pytest.raises(RuntimeError, match="server exited") as failed:
        srv.start()
    assert f"cannot use the database at {blocked}" in str(failed.value), str(failed.value)


def test_only_outage_errors_become_503(tmp_path: Path) -> None:
    """A wrong query or a broken constraint must stay a 500/409, never hide behind a retryable 503."""
    path = tmp_path / "x.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    with pytest.raises(OperationalError) as wrong_query, engine.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    assert unavailable(wrong_query.value) is None
    with pytest.raises(IntegrityError) as duplicate, engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    assert unavailable(duplicate.value) is None
    engine.dispose()

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        waiter.execute("BEGIN IMMEDIATE")
    holder.rollback()
    holder.close()
    waiter.close()
    error = unavailable(locked.value)
    assert error is not None and error.status_code == 503 and error.retry_after > 0


def test_a_full_database_disk_says_so_not_retry_shortly(tmp_path: Path) -> None:
    """SQLITE_FULL (here from max_page_count, as a full disk gives it) says the disk is full: retrying shortly would
    not help. At start the database is named; a 503 to API clients names no server path. The restore test on a
    small tmpfs covers a real full disk (as root)."""
    path = tmp_path / "full.db"
    db = Database(f"sqlite:///{path}")
    event.listen(db.engine, "connect", lambda conn, _record: conn.execute("PRAGMA max_page_count=2"))
    try:
        with pytest.raises(ServiceUnavailable) as full:
            db.migrate()  # the schema needs far more than two pages
    finally:
        db.dispose()
    advice = "is full (no space left on the device); free some space, then try again"
    assert full.value.message == f"the disk holding the database {path} {advice}"
    served = unavailable(full.value.__cause__)
    assert served is not None and served.message == f"the disk holding the database {advice}"


def test_sqlite_writes_fail_with_503_while_the_file_cannot_be_opened_then_recover(tmp_path: Path) -> None:
    """The group committer opens its connection lazily; failing to must fail that write, not hang every write."""
    path = tmp_path / "strongroom.db"
    db = Database(f"sqlite:///{path}", timeout=1)
    db.migrate()
    users = select(func.count()).select_from(User)
    try:
        path.rename(tmp_path / "moved.db")
        path.mkdir()  # a directory where the database file should be: SQLITE_CANTOPEN
        with pytest.raises(ServiceUnavailable):
            db.transact(lambda tx: tx.rows(users, {}))
        path.rmdir()
        (tmp_path / "moved.db").rename(path)
        assert db.transact(lambda tx: tx.rows(users, {}))[0][0] == 0
    finally:
        db.dispose()
