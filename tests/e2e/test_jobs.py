"""Batch jobs (issue 16) through a real server with the real `datarobot` client: localFile in and out, a registered
scoring function, jdbc intake and output against a scram-sha-256 PostgreSQL and a MariaDB user, access checked
before any row is read, failures that name the adapter and never the secret, and a server restart mid-job."""

from __future__ import annotations

import csv
import io
import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datarobot as dr
import httpx
import psycopg
import pymysql
import pytest

from tests.support import (
    PeerDatabase,
    S3Peer,
    Server,
    assert_error,
    busy_backends,
    client,
    closing_listener,
    mariadb_user,
    open_service,
    s3_server,
    scram_postgres,
    unique,
    until,
    wait_for_job,
)

PASSTHROUGH = "5e0000000000000000000001"
ROWS = 40


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, PeerDatabase]]:
    with scram_postgres() as pg, mariadb_user() as maria:
        yield {"postgres": pg, "mariadb": maria}


@pytest.fixture(scope="module")
def bucket() -> Iterator[S3Peer]:
    with s3_server() as peer:
        yield peer


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose s3 outputs upload parts of 5 MiB (S3's minimum), so a test of a few MiB has several, and
    whose uploads stop at 10 MiB."""
    env = {"STRONGROOM_JOB_S3_PART_BYTES": str(5 * 1024 * 1024), "STRONGROOM_JOB_UPLOAD_MAX_BYTES": str(10 << 20)}
    with Server(data_dir=tmp_path_factory.mktemp("jobs") / "srv", extra_env=env) as server:
        yield server


@pytest.fixture(scope="module")
def totals(srv: Server) -> str:
    """A deployment registered with the CLI: tests.scoring:add_total."""
    result = srv.cli("deployments", "create", unique("totals"), "--entry-point", "tests.scoring:add_total", "--json")
    return str(json.loads(result.stdout)["id"])


@pytest.fixture
def token(srv: Server) -> str:
    token = srv.new_user("jobs")
    dr.Client(endpoint=srv.api, token=token)
    return token


@pytest.fixture
def api(srv: Server, token: str) -> Iterator[httpx.Client]:
    with client(srv, token) as c:
        yield c


def _csv(rows: int = ROWS) -> str:
    lines = ["id,item,price,quantity"] + [f'{i},"item, {i}",{i}.5,{i % 4}' for i in range(rows)]
    return "\n".join(lines) + "\n"


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _store(api: httpx.Client, peer: PeerDatabase) -> str:
    drivers = api.get("externalDataDrivers/").json()["data"]
    wanted = "postgres" if peer.scheme == "postgresql" else "mysql"
    driver = next(d["id"] for d in drivers if d["databaseDriver"] == wanted)
    body = {"type": "jdbc", "canonicalName": unique("store"), "params": {"driverId": driver, "jdbcUrl": peer.jdbc_url}}
    resp = api.post("externalDataStores/", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _basic(api: httpx.Client, user: str, password: str) -> str:
    resp = api.post("credentials/", json={"name": unique("db"), "user": user, "password": password})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["credentialId"])


def _execute(peer: PeerDatabase, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements on the peer as its user; the last one's rows."""
    found: list[tuple[Any, ...]] = []
    if peer.scheme == "postgresql":
        dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in statements:
                cur = conn.execute(statement)
                found = cur.fetchall() if cur.description else []
        return found
    conn = pymysql.connect(
        host=peer.host, port=peer.port, user=peer.user, password=peer.password, database=peer.database, autocommit=True
    )
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                found = list(cur.fetchall())
    finally:
        conn.close()
    return found


def _items(peer: PeerDatabase, table: str, rows: int = ROWS) -> None:
    values = ", ".join(f"({i}, 'item {i}', {i}.5)" for i in range(rows))
    _execute(
        peer,
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} (id integer PRIMARY KEY, item varchar(40), price float)",
        f"INSERT INTO {table} VALUES {values}",
    )


def test_local_file_passthrough_equals_input(token: str, tmp_path: Path) -> None:
    """localFile in -> passthrough -> localFile out, in several chunks two at a time: the output is the input."""
    out = tmp_path / "out.csv"
    job = dr.BatchPredictionJob.score(
        PASSTHROUGH,
        intake_settings={"type": "localFile", "file": io.BytesIO(_csv().encode())},
        output_settings={"type": "localFile", "path": str(out)},
        chunk_size=7,
        num_concurrent=2,
    )
    job.wait_for_completion()
    status = job.get_status()
    assert status["status"] == "COMPLETED" and status["percentage_completed"] == 100
    assert status["scored_rows"] == ROWS and status["job_spec"]["num_concurrent"] == 2
    assert _rows(out.read_text()) == _rows(_csv())


def test_a_registered_function_adds_its_columns(srv: Server, token: str, totals: str, tmp_path: Path) -> None:
    """A deployment registered with `strongroom deployments create` adds its column to every row."""
    assert totals in [d["id"] for d in httpx.get(f"{srv.api}/deployments/", headers=_auth(token)).json()["data"]]
    out = tmp_path / "out.csv"
    dr.BatchPredictionJob.score(
        totals,
        intake_settings={"type": "localFile", "file": io.BytesIO(_csv().encode())},
        output_settings={"type": "localFile", "path": str(out)},
        chunk_size=16,
    )
    rows = _rows(out.read_text())
    assert rows[0] == ["id", "item", "price", "quantity", "total"]
    expected = _rows(_csv())[1:]
    assert [r[:4] for r in rows[1:]] == expected
    assert [float(r[4]) for r in rows[1:]] == [float(r[2]) * int(r[3]) for r in expected]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_multipart_upload_is_one_intake(api: httpx.Client) -> None:
    """PUT …/part/{n}/ (each part with its header) then POST …/finalizeMultipart/: one intake, in part order."""
    created = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "chunkSize": 5})
    assert created.status_code == 202 and created.headers["location"].endswith("/")
    job = created.json()
    assert job["status"] == "INITIALIZING" and "csvUpload" in job["links"]
    upload = job["links"]["csvUpload"]
    lines = _csv(12).splitlines(keepends=True)
    for n, part in enumerate((lines[1:7], lines[7:])):
        resp = api.put(f"{upload}part/{n}/", content="".join([lines[0], *part]), headers={"Content-Type": "text/csv"})
        assert resp.status_code == 202, resp.text
    assert api.get(f"batchPredictions/{job['id']}/").json()["status"] == "INITIALIZING"
    assert api.post(f"{upload}finalizeMultipart/").status_code == 202
    assert wait_for_job(api, job["id"])["status"] == "COMPLETED"
    assert _rows(api.get(f"batchPredictions/{job['id']}/download/").text) == _rows(_csv(12))


@pytest.mark.parametrize("which", ["postgres", "mariadb"])
def test_jdbc_intake_to_local_file(
    api: httpx.Client, token: str, peers: dict[str, PeerDatabase], which: str, tmp_path: Path
) -> None:
    """A table read through a stored credential by id arrives whole in the localFile output; the credential's use
    is audited once."""
    peer = peers[which]
    _items(peer, "items")
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    out = tmp_path / "out.csv"
    job = dr.BatchPredictionJob.score(
        PASSTHROUGH,
        intake_settings={"type": "jdbc", "data_store_id": store, "table": "items", "credential_id": cred},
        output_settings={"type": "localFile", "path": str(out)},
        chunk_size=15,
        num_concurrent=2,
    )
    job.wait_for_completion()
    rows = _rows(out.read_text())
    assert rows[0] == ["id", "item", "price"]
    assert sorted(int(r[0]) for r in rows[1:]) == list(range(ROWS))
    uses = api.get("auditLog/", params={"action": "credential.use", "credentialId": cred}).json()["data"]
    assert len(uses) == 1 and uses[0]["detail"]["jobId"] == job.id


def _sleepers(api: httpx.Client, peer: PeerDatabase) -> list[str]:
    """Two jobs of `api`'s user on both of the runner's threads, their intake asleep in PostgreSQL for 60 s
    (abort them to free the threads); their ids."""
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    intake = {"type": "jdbc", "dataStoreId": store, "credentialId": cred, "query": "SELECT pg_sleep(60) AS s, 1 AS x"}
    slow = {"deploymentId": PASSTHROUGH, "intakeSettings": intake, "outputSettings": {"type": "localFile"}}
    jobs = [api.post("batchPredictions/", json=slow).json()["id"] for _ in range(2)]
    until(lambda: len(busy_backends(peer, "COPY%pg_sleep(60)%")) >= 2, 30, "both intakes reading")
    return jobs


def test_an_abort_ends_the_intake_statement(api: httpx.Client, peers: dict[str, PeerDatabase]) -> None:
    """Aborting the jobs on both of the runner's threads while their PostgreSQL intake still runs (pg_sleep)
    cancels it: they end ABORTED, a job queued behind them runs to its end, and no backend of the database is left
    running a statement or holding a transaction. Before, each job thread closed its connection while the
    abandoned COPY held psycopg's lock: both hung for good, and the next job stayed queued forever."""
    peer = peers["postgres"]
    _items(peer, "after_abort")
    jobs = _sleepers(api, peer)
    for job_id in jobs:
        assert api.delete(f"batchPredictions/{job_id}/").json()["status"] == "ABORTED"
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    table = {"type": "jdbc", "dataStoreId": store, "credentialId": cred, "table": "after_abort"}
    after = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": table}).json()["id"]
    ended = wait_for_job(api, after, timeout=45)  # a fraction of the aborted statements' 60 s
    assert ended["status"] == "COMPLETED", ended["statusDetails"]
    assert [wait_for_job(api, j)["status"] for j in jobs] == ["ABORTED", "ABORTED"]
    until(lambda: not busy_backends(peer), 30, "every backend idle")


def test_an_abort_ends_a_mariadb_intake_statement(api: httpx.Client, peers: dict[str, PeerDatabase]) -> None:
    """MySQL and MariaDB have no cancel request: aborting the jobs on both of the runner's threads while their
    MariaDB intake still runs (SLEEP) ends each statement with `KILL QUERY` from a second connection of the same
    user. The jobs end ABORTED, a job queued behind them runs to its end, and no statement of theirs is left running
    (the store's own PROCESSLIST, which shows a user their own connections)."""
    peer = peers["mariadb"]
    _items(peer, "after_kill")
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    intake = {"type": "jdbc", "dataStoreId": store, "credentialId": cred, "query": "SELECT SLEEP(60) AS s, 1 AS x"}
    slow = {"deploymentId": PASSTHROUGH, "intakeSettings": intake, "outputSettings": {"type": "localFile"}}
    jobs = [api.post("batchPredictions/", json=slow).json()["id"] for _ in range(2)]
    sleeping = (
        "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND INFO LIKE '%SLEEP(60)%' "
        "AND INFO NOT LIKE '%PROCESSLIST%'"
    )
    until(lambda: len(_execute(peer, sleeping)) >= 2, 30, "both intakes reading")
    for job_id in jobs:
        assert api.delete(f"batchPredictions/{job_id}/").json()["status"] == "ABORTED"
    table = {"type": "jdbc", "dataStoreId": store, "credentialId": cred, "table": "after_kill"}
    after = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": table}).json()["id"]
    ended = wait_for_job(api, after, timeout=45)  # a fraction of the aborted statements' 60 s
    assert ended["status"] == "COMPLETED", ended["statusDetails"]
    assert [wait_for_job(api, j)["status"] for j in jobs] == ["ABORTED", "ABORTED"]
    until(lambda: not _execute(peer, sleeping), 30, "no intake statement left")


@dataclass
class _Waiting:
    """A jdbc output job whose write waits on the lock `locker` holds on its new output table."""

    locker: psycopg.Connection[Any]
    job: dict[str, Any]
    table: str
    store: str
    credential: str


@contextmanager
def _output_waiting_on_a_lock(api: httpx.Client, peer: PeerDatabase, prefix: str) -> Iterator[_Waiting]:
    """A job inserting `ROWS` rows into a new table on `peer`, created and fed while another session holds an
    ACCESS EXCLUSIVE lock on that table, yielded once the job's write waits on it (the lock held until the caller
    rolls `locker` back, or leaves)."""
    table = unique(prefix).replace("-", "_")
    _execute(peer, f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} (id integer, item text, price float)")
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    output = {"type": "jdbc", "dataStoreId": store, "credentialId": cred, "table": table, "statementType": "insert"}
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn) as locker:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "outputSettings": output}).json()
        source = "id,item,price\n" + "".join(f"{i},item {i},{i}.5\n" for i in range(ROWS))
        assert api.put(job["links"]["csvUpload"], content=source.encode()).status_code == 202
        waiting = f"SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{table}%'"
        until(lambda: _execute(peer, waiting), 30, "the output's write waiting on the lock")
        yield _Waiting(locker, job, table, store, cred)


def test_an_abort_ends_the_output_write(api: httpx.Client, peers: dict[str, PeerDatabase]) -> None:
    """Aborting a job whose jdbc output waits on a lock another session holds on the output table cancels the
    write: while the lock is still held, the job ends ABORTED, its staging table is dropped and no backend of its
    connections is left running a statement or holding a transaction; the table never gets its rows. Before, the
    write waited for the lock (up to the hour's statement timeout) and only then noticed the abort."""
    peer = peers["postgres"]
    with _output_waiting_on_a_lock(api, peer, "locked") as held:
        job, locker = held.job, held.locker
        assert api.delete(f"batchPredictions/{job['id']}/").json()["status"] == "ABORTED"
        others = (
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() AND pid <> "
            f"pg_backend_pid() AND pid <> {locker.info.backend_pid} AND state IN ('active', 'idle in transaction')"
        )
        stage = f"SELECT to_regclass('sr_stage_{job['id']}') IS NULL"
        until(lambda: not _execute(peer, others) and _execute(peer, stage) == [(True,)], 30, "the write ended")
        assert wait_for_job(api, job["id"])["status"] == "ABORTED"
        assert locker.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND granted").fetchone()
        locker.rollback()  # the lock is released only now
    assert _execute(peer, f"SELECT count(*) FROM {held.table}") == [(0,)]


def test_a_store_pointed_elsewhere_mid_run_leaves_the_running_job_on_its_target(
    api: httpx.Client, peers: dict[str, PeerDatabase]
) -> None:
    """The server's runner logs a job's jdbc output in once per run. The store is pointed at another host while
    the job's write waits on a lock another session holds on the output table. The job still completes into the
    table it was created for, the new host sees no connection, and the credential was used once."""
    peer = peers["postgres"]
    with _output_waiting_on_a_lock(api, peer, "moved") as held, closing_listener() as elsewhere:
        params = api.get(f"externalDataStores/{held.store}/").json()["params"]
        moved = {**params, "jdbcUrl": f"jdbc:postgresql://127.0.0.1:{elsewhere.port}/{peer.database}"}
        assert api.patch(f"externalDataStores/{held.store}/", json={"params": moved}).status_code == 200
        held.locker.rollback()  # the write goes on now
        done = wait_for_job(api, held.job["id"])
        assert elsewhere.accepted == []
    assert done["status"] == "COMPLETED", done["statusDetails"]
    assert _execute(peer, f"SELECT count(*) FROM {held.table}") == [(ROWS,)]
    uses = api.get("auditLog/", params={"action": "credential.use", "credentialId": held.credential}).json()["data"]
    assert [u["detail"]["jobId"] for u in uses] == [held.job["id"]]


def test_sigterm_stops_a_server_whose_jobs_are_reading(tmp_path: Path, peers: dict[str, PeerDatabase]) -> None:
    """SIGTERM stops a server whose runner's threads wait on PostgreSQL intakes (pg_sleep): their statements are
    cancelled, the server exits, no backend is left busy, and the jobs stay RUNNING (resumed at the next start)
    rather than FAILED. Before, the server waited for the statements, and then hung closing their connections."""
    peer = peers["postgres"]
    server = Server(data_dir=tmp_path / "srv")
    server.start()
    try:
        with client(server, server.new_user("term")) as api:
            jobs = _sleepers(api, peer)
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert server.proc.wait(timeout=45) in (0, -signal.SIGTERM)  # type: ignore[union-attr] # uvicorn re-raises it
        until(lambda: not busy_backends(peer), 30, "every backend idle")
        from strongroom.bootstrap import Services
        from strongroom.config import Settings

        services = Services.open(Settings(data_dir=server.data_dir))
        try:
            assert [services.jobs.jobs.get(j)["status"] for j in jobs] == ["RUNNING", "RUNNING"]  # type: ignore[index]
        finally:
            services.close()
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("how", ["disabled", "revoked"])
def test_a_queued_job_does_not_run_for_an_owner_who_may_no_longer_act(
    srv: Server, api: httpx.Client, peers: dict[str, PeerDatabase], how: str
) -> None:
    """A job queued before its owner was disabled (or the token that created it revoked) FAILS when its turn
    comes, saying why, without opening its credential: the audit log holds a denied batchJob.run and no
    credential.use. Before, it ran as its owner, and the credential's use was audited as a success."""
    peer = peers["postgres"]
    _items(peer, "owner_gone")
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    intake = {"type": "jdbc", "dataStoreId": store, "credentialId": cred, "table": "owner_gone"}
    with client(srv, srv.new_user("sleeper")) as sleeper, client(srv, srv.new_user("admin", admin=True)) as admin:
        sleeping = _sleepers(sleeper, peer)
        job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": intake}).json()
        assert api.get(f"batchPredictions/{job['id']}/").json()["statusDetails"] == "Queued"
        if how == "disabled":
            owner = api.get(f"batchPredictions/{job['id']}/").json()["createdBy"]["username"]
            assert admin.patch(f"users/{owner}/", json={"disabled": True}).status_code == 200
        else:
            (key,) = api.get("account/apiKeys/").json()["data"]
            assert api.delete(f"account/apiKeys/{key['id']}/").status_code in (200, 204)
        for job_id in sleeping:
            assert sleeper.delete(f"batchPredictions/{job_id}/").status_code == 202
        # Neither its owner (disabled, or without a token) nor an administrator (no role) may read the job now:
        # its row is read from the store itself.
        with open_service(srv) as service:
            ended = lambda: (r := service.jobs.jobs.get(job["id"])) and r["status"] in ("FAILED", "COMPLETED") and r  # noqa: E731
            row = until(ended, 60, "the job's end")
        assert row["status"] == "FAILED" and "may no longer act" in row["status_details"], row
        audit = lambda action: admin.get("auditLog/", params={"action": action}).json()["data"]  # noqa: E731
        assert not [e for e in audit("credential.use") if (e.get("target") or {}).get("credentialId") == cred]
        denied = [e for e in audit("batchJob.run") if e["detail"]["jobId"] == job["id"]]
        assert [e["outcome"] for e in denied] == ["denied"]


FLAGS_CSV = 'id,label,flag\n1,plain,true\n2,"two\nlines, ""quoted""",false\n3,"",\n4,,true\n'


def _flags(peer: PeerDatabase, table: str) -> None:
    """A table with a boolean column (and a NULL one), a quoted newline, the empty string and NULL."""
    _execute(
        peer,
        f"DROP TABLE IF EXISTS {table}",
        f"CREATE TABLE {table} (id integer, label text, flag boolean)",
        f"INSERT INTO {table} VALUES (1, 'plain', true), (2, E'two\\nlines, \"quoted\"', false), (3, '', NULL), "
        "(4, NULL, true)",
    )


@pytest.mark.parametrize("deployment", ["passthrough", "slow"])
def test_postgres_booleans_are_true_and_false_in_the_csv(
    api: httpx.Client, token: str, srv: Server, peers: dict[str, PeerDatabase], deployment: str
) -> None:
    """A PostgreSQL table with booleans, a quoted newline, the empty string and NULL to a CSV output: the passthrough
    writes COPY's own CSV (cut at row boundaries, one row per chunk here), a registered function's output comes
    from Arrow; both write booleans as `true`/`false` (pyarrow's CSV writer's words), never `t`/`f`."""
    peer = peers["postgres"]
    _flags(peer, "flags")
    if deployment == "slow":
        srv.cli("deployments", "create", unique("slow"), "--entry-point", "tests.scoring:slow", check=False)
        deployment = next(d["id"] for d in api.get("deployments/").json()["data"] if d["entryPoint"].endswith("slow"))
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    spec = {
        "deploymentId": PASSTHROUGH if deployment == "passthrough" else deployment,
        "chunkSize": 1,
        "intakeSettings": {"type": "jdbc", "dataStoreId": store, "query": "SELECT * FROM flags ORDER BY id",
                           "credentialId": cred},
    }  # fmt: skip
    job = api.post("batchPredictions/", json=spec).json()
    assert wait_for_job(api, job["id"])["status"] == "COMPLETED"
    body = api.get(f"batchPredictions/{job['id']}/download/").text
    assert _rows(body) == _rows(FLAGS_CSV)
    if deployment == "passthrough":
        assert body == FLAGS_CSV  # byte for byte what COPY wrote: NULL unquoted, the empty string quoted


@pytest.mark.parametrize(("which", "statement"), [("postgres", "create_table"), ("mariadb", "insert")])
def test_local_file_to_jdbc_output(
    api: httpx.Client, token: str, peers: dict[str, PeerDatabase], which: str, statement: str
) -> None:
    """localFile in -> a database table out, through a staging table moved in one final transaction."""
    peer = peers[which]
    table = unique("out").replace("-", "_")
    if statement == "insert":
        _execute(peer, f"CREATE TABLE {table} (id integer, item varchar(40), price float, quantity integer)")
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    job = dr.BatchPredictionJob.score(
        PASSTHROUGH,
        intake_settings={"type": "localFile", "file": io.BytesIO(_csv().encode())},
        output_settings={
            "type": "jdbc",
            "data_store_id": store,
            "table": table,
            "statement_type": statement,
            "credential_id": cred,
        },
        chunk_size=9,
        num_concurrent=2,
    )
    assert wait_for_job(api, job.id)["status"] == "COMPLETED"
    job.wait_for_completion()
    found = _execute(peer, f"SELECT id, item, price, quantity FROM {table} ORDER BY id")
    expected = [(int(r[0]), r[1], float(r[2]), int(r[3])) for r in _rows(_csv())[1:]]
    assert [(int(a), b, float(c), int(d)) for a, b, c, d in found] == expected
    leftovers = _execute(peer, "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'sr_stage_%'")
    assert leftovers == []


def test_a_credential_the_caller_cannot_use_is_refused_before_the_job_exists(
    srv: Server, api: httpx.Client, peers: dict[str, PeerDatabase]
) -> None:
    """Another user's credential answers 404 as if unknown, and their data store too: no job is created, no row
    is read, nothing is opened."""
    peer = peers["postgres"]
    with client(srv, srv.new_user("other")) as other:
        their_store, their_cred = _store(other, peer), _basic(other, peer.user, peer.password)
    mine = _store(api, peer)
    for intake in (
        {"type": "jdbc", "dataStoreId": mine, "table": "orders", "credentialId": their_cred},
        {"type": "jdbc", "dataStoreId": their_store, "table": "orders"},
    ):
        resp = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": intake})
        assert_error(resp, 404)
    assert api.get("batchPredictions/").json()["totalCount"] == 0


def test_a_wrong_password_fails_the_job_naming_adapter_and_cause(
    srv: Server, api: httpx.Client, token: str, peers: dict[str, PeerDatabase]
) -> None:
    """The job fails with a message naming the adapter and the cause, never the password; the real client's
    `wait_for_completion` raises on its next poll (the status route answers 409 for a FAILED job), and the job
    is listed with `?status=FAILED`."""
    peer = peers["postgres"]
    wrong = "wrong-" + peer.password
    store, cred = _store(api, peer), _basic(api, peer.user, wrong)
    intake = {"type": "jdbc", "dataStoreId": store, "table": "orders", "credentialId": cred}
    created = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": intake})
    failed = wait_for_job(api, created.json()["id"])
    assert failed["status"] == "FAILED"
    assert failed["statusDetails"].startswith("jdbc intake: authentication failed"), failed["statusDetails"]
    _client_raises(failed, "jdbc intake: authentication failed", wrong)
    listed = api.get("batchPredictions/", params={"status": "FAILED"}).json()["data"]
    assert [j["id"] for j in listed] == [failed["id"]]
    assert wrong not in api.get("auditLog/").text
    assert wrong.encode() not in srv.log_path.read_bytes()


def _upload_fails(api: httpx.Client, data: bytes, output: dict[str, Any]) -> dict[str, Any]:
    """A localFile job of `data` into `output`, once it has failed."""
    created = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "outputSettings": output}).json()
    assert api.put(created["links"]["csvUpload"], content=data).status_code == 202
    failed = wait_for_job(api, created["id"])
    assert failed["status"] == "FAILED", failed
    return failed


def test_a_csv_that_cannot_be_a_table_fails_naming_the_mistake(
    srv: Server, api: httpx.Client, peers: dict[str, PeerDatabase]
) -> None:
    """Hostile uploads fail as the client's mistakes, naming what is wrong: a repeated or empty header field
    (which column), more columns than a PostgreSQL table or a job may have, a row that does not parse (its
    reason, never its text: the canary is in no statusDetails and not in the server's log), a missing intake
    table (named, not blamed on the connection); none is logged as an internal error."""
    peer = peers["postgres"]
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)

    def table() -> dict[str, Any]:
        name = unique("wide").replace("-", "_")
        return {
            "type": "jdbc",
            "dataStoreId": store,
            "credentialId": cred,
            "table": name,
            "statementType": "create_table",
        }

    def header(columns: int) -> bytes:
        return (",".join(f"c{i}" for i in range(columns)) + "\n" + ",".join("1" * columns) + "\n").encode()

    canary = unique("canary")
    cases = [
        (b"a,a,a\n1,2,3\n", table(), "jdbc output: column 2 of the intake has the name of column 1 ('a')"),
        (b",,\n1,2,3\n", table(), "jdbc output: column 1 of the intake has no name"),
        (header(2000), table(), "jdbc output: the intake has 2000 columns; a PostgreSQL table holds at most 1600"),
        (header(10_001), {"type": "localFile"}, "localFile intake: the CSV has 10001 columns; a job reads at most"),
        (f"a,b\n1,2,3,{canary}\n".encode(), {"type": "localFile"}, "localFile intake: the CSV cannot be read (CSV"),
        (f"a,b\n1,2,3,{canary}\n".encode(), table(), "localFile intake: the CSV cannot be read (CSV"),
    ]
    failed = [(_upload_fails(api, data, output), expected) for data, output, expected in cases]
    missing = unique("nope").replace("-", "_")
    intake = {"type": "jdbc", "dataStoreId": store, "table": missing, "credentialId": cred}
    created = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": intake})
    failed.append((wait_for_job(api, created.json()["id"]), f"jdbc intake: the table '{missing}' does not exist"))
    for job, expected in failed:
        assert job["statusDetails"].startswith(expected), (job["statusDetails"], expected)
        assert canary not in job["statusDetails"]
    log = srv.log_path.read_text()
    assert canary not in log
    assert not [job["id"] for job, _ in failed if f"job {job['id']} failed" in log]


def _client_raises(failed: dict[str, Any], reason: str, secret: str) -> None:
    """The real client's `wait_for_completion` on a FAILED job raises on its first poll, as its `get` does, with
    the reason and never the secret."""
    job = dr.BatchPredictionJob(failed)
    for attempt in (lambda: job.wait_for_completion(max_wait=30), lambda: dr.BatchPredictionJob.get(failed["id"])):
        with pytest.raises(dr.errors.ClientError) as raised:
            attempt()
        assert reason in str(raised.value) and secret not in str(raised.value)


def test_bad_specs_name_the_field(api: httpx.Client) -> None:
    """An unknown adapter names the type and the supported ones; missing and invalid fields are named."""
    resp = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": {"type": "ftp"}})
    body = assert_error(resp, 422, "intakeSettings.type")
    assert "'ftp'" in body["message"] and "localFile, s3, jdbc" in body["message"]
    cases = [
        ({}, 422, "deploymentId"),
        ({"deploymentId": "5e00000000000000000000ff"}, 404, "deploymentId"),
        ({"deploymentId": PASSTHROUGH, "numConcurrent": 0}, 422, "numConcurrent"),
        ({"deploymentId": PASSTHROUGH, "intakeSettings": {"type": "jdbc"}}, 422, "intakeSettings.dataStoreId"),
        (
            {"deploymentId": PASSTHROUGH, "outputSettings": {"type": "jdbc", "dataStoreId": "x", "table": "t"}},
            422,
            "outputSettings.statementType",
        ),
        ({"deploymentId": PASSTHROUGH, "csvSettings": {"delimiter": ";;"}}, 422, "csvSettings.delimiter"),
        ({"deploymentId": PASSTHROUGH, "csvSettings": {"encoding": "utf\u0000-8"}}, 422, "csvSettings.encoding"),
        ({"deploymentId": PASSTHROUGH, "csvSettings": {"encoding": "rot13"}}, 422, "csvSettings.encoding"),
        ({"deploymentId": PASSTHROUGH, "csvSettings": {"delimiter": '"'}}, 422, "csvSettings.quotechar"),
        ({"deploymentId": PASSTHROUGH, "intakeSettings": {"type": "\u2028" * 349_000}}, 422, "intakeSettings.type"),
        ({"deploymentId": "\u2028" * 349_000}, 404, "deploymentId"),
    ]
    for spec, status, field in cases:
        resp = api.post("batchPredictions/", json=spec)
        assert_error(resp, status, field)
        assert len(resp.content) < 1000, f"{field}: {len(resp.content)} bytes"


def test_a_utf16_upload_is_read_in_its_encoding(token: str, tmp_path: Path) -> None:
    """csvSettings.encoding utf-16 through the real client: the upload is read in it, the output is UTF-8."""
    out = tmp_path / "out.csv"
    dr.BatchPredictionJob.score(
        PASSTHROUGH,
        intake_settings={"type": "localFile", "file": io.BytesIO(_csv().replace("item", "ïtem").encode("utf-16"))},
        output_settings={"type": "localFile", "path": str(out)},
        csv_settings={"encoding": "utf-16"},
    )
    assert _rows(out.read_text(encoding="utf-8")) == _rows(_csv().replace("item", "ïtem"))


def test_abort(api: httpx.Client) -> None:
    """DELETE aborts a job that waits for its upload; the upload link is gone."""
    job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
    resp = api.delete(f"batchPredictions/{job['id']}/")
    assert resp.status_code == 202 and resp.json()["status"] == "ABORTED"
    assert "csvUpload" not in resp.json()["links"]
    assert_error(api.put(f"batchPredictions/{job['id']}/csvUpload/", content=b"a\n1\n"), 409)


def test_results_are_not_downloaded_before_they_exist(api: httpx.Client) -> None:
    """Before a job runs, and once it is aborted, download/ is a 409 saying why (never an empty CSV that looks
    like a result); the real client waits for the `download` link, which shows only when there are results."""
    job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
    url = f"batchPredictions/{job['id']}/download/"
    assert "waiting for its CSV upload" in assert_error(api.get(url), 409, "status")["message"]
    assert api.delete(f"batchPredictions/{job['id']}/").status_code == 202
    assert "ABORTED" in assert_error(api.get(url), 409, "status")["message"]


def test_cli_runs_and_watches_a_job(srv: Server, token: str, tmp_path: Path) -> None:
    """`strongroom jobs run` uploads, shows progress and writes the output; `jobs watch` follows a job to its end."""
    source = tmp_path / "in.csv"
    source.write_text(_csv())
    out = tmp_path / "out.csv"
    env = ("--token", token)
    done = srv.cli("jobs", "run", *env, "--intake", "localFile", "--csv", str(source), "--out", str(out), "--json")
    job = json.loads(done.stdout)
    assert job["status"] == "COMPLETED" and _rows(out.read_text()) == _rows(_csv())
    watched = srv.cli("jobs", "watch", job["id"], *env)
    assert "COMPLETED" in watched.stdout


def test_a_job_survives_a_server_restart(tmp_path: Path) -> None:
    """SIGKILL the server mid-job: at the next start the job resumes from its chunk state (chunks written before
    the kill are not run again) and its output equals its input."""
    server = Server(data_dir=tmp_path / "srv", extra_env={"STRONGROOM_JOB_CHUNK_ROWS": "2"})
    server.start()
    try:
        slow = server.cli("deployments", "create", "slow", "--entry-point", "tests.scoring:slow", "--json")
        deployment = json.loads(slow.stdout)["id"]
        token = server.new_user("restart")
        with client(server, token) as api:
            job = api.post("batchPredictions/", json={"deploymentId": deployment}).json()  # 2 rows per chunk
            assert api.put(job["links"]["csvUpload"], content=_csv(30).encode()).status_code == 202
            deadline = time.monotonic() + 30
            while api.get(f"batchPredictions/{job['id']}/").json()["scoredRows"] < 6:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        server.stop(signal.SIGKILL)
        server.start()
        with client(server, token) as api:
            ended = wait_for_job(api, job["id"])
            assert ended["status"] == "COMPLETED", ended["statusDetails"]
            assert _rows(api.get(f"batchPredictions/{job['id']}/download/").text) == _rows(_csv(30))
        from strongroom.bootstrap import Services
        from strongroom.config import Settings

        services = Services.open(Settings(data_dir=server.data_dir))
        try:
            chunks = services.jobs.jobs.chunks(job["id"])
        finally:
            services.close()
        assert [c["number"] for c in chunks] == list(range(15))
        assert chunks[0]["attempts"] == 1 and len({c["worker"] for c in chunks}) == 2
    finally:
        server.stop()


def _s3_credential(api: httpx.Client, peer: S3Peer, secret: str | None = None) -> str:
    body = {
        "name": unique("s3"),
        "credentialType": "s3",
        "awsAccessKeyId": peer.access_key_id,
        "awsSecretAccessKey": secret or peer.secret_access_key,
    }
    resp = api.post("credentials/", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["credentialId"])


def test_jdbc_to_s3_and_back(api: httpx.Client, token: str, peers: dict[str, PeerDatabase], bucket: S3Peer) -> None:
    """PostgreSQL table -> S3 CSV -> a new PostgreSQL table, with the real client and nothing but ids: the rows
    arrive unchanged both ways, and each run opens each credential once (audited)."""
    peer = peers["postgres"]
    _items(peer, "s3items")
    store, cred, keys = _store(api, peer), _basic(api, peer.user, peer.password), _s3_credential(api, bucket)
    key = f"{unique('out')}.csv"
    out = dr.BatchPredictionJob.score(
        PASSTHROUGH,
        intake_settings={"type": "jdbc", "data_store_id": store, "table": "s3items", "credential_id": cred},
        output_settings={
            "type": "s3",
            "url": f"{bucket.url}/{key}",
            "credential_id": keys,
            "endpoint_url": bucket.endpoint_url,
        },
        chunk_size=12,
        num_concurrent=2,
    )
    assert wait_for_job(api, out.id)["status"] == "COMPLETED"
    body = bucket.client().get_object(Bucket=bucket.bucket, Key=key)["Body"].read().decode()
    rows = _rows(body)
    assert rows[0] == ["id", "item", "price"]
    assert [int(r[0]) for r in rows[1:]] == list(range(ROWS))

    table = unique("back").replace("-", "_")
    back = dr.BatchPredictionJob.score(
        PASSTHROUGH,
        intake_settings={
            "type": "s3",
            "url": f"{bucket.url}/{key}",
            "credential_id": keys,
            "endpoint_url": bucket.endpoint_url,
        },
        output_settings={
            "type": "jdbc",
            "data_store_id": store,
            "table": table,
            "statement_type": "create_table",
            "credential_id": cred,
        },
        chunk_size=7,
    )
    assert wait_for_job(api, back.id)["status"] == "COMPLETED"
    assert _execute(peer, f"SELECT id, item, price FROM {table} ORDER BY id") == _execute(
        peer, "SELECT id, item, price FROM s3items ORDER BY id"
    )
    uses = api.get("auditLog/", params={"action": "credential.use", "credentialId": keys}).json()["data"]
    assert sorted(u["detail"]["side"] for u in uses) == ["intake", "output"]


def test_null_and_the_empty_string_survive_postgres_to_s3_and_back(
    api: httpx.Client, token: str, peers: dict[str, PeerDatabase], bucket: S3Peer
) -> None:
    """PostgreSQL -> S3 writes COPY's CSV (NULL unquoted, the empty string quoted); S3 -> PostgreSQL hands that CSV
    to COPY as it is, so a new table holds the same NULLs, empty strings, booleans and quoted newlines (parsed
    with pyarrow's defaults, the NULL text would come back as the empty string)."""
    peer = peers["postgres"]
    _flags(peer, "roundflags")
    store, cred, keys = _store(api, peer), _basic(api, peer.user, peer.password), _s3_credential(api, bucket)
    s3 = {"type": "s3", "url": f"{bucket.url}/{unique('flags')}.csv", "credential_id": keys,
          "endpoint_url": bucket.endpoint_url}  # fmt: skip
    out = dr.BatchPredictionJob.score(
        PASSTHROUGH,
        intake_settings={"type": "jdbc", "data_store_id": store, "table": "roundflags", "credential_id": cred},
        output_settings=s3,
    )
    assert wait_for_job(api, out.id)["status"] == "COMPLETED"
    table = unique("flagsback").replace("-", "_")
    back = dr.BatchPredictionJob.score(
        PASSTHROUGH,
        intake_settings=s3,
        output_settings={"type": "jdbc", "data_store_id": store, "table": table, "statement_type": "create_table",
                         "credential_id": cred},
        chunk_size=20,
    )  # fmt: skip
    assert wait_for_job(api, back.id)["status"] == "COMPLETED"
    assert wait_for_job(api, back.id)["scoredRows"] == 4
    assert _execute(peer, f"SELECT id, label, flag FROM {table} ORDER BY id") == _execute(
        peer, "SELECT id, label, flag FROM roundflags ORDER BY id"
    )
    assert _execute(peer, f"SELECT count(*) FROM {table} WHERE label IS NULL") == [(1,)]


def test_an_s3_output_of_several_parts_is_the_input(api: httpx.Client, bucket: S3Peer, tmp_path: Path) -> None:
    """A localFile intake of ~8 MiB to S3: chunks are cut into 5 MiB parts of one multipart upload, and the
    object is the input, row for row, in order."""
    keys = _s3_credential(api, bucket)
    key = f"{unique('big')}.csv"
    source = _csv(240_000)
    spec = {
        "deploymentId": PASSTHROUGH,
        "chunkSize": 450_000,  # bytes: about 20 000 of these rows
        "numConcurrent": 3,
        "outputSettings": {"type": "s3", "url": f"{bucket.url}/{key}", "credentialId": keys,
                           "endpointUrl": bucket.endpoint_url},
    }  # fmt: skip
    job = api.post("batchPredictions/", json=spec).json()
    assert api.put(job["links"]["csvUpload"], content=source.encode()).status_code == 202
    assert wait_for_job(api, job["id"])["status"] == "COMPLETED"
    head = bucket.client().head_object(Bucket=bucket.bucket, Key=key, PartNumber=1)
    assert head["PartsCount"] >= 2
    body = bucket.client().get_object(Bucket=bucket.bucket, Key=key)["Body"].read().decode()
    assert _rows(body) == _rows(source)


def test_percentage_advances_during_an_s3_intake(api: httpx.Client, srv: Server, bucket: S3Peer) -> None:
    """An s3 intake has no row count up front: percentageCompleted follows the rows parsed against the share of
    the object read, so it moves while the job runs instead of staying 0 until COMPLETED."""
    keys = _s3_credential(api, bucket)
    key = f"{unique('progress')}.csv"
    bucket.client().put_object(Bucket=bucket.bucket, Key=key, Body=_csv(20).encode())
    slow = json.loads(srv.cli("deployments", "create", unique("slow"), "--entry-point", "tests.scoring:slow",
                              "--json").stdout)["id"]  # fmt: skip
    spec = {
        "deploymentId": slow,
        "chunkSize": 1,  # one row per chunk, 0.2 s each
        "intakeSettings": {"type": "s3", "url": f"{bucket.url}/{key}", "credentialId": keys,
                           "endpointUrl": bucket.endpoint_url},
    }  # fmt: skip
    job = api.post("batchPredictions/", json=spec).json()
    seen: list[float] = []
    deadline = time.monotonic() + 60
    while (now := api.get(f"batchPredictions/{job['id']}/").json())["status"] != "COMPLETED":
        assert now["status"] in ("INITIALIZING", "RUNNING") and time.monotonic() < deadline, now
        if now["status"] == "RUNNING":
            seen.append(now["percentageCompleted"])
        time.sleep(0.05)
    assert any(0 < p < 100 for p in seen), seen
    assert seen == sorted(seen) and now["percentageCompleted"] == 100


def test_chunk_size_is_bytes(api: httpx.Client) -> None:
    """chunkSize is bytes, as in DataRobot: rows per chunk are chunkSize over the CSV size of a row (22 bytes
    here, every row the same); a strategy name takes this server's default rows; past 40 MiB is a 422."""
    source = "code,word\n" + "".join(f"r{i:06d},abcdefgh\n" for i in range(1000))
    job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "chunkSize": 2200}).json()
    assert job["jobSpec"]["chunkSize"] == 2200
    assert api.put(job["links"]["csvUpload"], content=source.encode()).status_code == 202
    done = wait_for_job(api, job["id"])
    assert done["statusDetails"] == "Completed: 1000 rows in 10 chunks", done
    assert _rows(api.get(f"batchPredictions/{job['id']}/download/").text) == _rows(source)
    named = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "chunkSize": "dynamic"}).json()
    assert named["jobSpec"]["chunkSize"] == "dynamic"
    assert_error(api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "chunkSize": (40 << 20) + 1}),
                 422, "chunkSize")  # fmt: skip


def test_a_wrong_secret_key_fails_the_s3_job(api: httpx.Client, token: str, bucket: S3Peer) -> None:
    """A wrong secret key fails the job naming the adapter and the cause, never the key."""
    wrong = "wrong-" + bucket.secret_access_key
    keys = _s3_credential(api, bucket, secret=wrong)
    intake = {"type": "s3", "url": f"{bucket.url}/in.csv", "credentialId": keys, "endpointUrl": bucket.endpoint_url}
    created = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "intakeSettings": intake})
    failed = wait_for_job(api, created.json()["id"])
    assert failed["status"] == "FAILED"
    assert failed["statusDetails"].startswith("s3 intake: signature mismatch"), failed["statusDetails"]
    _client_raises(failed, "s3 intake: signature mismatch", wrong)


def test_a_token_without_the_use_scope_is_refused(srv: Server) -> None:
    """Creating a job needs the `use` scope: a read-and-write token gets a 403 naming it, and no job exists."""
    from strongroom.bootstrap import Services
    from strongroom.config import Settings

    services = Services.open(Settings(data_dir=srv.data_dir))
    try:
        username = unique("noscope")
        services.accounts.create_user(username)
        token = services.accounts.create_token(username, scopes=("read", "write"))[1]
    finally:
        services.close()
    with client(srv, token) as api:
        assert_error(api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}), 403, "scope")
        assert api.get("batchPredictions/").json()["totalCount"] == 0


@pytest.mark.parametrize("statement", ["update", "insert_update"])
def test_update_and_insert_update(api: httpx.Client, peers: dict[str, PeerDatabase], statement: str) -> None:
    """update changes the rows whose whereColumns match; insert_update also adds the others, in one transaction."""
    peer = peers["postgres"]
    table = unique("upd").replace("-", "_")
    old = ", ".join(f"({i}, 'old')" for i in range(10))
    _execute(peer, f"CREATE TABLE {table} (id integer PRIMARY KEY, item text)", f"INSERT INTO {table} VALUES {old}")
    store, cred = _store(api, peer), _basic(api, peer.user, peer.password)
    output = {"type": "jdbc", "dataStoreId": store, "table": table, "statementType": statement,
              "whereColumns": ["id"], "updateColumns": ["item"], "credentialId": cred}  # fmt: skip
    job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "chunkSize": 3, "outputSettings": output})
    source = "id,item\n" + "".join(f"{i},new\n" for i in range(5, 15))
    assert api.put(job.json()["links"]["csvUpload"], content=source.encode()).status_code == 202
    assert wait_for_job(api, job.json()["id"])["status"] == "COMPLETED"
    found = _execute(peer, f"SELECT id, item FROM {table} ORDER BY id")
    expected = [(i, "old" if i < 5 else "new") for i in range(15 if statement == "insert_update" else 10)]
    assert found == expected


def test_an_upload_over_the_limit_is_refused(api: httpx.Client) -> None:
    """An upload past STRONGROOM_JOB_UPLOAD_MAX_BYTES is a 422 naming the limit (streamed: the server never holds
    it); nothing is kept, and the job still waits for its upload."""
    job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
    big = (b"a,b\n" + b"1,2\n" * (3 << 20))[: 11 << 20]
    body = assert_error(api.put(job["links"]["csvUpload"], content=big), 422, "csvUpload")
    assert str(10 << 20) in body["message"]
    again = api.get(f"batchPredictions/{job['id']}/").json()
    assert again["status"] == "INITIALIZING" and "csvUpload" in again["links"]
    assert api.put(job["links"]["csvUpload"], content=_csv().encode()).status_code == 202
    assert wait_for_job(api, job["id"])["status"] == "COMPLETED"


@pytest.fixture(scope="module")
def small_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose jobs take uploads of 1000 bytes at most."""
    with Server(
        data_dir=tmp_path_factory.mktemp("small") / "srv", extra_env={"STRONGROOM_JOB_UPLOAD_MAX_BYTES": "1000"}
    ) as server:
        yield server


def test_a_multipart_upload_is_limited_as_a_whole(small_srv: Server) -> None:
    """The upload limit is the job's: a part that would take the parts received so far past it is a 422 naming
    the part and the limit (a part sent again replaces its earlier copy), as a single PUT over it is. Before,
    every part had the whole limit to itself, up to 100 000 parts."""
    row = b"1," + b"x" * 97 + b"\n"  # 100 bytes
    part = b"a,b\n" + row * 5  # 504 bytes
    with client(small_srv, small_srv.new_user("limit")) as api:
        job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
        upload = job["links"]["csvUpload"]
        assert "1000 bytes" in assert_error(api.put(upload, content=part * 2 + row), 422, "csvUpload")["message"]
        assert api.put(f"{upload}part/0/", content=part).status_code == 202
        over = assert_error(api.put(f"{upload}part/1/", content=part), 422, "csvUpload")["message"]
        assert "part 1" in over and "1000 bytes" in over
        assert api.put(f"{upload}part/99999/", content=part[:304]).status_code == 202
        assert api.put(f"{upload}part/0/", content=part).status_code == 202  # replaces part 0: 808 bytes in all
        assert_error(api.put(f"{upload}part/5/", content=part[:304]), 422, "csvUpload")
        assert api.post(f"{upload}finalizeMultipart/").status_code == 202
        ended = wait_for_job(api, job["id"])
        assert ended["status"] == "COMPLETED" and ended["scoredRows"] == 8, ended


def test_ended_jobs_leave_no_spool(small_srv: Server) -> None:
    """A FAILED job's spool and an ABORTED one's (its upload half sent) are deleted; a COMPLETED job keeps only
    its localFile output, to download. Before, failed and aborted jobs kept their intake for good."""
    spool = small_srv.data_dir / "jobs"
    with client(small_srv, small_srv.new_user("spools")) as api:
        failed = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
        assert api.put(failed["links"]["csvUpload"], content=b"a,b\n1,2,3\n").status_code == 202
        assert wait_for_job(api, failed["id"])["status"] == "FAILED"
        aborted = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
        assert api.put(f"{aborted['links']['csvUpload']}part/0/", content=b"a,b\n1,2\n").status_code == 202
        assert api.delete(f"batchPredictions/{aborted['id']}/").status_code == 202
        done = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
        assert api.put(done["links"]["csvUpload"], content=b"a,b\n1,2\n").status_code == 202
        assert wait_for_job(api, done["id"])["status"] == "COMPLETED"
    until(lambda: not (spool / failed["id"]).exists(), 30, "the failed job's spool deleted")
    assert not (spool / aborted["id"]).exists()
    assert {p.name for p in (spool / done["id"]).iterdir()} == {"out"}


def test_an_upload_not_finished_in_time_fails_the_job(tmp_path: Path) -> None:
    """With STRONGROOM_JOB_UPLOAD_EXPIRY at 2 s, a job whose multipart upload is never finalized FAILS, saying
    why, what it received is deleted, and a later part is refused (409). Before, it waited for good."""
    with (
        Server(data_dir=tmp_path / "srv", extra_env={"STRONGROOM_JOB_UPLOAD_EXPIRY": "2"}) as server,
        client(server, server.new_user("late")) as api,
    ):
        job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
        upload = job["links"]["csvUpload"]
        assert api.put(f"{upload}part/0/", content=b"a,b\n1,2\n").status_code == 202
        ended = wait_for_job(api, job["id"])
        assert ended["status"] == "FAILED" and "not finished within 2 s" in ended["statusDetails"], ended
        assert not (server.data_dir / "jobs" / job["id"]).exists()
        assert_error(api.put(f"{upload}part/1/", content=b"a,b\n3,4\n"), 409)


def test_no_secret_is_stored_or_logged(srv: Server, peers: dict[str, PeerDatabase], bucket: S3Peer) -> None:
    """After every job of this module (named by stored credentials: database passwords, an S3 secret key, right
    and wrong), no secret is in the store's files (database, WAL), the jobs' spools or the server's log."""
    secrets = [p.password for p in peers.values()] + [bucket.secret_access_key]
    secrets += ["wrong-" + s for s in secrets]
    files = [p for p in srv.data_dir.rglob("*") if p.is_file() and p.name != "master.key"] + [srv.log_path]
    assert any(p.suffix == ".db" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret is in {path.relative_to(srv.data_dir.parent)}"


def test_a_job_never_follows_its_store_to_where_it_was_pointed_after_the_job_was_created(
    srv: Server, api: httpx.Client, token: str, peers: dict[str, PeerDatabase]
) -> None:
    """Another user owns a store and lets the job's creator use it; the creator's job writes to it with the
    creator's own credential. The owner renames the store and saves the same params: the job still runs. The
    owner then points the store at a host of theirs before the next job of the creator runs: that job fails,
    naming the store and saying it was changed after the job was created, without opening the credential or
    connecting to the new host (which sees no connection)."""
    peer = peers["postgres"]
    cred = _basic(api, peer.user, peer.password)
    made = api.get("auditLog/", params={"action": "credential.create", "credentialId": cred}).json()["data"]
    me = made[0]["actor"]["username"]
    with client(srv, srv.new_user("store-owner")) as owner, closing_listener() as theirs:
        store = _store(owner, peer)
        share = {"operation": "updateRoles", "roles": [{"username": me, "role": "CONSUMER"}]}
        assert owner.patch(f"externalDataStores/{store}/sharedRoles/", json=share).status_code == 204
        jobs = []
        for _ in range(2):
            table = unique("pinned").replace("-", "_")
            output = {"type": "jdbc", "dataStoreId": store, "table": table, "statementType": "create_table"}
            created = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "outputSettings": output | {
                "credentialId": cred}})  # fmt: skip
            assert created.status_code == 202, created.text
            assert "dataStoreTarget" not in created.json()["jobSpec"]["outputSettings"]
            jobs.append((created.json(), table))

        params = owner.get(f"externalDataStores/{store}/").json()["params"]
        renamed = {"canonicalName": unique("renamed"), "params": params}
        assert owner.patch(f"externalDataStores/{store}/", json=renamed).status_code == 200
        (kept, table), (pinned, _) = jobs
        assert api.put(kept["links"]["csvUpload"], content=_csv().encode()).status_code == 202
        assert wait_for_job(api, kept["id"])["status"] == "COMPLETED"
        assert len(_execute(peer, f"SELECT id FROM {table}")) == ROWS

        elsewhere = {**params, "jdbcUrl": f"jdbc:postgresql://127.0.0.1:{theirs.port}/{peer.database}"}
        assert owner.patch(f"externalDataStores/{store}/", json={"params": elsewhere}).status_code == 200
        assert api.put(pinned["links"]["csvUpload"], content=_csv().encode()).status_code == 202
        failed = wait_for_job(api, pinned["id"])
        assert theirs.accepted == []
    assert failed["status"] == "FAILED"
    assert failed["statusDetails"].startswith(
        f"jdbc output: data store '{renamed['canonicalName']}' ({store}) was changed to connect elsewhere after this "
        "job was created"
    ), failed["statusDetails"]
    uses = api.get("auditLog/", params={"action": "credential.use", "credentialId": cred}).json()["data"]
    assert [u["detail"]["jobId"] for u in uses] == [kept["id"]]


def test_an_administrator_without_a_role_never_reads_or_feeds_another_users_job(srv: Server, api: httpx.Client) -> None:
    """An administrator's token is no key to another user's job: its status, results, upload, parts, finalize
    and abort are each 404 byte for byte as an unknown id (the results are rows read, and an upload rows written,
    with the owner's credentials); the job is not in their list and takes no row from them."""
    done = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
    assert api.put(f"batchPredictions/{done['id']}/csvUpload/", content=_csv(3)).status_code == 202
    assert wait_for_job(api, done["id"])["status"] == "COMPLETED"
    waiting = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()
    unknown = "0" * 24
    with client(srv, srv.new_user("jobsadmin", admin=True)) as admin:
        for job in (done["id"], waiting["id"]):
            asked = {
                "status": lambda j: admin.get(f"batchPredictions/{j}/"),
                "download": lambda j: admin.get(f"batchPredictions/{j}/download/"),
                "upload": lambda j: admin.put(f"batchPredictions/{j}/csvUpload/", content=b"who,what\nroot,here\n"),
                "part": lambda j: admin.put(f"batchPredictions/{j}/csvUpload/part/0/", content=b"who\nroot\n"),
                "finalize": lambda j: admin.post(f"batchPredictions/{j}/csvUpload/finalizeMultipart/"),
            }
            for name, ask in asked.items():
                resp, control = ask(job), ask(unknown)
                assert resp.status_code == 404, (name, resp.text)
                assert resp.content == control.content, name
        assert admin.delete(f"batchPredictions/{waiting['id']}/").status_code == 404
        assert all(j["id"] not in (done["id"], waiting["id"]) for j in admin.get("batchPredictions/").json()["data"])
    still = api.get(f"batchPredictions/{waiting['id']}/").json()
    assert still["status"] == "INITIALIZING" and "csvUpload" in still["links"]
    assert _rows(api.get(f"batchPredictions/{done['id']}/download/").text) == _rows(_csv(3))


def test_the_owners_download_and_each_upload_are_audited(srv: Server, api: httpx.Client) -> None:
    """Each upload (a whole one, each part, the finalize) and each download of results leaves an audit record
    naming the job and the caller, never a row; an administrator's refused upload is audited as failed."""
    single = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()["id"]
    assert api.put(f"batchPredictions/{single}/csvUpload/", content=_csv(3)).status_code == 202
    parts = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH}).json()["id"]
    lines = _csv(4).splitlines(keepends=True)
    for n, rows in enumerate((lines[1:3], lines[3:])):
        assert (
            api.put(f"batchPredictions/{parts}/csvUpload/part/{n}/", content="".join([lines[0], *rows])).status_code
            == 202
        )
    assert api.post(f"batchPredictions/{parts}/csvUpload/finalizeMultipart/").status_code == 202
    for job in (single, parts):
        assert wait_for_job(api, job)["status"] == "COMPLETED"
        assert api.get(f"batchPredictions/{job}/download/").status_code == 200
    admin_token = srv.new_user("auditadmin", admin=True)
    with client(srv, admin_token) as admin:
        assert admin.put(f"batchPredictions/{single}/csvUpload/", content=b"x\n1\n").status_code == 404
        log = admin.get("auditLog/", params={"since": "1h", "limit": 1000})
    records = [r for r in log.json()["data"] if r["action"] in ("batchJob.upload", "batchJob.download")]
    ours = [r for r in records if r["detail"].get("jobId") in (single, parts)]
    assert len({r["actor"]["userId"] for r in ours}) == 1
    mine = [(r["action"], r["outcome"], r["detail"]) for r in ours]
    size = len(_csv(3).encode())
    assert ("batchJob.upload", "success", {"jobId": single, "bytes": size}) in mine
    for n in (0, 1):
        assert any(a == "batchJob.upload" and d.get("jobId") == parts and d.get("part") == n for a, _, d in mine)
    assert ("batchJob.upload", "success", {"jobId": parts, "finalized": True, "parts": 2}) in mine
    for job in (single, parts):
        assert ("batchJob.download", "success", {"jobId": job, "status": "COMPLETED"}) in mine
    refused = [r for r in records if r not in ours and r["outcome"] == "failed"]
    assert any(r["action"] == "batchJob.upload" and r["status"] == 404 for r in refused)
    assert "item, 1" not in log.text and "item, 2" not in log.text
