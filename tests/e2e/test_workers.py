"""Batch jobs on PostgreSQL run by `strongroom worker` processes through the procrastinate queue (issue 16): a
worker SIGKILLed mid-job leaves the job to the others, with every intake row in the output exactly once, and a
job whose workers all vanished is FAILED, saying why, instead of staying RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from tests.support import (
    PeerDatabase,
    Server,
    backend_database,
    busy_backends,
    client,
    s3_server,
    scram_postgres,
    start_worker,
    unique,
    until,
)

pytestmark = pytest.mark.postgres
ROWS = 30
PASSTHROUGH = "5e0000000000000000000001"


@pytest.fixture(scope="module")
def peer() -> Iterator[PeerDatabase]:
    with scram_postgres() as pg:
        yield pg


@contextmanager
def _queue_server(tmp_path_factory: pytest.TempPathFactory, orphan_after: float) -> Iterator[Server]:
    """A server on PostgreSQL (jobs go to the queue) with quick heartbeats and stall timeout, and workers (given the
    server's settings) that look for tasks run again every half second."""
    env = {
        "STRONGROOM_WORKER_HEARTBEAT": "0.5",
        "STRONGROOM_WORKER_STALLED_AFTER": "2",
        "STRONGROOM_WORKER_POLL_INTERVAL": "0.5",
        "STRONGROOM_JOB_ORPHAN_AFTER": str(orphan_after),
        "STRONGROOM_JOB_CHUNK_ROWS": "2",  # a job without chunkSize
    }
    with (
        backend_database("postgres") as url,
        Server(data_dir=tmp_path_factory.mktemp("workers") / "srv", database_url=url, extra_env=env) as server,
    ):
        server.cli("deployments", "create", "slow", "--entry-point", "tests.scoring:slow")
        yield server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A queue server whose jobs FAIL after 4 s without a live worker."""
    with _queue_server(tmp_path_factory, orphan_after=4) as server:
        yield server


@pytest.fixture(scope="module")
def patient_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A queue server that waits 12 s for a worker: a test may stop its only worker and start another, however
    long the new one takes to start on a loaded machine (4 s was not always enough; 1.5 to 2.5 s unloaded)."""
    with _queue_server(tmp_path_factory, orphan_after=12) as server:
        yield server


@pytest.fixture
def workers(srv: Server) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=15)


def _csv(rows: int = ROWS) -> str:
    return "id,item,price,quantity\n" + "".join(f"{i},item {i},{i}.5,{i % 4}\n" for i in range(rows))


def _chunks(srv: Server, job_id: str) -> list[dict[str, Any]]:
    services = Services.open(Settings(data_dir=srv.data_dir, database_url=srv.database_url))
    try:
        return services.jobs.jobs.chunks(job_id)
    finally:
        services.close()


def _job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    resp = api.get(f"batchPredictions/{job_id}/")
    return dict(resp.json()["job"] if resp.status_code == 409 else resp.json())


def _jdbc_login(api: httpx.Client, peer: PeerDatabase) -> tuple[str, str]:
    """(data store id, credential id) of a new PostgreSQL store at `peer` and a basic credential for it."""
    drivers = api.get("externalDataDrivers/").json()["data"]
    driver = next(d["id"] for d in drivers if d["databaseDriver"] == "postgres")
    params = {"driverId": driver, "jdbcUrl": peer.jdbc_url}
    store = api.post("externalDataStores/", json={"type": "jdbc", "canonicalName": unique("s"), "params": params})
    cred = api.post("credentials/", json={"name": unique("c"), "user": peer.user, "password": peer.password})
    return str(store.json()["id"]), str(cred.json()["credentialId"])


def _output_job(api: httpx.Client, peer: PeerDatabase, table: str) -> dict[str, Any]:
    """A slow localFile -> PostgreSQL job (15 chunks of 2 rows, 2 at once) with its intake uploaded."""
    store, cred = _jdbc_login(api, peer)
    spec = {
        "deploymentId": "slow",
        "numConcurrent": 2,
        "outputSettings": {"type": "jdbc", "dataStoreId": store, "table": table, "statementType": "create_table",
                           "credentialId": cred},
    }  # fmt: skip
    created = api.post("batchPredictions/", json=spec)
    assert created.status_code == 202, created.text
    job = created.json()
    assert api.put(job["links"]["csvUpload"], content=_csv().encode()).status_code == 202
    return dict(job)


def test_a_killed_worker_leaves_the_job_to_the_others(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """SIGKILL one of two workers mid-job: its chunk runs again on the other, the job completes, and the output
    table holds every intake row exactly once."""
    workers += [start_worker(srv, "a"), start_worker(srv, "b")]
    table = unique("out").replace("-", "_")
    with client(srv, srv.new_user("w")) as api:
        job = _output_job(api, peer, table)
        until(lambda: len({c["worker"] for c in _chunks(srv, job["id"])}) == 2, 60, "both workers running chunks")
        until(lambda: _job(api, job["id"])["scoredRows"] >= 10, 60, "10 rows scored")
        workers[0].send_signal(signal.SIGKILL)
        ended = until(lambda: (j := _job(api, job["id"]))["status"] != "RUNNING" and j, 90, "the job's end")
        assert ended["status"] == "COMPLETED", ended["statusDetails"]
        assert ended["scoredRows"] == ROWS
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn) as conn:
        found = conn.execute(f"SELECT id, item FROM {table} ORDER BY id").fetchall()
    assert found == [(i, f"item {i}") for i in range(ROWS)]
    chunks = _chunks(srv, job["id"])
    assert [c["number"] for c in chunks] == list(range(ROWS // 2)) and all(c["status"] == "DONE" for c in chunks)


def test_a_job_whose_workers_all_vanished_fails(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """With its only worker SIGKILLed, the job is FAILED (saying no worker runs it), not RUNNING forever."""
    workers.append(start_worker(srv, "only"))
    with client(srv, srv.new_user("w")) as api:
        job = _output_job(api, peer, unique("gone").replace("-", "_"))
        until(lambda: _job(api, job["id"])["scoredRows"] >= 4, 60, "4 rows scored")
        workers[0].send_signal(signal.SIGKILL)
        ended = until(lambda: (j := _job(api, job["id"]))["status"] != "RUNNING" and j, 60, "the job's end")
    assert ended["status"] == "FAILED" and "no strongroom worker" in ended["statusDetails"]


def test_a_job_left_without_tasks_fails_while_workers_live(
    patient_srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """A job whose tasks all ended without finishing it (as when a worker loses the database mid-step) is FAILED
    once idle (12 s here), even with a live worker beside it, not RUNNING forever. (On the patient server: the
    second worker may take longer to start than the other server's 4 s without a worker, a failure that reads
    otherwise.)"""
    srv = patient_srv
    workers.append(start_worker(srv, "first"))
    with client(srv, srv.new_user("w")) as api:
        job = _output_job(api, peer, unique("lost").replace("-", "_"))
        until(lambda: _job(api, job["id"])["scoredRows"] >= 4, 60, "4 rows scored")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=15)
        with psycopg.connect(srv.database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            conn.execute(  # the tasks end as a worker that lost its database leaves them: failed, not retried
                "UPDATE procrastinate_jobs SET status = 'failed' WHERE args->>'job_id' = %s AND status IN "
                "('todo', 'doing')",
                (job["id"],),
            )
        workers.append(start_worker(srv, "alive"))
        ended = until(lambda: (j := _job(api, job["id"]))["status"] != "RUNNING" and j, 60, "the job's end")
    assert ended["status"] == "FAILED" and "no task on the queue" in ended["statusDetails"], ended


@pytest.mark.parametrize("concurrency", [2, min(32, (os.cpu_count() or 1) + 4)], ids=["two-slots", "more-than-threads"])
def test_one_worker_runs_as_many_jobs_at_once_as_it_has_slots(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]], concurrency: int
) -> None:
    """As many jobs started together as a worker has slots all complete, every row once: their producers, which
    wait for their own chunks, take neither the slots nor the threads the chunks need. They did: with two slots,
    two producers held both and neither job moved; a worker with more slots than its event loop's default threads
    (cores + 4) could have every thread held by a waiting producer."""
    workers.append(start_worker(srv, f"slots-{concurrency}", "--concurrency", str(concurrency)))
    tables = [unique("both").replace("-", "_") for _ in range(concurrency)]
    with client(srv, srv.new_user("w")) as api:
        jobs = [_output_job(api, peer, table) for table in tables]
        for job in jobs:
            done = lambda job=job: (j := _job(api, job["id"]))["status"] in ("COMPLETED", "FAILED", "ABORTED") and j  # noqa: E731
            ended = until(done, 60, "a job's end")
            assert ended["status"] == "COMPLETED", ended["statusDetails"]
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn) as conn:
        for table in tables:
            assert conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall() == [(i,) for i in range(ROWS)]


def test_worker_refuses_sqlite(tmp_path: Path) -> None:
    """On SQLite the server runs jobs itself; a worker says so."""
    with Server(data_dir=tmp_path / "srv") as server:
        result = server.cli("worker", check=False)
    assert result.returncode == 1 and "PostgreSQL" in result.stderr


def test_sigterm_gives_the_job_back(
    patient_srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """SIGTERM stops a worker soon (its running chunks finished, its producer given back to the queue); a worker
    started later completes the job with every row exactly once."""
    srv = patient_srv
    workers.append(start_worker(srv, "first"))
    table = unique("term").replace("-", "_")
    with client(srv, srv.new_user("w")) as api:
        job = _output_job(api, peer, table)
        until(lambda: _job(api, job["id"])["scoredRows"] >= 4, 60, "4 rows scored")
        workers[0].send_signal(signal.SIGTERM)
        assert workers[0].wait(timeout=30) == 0
        assert _job(api, job["id"])["status"] == "RUNNING"
        workers.append(start_worker(srv, "second"))
        ended = until(lambda: (j := _job(api, job["id"]))["status"] != "RUNNING" and j, 90, "the job's end")
        assert ended["status"] == "COMPLETED", ended["statusDetails"]
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn) as conn:
        assert conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall() == [(i,) for i in range(ROWS)]


def test_an_aborted_job_leaves_nothing_in_the_target(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """DELETE batchPredictions/{id}/ mid-job: ABORTED at once; the workers stop its chunks and drop its staging
    table, and the target table is never created."""
    workers.append(start_worker(srv, "abort"))
    table = unique("aborted").replace("-", "_")
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"

    def tables() -> set[str]:
        with psycopg.connect(dsn) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        return {r[0] for r in rows}

    with client(srv, srv.new_user("w")) as api:
        job = _output_job(api, peer, table)
        staged = lambda: {t for t in tables() if t.startswith(f"sr_stage_{job['id']}")}  # noqa: E731 - one per run
        until(staged, 60, "the staging table")
        resp = api.delete(f"batchPredictions/{job['id']}/")
        assert resp.status_code == 202 and resp.json()["status"] == "ABORTED"
        until(lambda: not staged(), 30, "the staging tables dropped")
        assert _job(api, job["id"])["status"] == "ABORTED" and table not in tables()


def test_a_postgres_table_passes_through_the_workers_as_csv(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """PostgreSQL table -> passthrough -> localFile on two workers: the producer spools COPY's CSV as it came, the
    chunk tasks write it under its number, and the download is every row once, the header once, booleans
    `true`/`false`."""
    workers += [start_worker(srv, "csv-a"), start_worker(srv, "csv-b")]
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS rows_out")
        conn.execute("CREATE TABLE rows_out (id integer, note text, flag boolean)")
        conn.execute(
            "INSERT INTO rows_out SELECT i, CASE WHEN i %% 7 = 0 THEN E'multi\\nline, \"q\"' ELSE 'n' || i END, "
            "i %% 2 = 0 FROM generate_series(0, %s) AS i",
            (ROWS - 1,),
        )
    with client(srv, srv.new_user("w")) as api:
        store, cred = _jdbc_login(api, peer)
        intake = {"type": "jdbc", "dataStoreId": store, "query": "SELECT * FROM rows_out ORDER BY id"}
        intake["credentialId"] = cred
        spec = {
            "deploymentId": "5e0000000000000000000001",
            "chunkSize": 1,
            "numConcurrent": 3,
            "intakeSettings": intake,
        }
        job = api.post("batchPredictions/", json=spec).json()
        ended = until(lambda: (j := _job(api, job["id"]))["status"] != "RUNNING" and j["status"] != "INITIALIZING"
                       and j, 90, "the job's end")  # fmt: skip
        assert ended["status"] == "COMPLETED", ended["statusDetails"]
        body = api.get(f"batchPredictions/{job['id']}/download/").text
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        expected = bytearray()
        with cur.copy("COPY (SELECT id, note, CASE WHEN flag THEN 'true' ELSE 'false' END AS flag FROM rows_out "
                      "ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true)") as copy:  # fmt: skip
            for piece in copy:
                expected += piece
    assert body == expected.decode()
    assert len(_chunks(srv, job["id"])) == ROWS


def test_an_s3_intake_is_parsed_by_the_chunk_tasks(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """S3 -> PostgreSQL on two workers with chunkSize in bytes: the producer cuts the object into slices of whole
    rows (quoted newlines and doubled quotes inside), each chunk task parses its own with the types of the first
    block, and the table holds every row once, as written."""
    workers += [start_worker(srv, "split-a"), start_worker(srv, "split-b")]
    rows = [(i, f'line {i}\nwith "quotes", and commas' if i % 5 == 0 else f"n{i}", i * 0.5) for i in range(ROWS)]
    body = "id,note,amount\n" + "".join(f'{i},"{n.replace(chr(34), chr(34) * 2)}",{a}\n' for i, n, a in rows)
    table = unique("split").replace("-", "_")
    with s3_server() as bucket, client(srv, srv.new_user("w")) as api:
        bucket.client().put_object(Bucket=bucket.bucket, Key="in.csv", Body=body.encode())
        store, cred = _jdbc_login(api, peer)
        keys = api.post("credentials/", json={"name": unique("k"), "credentialType": "s3",
                                              "awsAccessKeyId": bucket.access_key_id,
                                              "awsSecretAccessKey": bucket.secret_access_key})  # fmt: skip
        spec = {
            "deploymentId": "5e0000000000000000000001",
            "chunkSize": 100,  # bytes: a few rows per slice
            "numConcurrent": 3,
            "intakeSettings": {"type": "s3", "url": f"{bucket.url}/in.csv", "credentialId": keys.json()["credentialId"],
                               "endpointUrl": bucket.endpoint_url},
            "outputSettings": {"type": "jdbc", "dataStoreId": store, "table": table,
                               "statementType": "create_table", "credentialId": cred},
        }  # fmt: skip
        job = api.post("batchPredictions/", json=spec).json()
        ended = until(lambda: (j := _job(api, job["id"]))["status"] not in ("INITIALIZING", "RUNNING") and j, 90,
                       "the job's end")  # fmt: skip
        assert ended["status"] == "COMPLETED", ended["statusDetails"]
    assert len(_chunks(srv, job["id"])) > 3
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn) as conn:
        found = conn.execute(f"SELECT id, note, amount FROM {table} ORDER BY id").fetchall()
    assert found == rows


def test_a_worker_keeps_a_jobs_output_from_chunk_to_chunk(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """One worker writing a job's 15 chunks opens the output's credential once (one audited use, beside the
    producer's and the finish step's) and reuses its connections from chunk to chunk instead of logging in to
    the store for each; once the job is done it keeps none open."""
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"

    def sessions() -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
        assert row is not None
        return int(row[0])

    def open_connections() -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'strongroom' "
                "AND pid <> pg_backend_pid()"
            ).fetchone()
        assert row is not None
        return int(row[0])

    workers.append(start_worker(srv, "keeps"))
    table = unique("kept").replace("-", "_")
    before = sessions()
    with client(srv, srv.new_user("w")) as api:
        job = _output_job(api, peer, table)
        done = lambda: (j := _job(api, job["id"]))["status"] in ("COMPLETED", "FAILED", "ABORTED") and j  # noqa: E731
        ended = until(done, 60, "the job's end")
        assert ended["status"] == "COMPLETED", ended["statusDetails"]
        cred = job["jobSpec"]["outputSettings"]["credentialId"]
        uses = api.get("auditLog/", params={"action": "credential.use", "credentialId": cred}).json()["data"]
    assert len(uses) == 3, uses  # the producer's (it clears earlier runs' tables), the chunks', the finish step's
    until(lambda: open_connections() == 0, 10, "the worker's connections to the store closed")
    opened = sessions() - before - 3  # this test's own three sessions
    assert len(_chunks(srv, job["id"])) == ROWS // 2 and opened < ROWS // 2, opened


def test_an_abort_and_sigterm_end_a_producers_statement(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """A one-slot worker's producer waiting on its PostgreSQL intake (pg_sleep) stops when its job is aborted: the
    statement is cancelled and the next job runs to its end in the freed slot. On SIGTERM the worker exits though
    a producer is reading, giving its job back. No backend is left running or holding a transaction. Before,
    the producer waited for the statement, and then hung closing its connection, holding the slot for good."""
    workers.append(start_worker(srv, "reader", "--concurrency", "1"))
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS quick_in")
        conn.execute("CREATE TABLE quick_in AS SELECT i AS id FROM generate_series(1, 5) AS i")
    with client(srv, srv.new_user("w")) as api:
        store, cred = _jdbc_login(api, peer)
        login = {"type": "jdbc", "dataStoreId": store, "credentialId": cred}
        sleeping = {"intakeSettings": {**login, "query": "SELECT pg_sleep(60) AS s"}, "deploymentId": PASSTHROUGH}
        reading = lambda: busy_backends(peer, "COPY%pg_sleep(60)%")  # noqa: E731

        first = api.post("batchPredictions/", json=sleeping).json()
        until(reading, 60, "the first job's intake reading")
        assert api.delete(f"batchPredictions/{first['id']}/").json()["status"] == "ABORTED"
        quick = api.post("batchPredictions/", json={**sleeping, "intakeSettings": {**login, "table": "quick_in"}})
        done = lambda: (j := _job(api, quick.json()["id"]))["status"] not in ("INITIALIZING", "RUNNING") and j  # noqa: E731
        ended = until(done, 45, "the next job's end")  # a fraction of the aborted statement's 60 s
        assert ended["status"] == "COMPLETED", ended["statusDetails"]
        until(lambda: not busy_backends(peer), 30, "every backend idle")

        last = api.post("batchPredictions/", json=sleeping).json()
        until(reading, 60, "the last job's intake reading")
        workers[0].send_signal(signal.SIGTERM)
        assert workers[0].wait(timeout=45) == 0
        assert _job(api, last["id"])["status"] == "RUNNING"  # given back, for another worker
        until(lambda: not busy_backends(peer), 30, "every backend idle")
        api.delete(f"batchPredictions/{last['id']}/")


def test_an_abort_ends_a_workers_output_write(
    srv: Server, peer: PeerDatabase, workers: list[subprocess.Popen[bytes]]
) -> None:
    """A worker's jdbc output write waiting on a lock another session holds on the output table (the finish, moving
    the staged rows in) is cancelled when its job is aborted: while the lock is still held, no backend of the job's
    connections is left running a statement or holding a transaction and its staging tables are gone; the table
    never gets its rows. Before, the cancelled finish left its staging tables behind: the job was ABORTED already,
    so failing it changed nothing, and nothing discarded its output."""
    workers.append(start_worker(srv, "writer"))
    table = unique("locked").replace("-", "_")
    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id integer, item text, price float, quantity integer)")
    with client(srv, srv.new_user("w")) as api, psycopg.connect(dsn) as locker:
        store, cred = _jdbc_login(api, peer)
        output = {"type": "jdbc", "dataStoreId": store, "credentialId": cred, "table": table, "statementType": "insert"}
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        holder = locker.info.backend_pid
        job = api.post("batchPredictions/", json={"deploymentId": PASSTHROUGH, "outputSettings": output}).json()
        assert api.put(job["links"]["csvUpload"], content=_csv().encode()).status_code == 202

        def others(query: str) -> list[tuple[Any, ...]]:
            with psycopg.connect(dsn, autocommit=True) as conn:
                return conn.execute(query).fetchall()

        waiting = f"SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{table}%'"
        until(lambda: others(waiting), 60, "the output's write waiting on the lock")
        assert api.delete(f"batchPredictions/{job['id']}/").json()["status"] == "ABORTED"
        busy = (
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() AND pid <> "
            f"pg_backend_pid() AND pid <> {holder} AND state IN ('active', 'idle in transaction')"
        )
        staged = f"SELECT tablename FROM pg_tables WHERE tablename LIKE 'sr_stage_{job['id']}%'"
        until(lambda: not others(busy) and not others(staged), 30, "the write ended, its staging table dropped")
        assert _job(api, job["id"])["status"] == "ABORTED"
        locker.rollback()  # the lock is released only now
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
