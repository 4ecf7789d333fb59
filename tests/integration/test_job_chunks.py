"""Chunk bookkeeping of queued jobs on a real store: a chunk task run again after its chunk is DONE does nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.services.audit import Event
from strongroom.store.models import new_id, utcnow
from tests.support import backend_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    with backend_database(request.param, migrated=True) as url:
        opened = Services.open(Settings(data_dir=tmp_path, database_url=url))
        try:
            yield opened
        finally:
            opened.close()


def _running_job(services: Services, owner: str) -> tuple[str, int]:
    """A RUNNING job of a new user `owner`, in its first generation of a queued run: its id and generation."""
    user = services.accounts.create_user(owner)
    jobs = services.jobs.jobs
    job_id = new_id()
    now = utcnow()
    row = {"id": job_id, "owner_id": user.id, "token_id": "t", "deployment_id": "d", "status": "RUNNING"}
    row |= {"spec": "{}", "status_details": "", "intake_ready": True, "expected_rows": None, "total_chunks": None}
    row |= {"scored_rows": 0, "failed_rows": 0, "generation": 0, "created_at": now, "started_at": now}
    jobs.insert(row | {"finished_at": None}, Event("job.create", 202).entry())
    return job_id, jobs.next_generation(job_id)


def test_a_task_of_a_chunk_already_done_does_not_start_it_again(services: Services) -> None:
    """procrastinate runs a vanished worker's task again; when that worker had finished its chunk, the second
    run must not mark it RUNNING (the job's finish waits for every chunk DONE, and its rows are written once).
    A chunk not yet DONE is taken over as before (the attempt counts up)."""
    jobs = services.jobs.jobs
    job_id, generation = _running_job(services, "runner")
    now = utcnow()
    lease = now + timedelta(minutes=1)
    for number in (0, 1):
        jobs.chunk_queued(job_id, number, now)
    assert jobs.chunk_started(job_id, 0, "a", now, lease, generation) == 1
    assert jobs.chunk_done(job_id, 0, 2, now, generation)
    assert jobs.chunk_started(job_id, 1, "a", now, lease, generation) == 1
    assert jobs.chunk_started(job_id, 0, "b", now, lease, generation) == 0  # DONE: the task does nothing
    assert jobs.chunk_started(job_id, 1, "b", now, lease, generation) == 2  # still running: taken over
    chunks = {c["number"]: c for c in jobs.chunks(job_id)}
    assert (chunks[0]["status"], chunks[0]["worker"], chunks[0]["rows"]) == ("DONE", "a", 2)
    assert (chunks[1]["status"], chunks[1]["worker"]) == ("RUNNING", "b")


def test_in_flight_counts_the_jobs_queued_and_running_chunks(services: Services) -> None:
    """A producer queues no more chunks while `numConcurrent` of its job's are queued or running: the count takes
    PENDING and RUNNING chunks of that job, not DONE ones, nor another job's."""
    jobs = services.jobs.jobs
    job_id, generation = _running_job(services, "producer")
    other, _ = _running_job(services, "neighbour")
    now = utcnow()
    lease = now + timedelta(minutes=1)
    assert jobs.in_flight(job_id) == 0
    for number in (0, 1, 2):
        jobs.chunk_queued(job_id, number, now)
    jobs.chunk_queued(other, 0, now)
    assert jobs.in_flight(job_id) == 3
    assert jobs.chunk_started(job_id, 0, "a", now, lease, generation) == 1
    assert jobs.in_flight(job_id) == 3  # running counts as queued did
    assert jobs.chunk_done(job_id, 0, 2, now, generation)
    assert jobs.in_flight(job_id) == 2
    assert jobs.in_flight(other) == 1


def _job(services: Services, status: str, output: str = "localFile", **values: object) -> str:
    """A job of a new user in `status` (a localFile intake, `output` out) with a spool of every kind on disk."""
    user = services.accounts.create_user(f"u-{new_id()}")
    job_id, now = new_id(), utcnow()
    spec = f'{{"intakeSettings": {{"type": "localFile"}}, "outputSettings": {{"type": "{output}"}}}}'
    row = {"id": job_id, "owner_id": user.id, "token_id": "t", "deployment_id": "d", "status": status}
    row |= {"spec": spec, "status_details": "", "intake_ready": True, "expected_rows": None, "total_chunks": None}
    row |= {"scored_rows": 0, "failed_rows": 0, "generation": 0, "created_at": now, "started_at": None}
    services.jobs.jobs.insert(row | {"finished_at": None} | values, Event("job.create", 202).entry())
    for part in ("intake", "in", "out"):
        (services.jobs.root / job_id / part).mkdir(parents=True)
        (services.jobs.root / job_id / part / "data.csv").write_text("a\n1\n")
    return job_id


def _spooled(services: Services, job_id: str) -> set[str]:
    folder = services.jobs.root / job_id
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_spools_of_ended_jobs_are_swept(services: Services) -> None:
    """At start-up, what ended jobs left on disk (their runner was killed first) is deleted: everything of a FAILED
    or ABORTED job, a COMPLETED one's intake and chunks (its localFile output stays, to download); an active job's
    spool is left alone."""
    failed, aborted = _job(services, "FAILED"), _job(services, "ABORTED")
    kept, sent = _job(services, "COMPLETED"), _job(services, "COMPLETED", "s3")
    running, waiting = _job(services, "RUNNING"), _job(services, "INITIALIZING", intake_ready=False)
    assert services.jobs.sweep_spools() == 4
    assert _spooled(services, failed) == _spooled(services, aborted) == _spooled(services, sent) == set()
    assert _spooled(services, kept) == {"out"}
    assert _spooled(services, running) == _spooled(services, waiting) == {"intake", "in", "out"}


def test_an_upload_not_finished_in_time_fails_its_job(services: Services) -> None:
    """A job still waiting for its upload `job_upload_expiry` seconds after its creation FAILS, saying why, and
    what it received is deleted; a younger one, or one whose upload was finished, is left alone."""
    old = utcnow() - timedelta(seconds=services.jobs.settings.job_upload_expiry + 5)
    stale = _job(services, "INITIALIZING", intake_ready=False, created_at=old)
    young = _job(services, "INITIALIZING", intake_ready=False)
    queued = _job(services, "INITIALIZING", created_at=old)
    assert services.jobs.expire_uploads() == [stale]
    row = services.jobs.jobs.get(stale)
    assert row is not None and row["status"] == "FAILED" and "upload was not finished" in row["status_details"]
    assert _spooled(services, stale) == set()
    assert [services.jobs.jobs.get(j)["status"] for j in (young, queued)] == ["INITIALIZING", "INITIALIZING"]  # type: ignore[index]
    assert _spooled(services, young) == {"intake", "in", "out"}
