"""`BatchJob` and `Deployment`: batch jobs (`batchPredictions/`) that move data through stored credentials.

A FAILED job answers `GET batchPredictions/{id}/` with 409 and the job in the body; `BatchJob.get` and
`refresh` read it from there, so a failed job is shown like any other and `wait` raises `JobFailedError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from strongroom.client.client import get_client
from strongroom.client.errors import ClientError, StrongroomSDKError

_JOBS = "batchPredictions/"
FINAL = ("COMPLETED", "ABORTED", "FAILED")


class JobFailedError(StrongroomSDKError):
    """The job ended FAILED or ABORTED; the message is the server's status details."""

    def __init__(self, message: str, job: BatchJob) -> None:
        super().__init__(message)
        self.job = job


class Deployment:
    """A scoring function jobs can run: the built-in `passthrough` or one an administrator registered."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.id: str = data["id"]
        self.label: str = data["label"]
        self.entry_point: str = data.get("entryPoint", "")

    def __repr__(self) -> str:
        return f"Deployment({self.id!r}, {self.label!r})"

    @classmethod
    def list(cls) -> list[Deployment]:
        """Every deployment, the built-in passthrough first."""
        return [cls(d) for d in get_client().paginate("deployments/")]

    @classmethod
    def get(cls, deployment_id: str) -> Deployment:
        """One deployment by id or label."""
        return cls(get_client().get(f"deployments/{deployment_id}/").json())


class BatchJob:
    """A batch job as the server last showed it."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data: dict[str, Any] = dict(data)

    def __repr__(self) -> str:
        return f"BatchJob({self.id!r}, status={self.status!r}, {self.percentage_completed}%)"

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def percentage_completed(self) -> float:
        return float(self.data.get("percentageCompleted") or 0)

    @property
    def status_details(self) -> str:
        return str(self.data.get("statusDetails") or "")

    @property
    def links(self) -> dict[str, str]:
        return dict(self.data.get("links") or {})

    @classmethod
    def create(cls, spec: Mapping[str, Any], csv: str | Path | IO[bytes] | None = None) -> BatchJob:
        """Submit a job (the API's camelCase body); with a localFile intake, `csv` (a path or a binary file) is
        uploaded at once."""
        client = get_client()
        job = cls(client.post(_JOBS, json=dict(spec)).json())
        if "csvUpload" in job.links:
            if csv is None:
                raise StrongroomSDKError("this job's intake is localFile: give the CSV to upload")
            job.upload(csv)
        return job.refresh()

    @classmethod
    def get(cls, job_id: str) -> BatchJob:
        """The job as it is now (a FAILED one too)."""
        try:
            return cls(get_client().get(f"{_JOBS}{job_id}/").json())
        except ClientError as exc:
            if exc.status_code == 409 and isinstance(exc.json, dict) and isinstance(exc.json.get("job"), dict):
                return cls(exc.json["job"])
            raise

    @classmethod
    def list(cls, status: str | list[str] | None = None) -> list[BatchJob]:
        """The caller's jobs, newest first, optionally in some statuses."""
        params = {"status": ",".join([status] if isinstance(status, str) else status)} if status else None
        return [cls(d) for d in get_client().paginate(_JOBS, params=params)]

    def refresh(self) -> BatchJob:
        """Read the job again; returns itself."""
        self.data = BatchJob.get(self.id).data
        return self

    def upload(self, csv: str | Path | IO[bytes]) -> None:
        """Stream a CSV to the job's upload link."""
        client = get_client()
        url = client.relative(self.links["csvUpload"])
        if isinstance(csv, str | Path):
            with open(csv, "rb") as handle:
                client.send("PUT", url, content=_pieces(handle), headers={"Content-Type": "text/csv"})
        else:
            client.send("PUT", url, content=_pieces(csv), headers={"Content-Type": "text/csv"})

    def download(self, sink: IO[bytes]) -> None:
        """Stream the output CSV of a localFile job into `sink` (it ends when the job has)."""
        client = get_client()
        while "download" not in self.links:
            if self.status in FINAL:
                raise JobFailedError(f"job {self.id} ended {self.status}: {self.status_details}", self)
            time.sleep(0.5)
            self.refresh()
        client.stream_to("GET", client.relative(self.links["download"]), sink)

    def cancel(self) -> BatchJob:
        """Abort the job (a finished job is left as it is)."""
        self.data = get_client().delete(f"{_JOBS}{self.id}/").json()
        return self

    def wait(
        self, timeout: float = 3600, every: float = 0.5, progress: Callable[[BatchJob], None] | None = None
    ) -> BatchJob:
        """Poll until the job ends, calling `progress` with each state; JobFailedError if it did not complete."""
        deadline = time.monotonic() + timeout
        for job in self.follow(every):
            if progress is not None:
                progress(job)
            if time.monotonic() > deadline and job.status not in FINAL:
                raise StrongroomSDKError(f"job {self.id} did not finish in {timeout} s (it is {job.status})")
        if self.status != "COMPLETED":
            raise JobFailedError(f"job {self.id} ended {self.status}: {self.status_details}", self)
        return self

    def follow(self, every: float = 0.5) -> Iterator[BatchJob]:
        """Yield the job after each poll until it has ended (the last state included)."""
        while True:
            self.refresh()
            yield self
            if self.status in FINAL:
                return
            time.sleep(every)


def _pieces(handle: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while piece := handle.read(size):
        yield piece
