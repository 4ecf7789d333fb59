"""A batch job connects to a data store only where the store connected when the job was created: a store pointed
elsewhere before the job runs fails its jdbc intake by name, and neither the old nor the new target is contacted.
The job is created with no runner (it stays queued), the store is repointed, then the embedded runner takes it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.services.accounts import Principal
from strongroom.store.models import BatchJob
from tests.support import Listener, closing_listener, make_credential, new_principal

PASSTHROUGH = "5e0000000000000000000001"


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Services]:
    services = Services.open(Settings(data_dir=tmp_path))
    try:
        yield services
    finally:
        services.close()


def _queued_intake_job(services: Services, who: Principal, listener: Listener) -> tuple[str, str]:
    """A jdbc intake job on a new store pointing at `listener`, left queued (no runner yet): (job id, store id)."""
    driver = next(d["id"] for d in services.datastores.drivers(who) if d["databaseDriver"] == "postgres")
    params = {"driverId": driver, "jdbcUrl": f"jdbc:postgresql://127.0.0.1:{listener.port}/shop"}
    store = services.datastores.create(who, {"type": "jdbc", "canonicalName": "shop", "params": params})
    cred = make_credential(services, who, {"name": "db", "credentialType": "basic", "user": "u", "password": "p"})
    intake = {"type": "jdbc", "dataStoreId": store["id"], "table": "orders", "credentialId": cred["credentialId"]}
    job = services.jobs.create(who, {"deploymentId": PASSTHROUGH, "intakeSettings": intake}, "http://test/api/v2")
    assert job["status"] == "INITIALIZING" and "dataStoreTarget" not in job["jobSpec"]["intakeSettings"]
    return job["id"], store["id"]


def _run(services: Services, job_id: str) -> dict[str, Any]:
    """Start the embedded runner and wait for the job to end; the job's row."""
    services.jobs.start_runner(1, "test")
    deadline = time.monotonic() + 60
    while (row := services.jobs.jobs.get(job_id)) is not None and row["status"] not in ("FAILED", "COMPLETED"):
        assert time.monotonic() < deadline, f"job {job_id} did not end: {row['status']}"
        time.sleep(0.05)
    assert row is not None
    return row


def _uses(services: Services) -> list[Any]:
    records, _ = services.audit.list(None, action="credential.use")
    return records


def test_a_store_pointed_elsewhere_after_the_job_was_created_fails_its_intake(opened: Services) -> None:
    who = new_principal(opened)
    with closing_listener() as first, closing_listener() as second:
        job_id, store_id = _queued_intake_job(opened, who, first)
        params = opened.datastores.get(who, store_id)["params"]
        moved = {**params, "jdbcUrl": f"jdbc:postgresql://127.0.0.1:{second.port}/shop"}
        opened.datastores.update(who, store_id, {"params": moved})
        row = _run(opened, job_id)
        assert (first.accepted, second.accepted) == ([], [])
    assert row["status"] == "FAILED"
    assert row["status_details"].startswith(
        f"jdbc intake: data store 'shop' ({store_id}) was changed to connect elsewhere after this job was created"
    ), row["status_details"]
    assert _uses(opened) == []


def test_a_job_stored_without_its_stores_fingerprint_fails_closed(opened: Services) -> None:
    """A job queued by an earlier version (no fingerprint in its spec) cannot tell where its store connected, so
    it connects nowhere rather than anywhere."""
    who = new_principal(opened)
    with closing_listener() as listener:
        job_id, store_id = _queued_intake_job(opened, who, listener)
        spec = json.loads(opened.jobs.jobs.get(job_id)["spec"])
        del spec["intakeSettings"]["dataStoreTarget"]
        with opened.db.write() as s:
            s.execute(update(BatchJob).where(BatchJob.id == job_id).values(spec=json.dumps(spec)))
        row = _run(opened, job_id)
        assert listener.accepted == []
    assert row["status"] == "FAILED" and f"({store_id}) was changed" in row["status_details"]
    assert _uses(opened) == []
