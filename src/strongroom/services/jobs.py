"""Batch jobs (DataRobot's `batchPredictions`) and deployments (registered scoring functions).

A job is validated and its access checked when it is created: the caller must be able to use every data store
and credential it names (no role: 404, too low a role: 403), before any row is read. Its stored spec holds ids
and settings only, and for each data store a fingerprint of where it connected then: should the store be pointed
elsewhere before the job runs, the job fails naming it instead of sending its credential to the new target. It
then runs as numbered chunks (see services/batch.py): read -> scored -> written under its
number. The embedded runner (`JobRunner`, services/runners.py) runs jobs in the server process, `job_threads`
at a time, each job's chunks `numConcurrent` at a time, never on the event loop. Each run opens the credentials
it needs through `CredentialService.use`, which writes one `credential.use` audit record per credential.

A job the server was running when it stopped is run again when the server starts: with a localFile intake
(the spooled upload does not change) its finished chunks are kept and the rest run; a jdbc intake is read again
from the start (a table may have changed), its chunks replacing their earlier attempts.
"""

from __future__ import annotations

import codecs
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.config import Settings
from strongroom.errors import ECHO_MAX, Conflict, InvalidInput, NotFound, StrongroomError
from strongroom.representation import iso
from strongroom.services import s3
from strongroom.services.accounts import Principal
from strongroom.services.audit import Event
from strongroom.services.connections import Connector
from strongroom.services.credentials import is_id
from strongroom.services.datastores import DataStoreService
from strongroom.store.db import Database
from strongroom.store.models import new_id, utcnow
from strongroom.store.repositories.jobs import JobRepository

MAX_CHUNK_BYTES = 40 << 20  # DataRobot's largest chunkSize (bytes)

if TYPE_CHECKING:
    from strongroom.services.runners import JobRunner, QueuedJobs

_log = logging.getLogger("strongroom.jobs")
PASSTHROUGH_ID = "5e0000000000000000000001"
ADAPTERS = ("localFile", "s3", "jdbc")
STATEMENT_TYPES = ("insert", "create_table", "update", "insert_update")
ACTIVE = ("INITIALIZING", "RUNNING")
STOPPED = ("FAILED", "ABORTED")  # ended without completing: nothing of the job is kept
FINAL = ("COMPLETED", "ABORTED", "FAILED")
STATUSES = (*ACTIVE, *FINAL)
CHUNK_NAMES = ("auto", "fixed", "dynamic")
# A jdbc adapter's record of where its data store connected when the job was created (a fingerprint): the job
# connects only while the store still does, never where an editor pointed it since. Not shown in `jobSpec`.
STORE_TARGET = "dataStoreTarget"
LEASE = timedelta(minutes=10)


class JobService:
    """Deployment and job use cases; `runner` (set by the server) runs jobs once their intake is ready."""

    def __init__(
        self, jobs: JobRepository, datastores: DataStoreService, connector: Connector, settings: Settings
    ) -> None:
        self.jobs = jobs
        self.datastores = datastores
        self.connector = connector
        self.settings = settings
        self.root = settings.data_dir / "jobs"
        self.runner: JobRunner | None = None
        self.queued: QueuedJobs | None = None  # set in a server or worker on PostgreSQL with the queue

    def dispatch(self, job_id: str) -> None:
        """Hand a job whose intake is ready to whatever runs jobs here: the queue, or the embedded runner."""
        if self.queued is not None:
            self.queued.start(job_id)
        elif self.runner is not None:
            self.runner.submit(job_id)

    def uses_queue(self) -> bool:
        """Whether jobs go to `strongroom worker` processes (PostgreSQL, unless STRONGROOM_JOB_QUEUE=embedded)."""
        return not self.jobs.db.is_sqlite and self.settings.job_queue != "embedded"

    def start_runner(self, threads: int, worker: str) -> JobRunner:
        """Run jobs in this process from now on, first those a stopped server left (see the module's doc)."""
        from strongroom.services.runners import JobRunner  # the runner needs this module first

        self.runner = JobRunner(self, threads, worker)
        resumed = self.runner.resume()
        if resumed:
            _log.info("resuming %d batch job(s)", len(resumed))
        return self.runner

    def stop_runner(self) -> None:
        """Stop taking chunks and wait for those being written; unfinished jobs resume at the next start."""
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    # ---- deployments ------------------------------------------------------------------------------------

    def deployments(self, who: Principal) -> list[dict[str, Any]]:
        """The built-in passthrough deployment, then every registered one, oldest first."""
        who.require("read")
        return [_deployment_wire(d) for d in self._deployments()]

    def deployment(self, who: Principal, deployment_id: str) -> dict[str, Any]:
        who.require("read")
        return _deployment_wire(self._deployment(deployment_id, "deploymentId"))

    def add_deployment(self, who: Principal, label: str, entry_point: str) -> dict[str, Any]:
        """Register a scoring function (`admin`; audited); 409 if the label is taken."""
        from strongroom.services.batch import check_entry_point

        who.require("admin")
        if not isinstance(label, str) or not label.strip() or len(label) > 255:
            raise InvalidInput("label: must be 1 to 255 characters", {"label": "must be 1 to 255 characters"})
        check_entry_point(entry_point)
        if label == "passthrough" or any(d["label"] == label for d in self.jobs.deployments()):
            raise Conflict(f"a deployment named {_shown(label)} exists", {"label": "in use"})
        row = {"id": new_id(), "label": label, "entry_point": entry_point, "created_at": utcnow()}
        event = Event("deployment.create", 201, who, detail={"deploymentId": row["id"], "entryPoint": entry_point})
        self.jobs.add_deployment(row, event.entry())
        return _deployment_wire(row)

    def _deployments(self) -> list[dict[str, Any]]:
        builtin = {"id": PASSTHROUGH_ID, "label": "passthrough", "entry_point": None, "created_at": None}
        return [builtin, *self.jobs.deployments()]

    def _deployment(self, deployment_id: Any, field: str) -> dict[str, Any]:
        if not isinstance(deployment_id, str) or not deployment_id:
            raise InvalidInput(f"{field}: is required", {field: "is required"})
        found = next((d for d in self._deployments() if deployment_id in (d["id"], d["label"])), None)
        if found is None:
            raise NotFound(f"{field}: no deployment {_shown(deployment_id)}", {field: "unknown deployment"})
        return found

    # ---- jobs -------------------------------------------------------------------------------------------

    def create(self, who: Principal, body: Mapping[str, Any], base: str) -> dict[str, Any]:
        """Validate a job, check that the caller may use what it names, store it (audited) and start it unless
        it waits for an upload; the job as the API shows it (`base`: the API root URL for its links)."""
        who.require("use")
        spec = self._validate(who, body)
        now = utcnow()
        localfile = spec["intakeSettings"]["type"] == "localFile"
        row: dict[str, Any] = {
            "id": new_id(),
            "owner_id": who.user_id,
            "token_id": who.token_id,
            "deployment_id": spec["deploymentId"],
            "status": "INITIALIZING",
            "spec": json.dumps(spec, sort_keys=True),
            "status_details": "Waiting for the CSV upload" if localfile else "Queued",
            "intake_ready": not localfile,
            "expected_rows": None,
            "total_chunks": None,
            "scored_rows": 0,
            "failed_rows": 0,
            "generation": 0,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
        }
        event = Event("batchJob.create", 202, who, detail=_ids(row["id"], spec))
        self.jobs.insert(row, event.entry())
        if not localfile:
            self.dispatch(row["id"])
        return self.wire({**row, "owner": who.username}, base)

    def get(self, who: Principal, job_id: str) -> dict[str, Any]:
        """The caller's own job; 404 otherwise, for an administrator too: a job's results are rows read, and its
        upload rows written, with its owner's credentials, which an administrator without a role never uses."""
        who.require("read")
        row = self.jobs.get(job_id) if is_id(job_id) else None
        if row is None or row["owner_id"] != who.user_id:
            raise NotFound("batch job not found", {"batchPredictionJobId": "unknown"})
        return row

    def page(
        self, who: Principal, statuses: Sequence[str], offset: int, limit: int, base: str
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the caller's jobs, newest first, optionally in some statuses; and their total."""
        who.require("read")
        for s in statuses:
            if s not in STATUSES:
                msg = f"must be among {', '.join(STATUSES)}"
                raise InvalidInput(f"status: {msg}", {"status": msg})
        rows, total = self.jobs.page(who.user_id, statuses, offset, limit)
        return [self.wire(r, base) for r in rows], total

    def fail(self, job_id: str, reason: str) -> bool:
        """Mark an unfinished job FAILED with `reason`; True if it was unfinished."""
        return self.jobs.transition(
            job_id, ACTIVE, {"status": "FAILED", "status_details": reason[:2000], "finished_at": utcnow()}
        )

    def refuse(self, job_id: str, who: Principal, reason: str) -> bool:
        """FAIL an unfinished job its owner may no longer run (`who`: the owner as the job acts), auditing the
        denial; True if it was unfinished."""
        event = Event("batchJob.run", 401, who, outcome="denied", detail={"jobId": job_id, "reason": reason})
        return self.jobs.transition(
            job_id, ACTIVE, {"status": "FAILED", "status_details": reason, "finished_at": utcnow()}, event.entry()
        )

    def complete(self, job_id: str, total: int, output: str) -> None:
        """Mark a RUNNING job COMPLETED with its chunk and row counts, and delete its spooled intake (and its
        output spool unless it is a localFile output, which is downloaded from there)."""
        scored = sum(c["rows"] for c in self.jobs.chunks(job_id) if c["status"] == "DONE")
        self.jobs.transition(
            job_id,
            ("RUNNING",),
            {
                "status": "COMPLETED",
                "status_details": f"Completed: {scored} rows in {total} chunks",
                "total_chunks": total,
                "scored_rows": scored,
                "finished_at": utcnow(),
            },
        )
        self._tidy_completed(job_id, output)

    def _tidy_completed(self, job_id: str, output: str) -> None:
        for part in ("intake", "in", *(("out",) if output != "localFile" else ())):
            shutil.rmtree(self.root / job_id / part, ignore_errors=True)

    def remove_spool(self, job_id: str) -> None:
        """Delete everything a job spooled (it failed or was aborted: nothing of it is read again)."""
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def sweep_spools(self) -> int:
        """Delete what ended jobs left in the data directory (a server or worker stopped, or was killed, before it
        could): every spool of a FAILED or ABORTED job, and a COMPLETED one's intake (and its output unless it is
        downloaded from there); how many jobs' spools were swept. Run at start-up."""
        if not self.root.is_dir():
            return 0
        swept = 0
        for folder in self.root.iterdir():
            row = self.jobs.get(folder.name) if is_id(folder.name) and folder.is_dir() else None
            if row is None or row["status"] in ACTIVE:
                continue
            if row["status"] == "COMPLETED":
                self._tidy_completed(row["id"], json.loads(row["spec"])["outputSettings"]["type"])
            else:
                self.remove_spool(row["id"])
            swept += 1
        return swept

    def expire_uploads(self) -> list[str]:
        """FAIL the jobs whose upload was not finished within `job_upload_expiry` seconds of their creation, and
        delete what they received; their ids."""
        limit = self.settings.job_upload_expiry
        expired = []
        for job_id in self.jobs.waiting_uploads(utcnow() - timedelta(seconds=limit)):
            reason = f"the CSV upload was not finished within {limit:g} s of the job's creation"
            if self.jobs.expire_upload(job_id, {"status": "FAILED", "status_details": reason, "finished_at": utcnow()}):
                self.remove_spool(job_id)
                expired.append(job_id)
        return expired

    def abort(self, who: Principal, job_id: str) -> dict[str, Any]:
        """Abort a job that has not finished (audited); a finished job is left as it is. The job as it now is."""
        who.require("use")
        row = self.get(who, job_id)
        if row["status"] in ACTIVE:
            event = Event("batchJob.abort", 202, who, detail={"jobId": job_id})
            done = self.jobs.transition(
                job_id,
                ACTIVE,
                {"status": "ABORTED", "status_details": f"Aborted by {who.username}", "finished_at": utcnow()},
                event.entry(),
            )
            if done and self.runner is not None:
                self.runner.cancel(job_id)
            # A job no runner has started loses its spool now; one running loses it when its runner lets go.
            if done and row["status"] == "INITIALIZING" and (self.runner is None or not self.runner.holds(job_id)):
                self.remove_spool(job_id)
        return self.get(who, job_id)

    # ---- localFile intake and output ----------------------------------------------------------------------

    def upload_target(self, who: Principal, job_id: str, part: int | None) -> Path:
        """Where an upload (or a part of one) of the caller's waiting localFile job is spooled."""
        who.require("use")
        row = self.get(who, job_id)
        spec = json.loads(row["spec"])
        if spec["intakeSettings"]["type"] != "localFile":
            msg = "this job's intake is not localFile: it takes no upload"
            raise Conflict(msg, {"intakeSettings": "not localFile"})
        if row["status"] != "INITIALIZING" or row["intake_ready"]:
            raise Conflict(f"this job takes no more upload (it is {row['status']})", {"status": row["status"]})
        if part is not None and not 0 <= part < 100_000:
            raise InvalidInput("part: must be 0 to 99999", {"part": "out of range"})
        folder = self.root / job_id / "intake"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder / ("upload.csv" if part is None else f"part-{part:05d}.csv")

    def uploaded(self, who: Principal, job_id: str, size: int, part: int) -> None:
        """Audit a part of a multipart upload the caller's job received: its size, never its rows."""
        self.get(who, job_id)
        detail = {"jobId": job_id, "bytes": size, "part": part}
        self.jobs.record(Event("batchJob.upload", 202, who, detail=detail).entry())

    def upload_used(self, target: Path) -> int:
        """Bytes the job's intake holds beside `target` (the upload or part being written, which replaces its
        earlier copy), parts still arriving included: a job's whole upload stays within job_upload_max_bytes."""
        used = 0
        for path in target.parent.iterdir():
            name = path.name.removesuffix(".partial")
            if name.endswith(".csv") and name != target.name:
                try:
                    used += path.stat().st_size
                except FileNotFoundError:  # a part renamed into place meanwhile: counted under its own name
                    continue
        return used

    def upload_complete(
        self, who: Principal, job_id: str, lines: int, *, size: int | None = None, finalize: bool = False
    ) -> None:
        """The intake is complete (`lines` newlines counted in it): queue the job, audited with the job's change
        (a single upload's `size`, or a multipart upload's `finalize`)."""
        row = self.get(who, job_id)
        files = self.intake_files(job_id)
        if not files:
            raise InvalidInput("csvUpload: nothing was uploaded", {"csvUpload": "no data"})
        headers = len(files)
        used, limit = sum(f.stat().st_size for f in files), self.settings.job_upload_max_bytes
        if used > limit:  # parts sent side by side may each have found room for themselves
            msg = f"the job's upload ({used} bytes in all) exceeds the server's limit of {limit} bytes"
            raise InvalidInput(f"csvUpload: {msg}", {"csvUpload": msg})
        detail = (
            {"jobId": job_id, "finalized": True, "parts": headers} if finalize else {"jobId": job_id, "bytes": size}
        )
        audit = Event("batchJob.upload", 202, who, detail=detail)
        moved = self.jobs.transition(
            job_id,
            ("INITIALIZING",),
            {"intake_ready": True, "expected_rows": max(lines - headers, 0), "status_details": "Queued"},
            audit.entry() if finalize or size is not None else None,
        )
        if not moved:  # it ended meanwhile (aborted, or its upload expired)
            raise Conflict("this job takes no more upload (it has ended)", {"status": "ended"})
        if not row["intake_ready"]:
            self.dispatch(job_id)

    def intake_files(self, job_id: str) -> list[Path]:
        """The spooled intake of a localFile job: the single upload, or the parts in order."""
        folder = self.root / job_id / "intake"
        if not folder.is_dir():
            return []
        single = folder / "upload.csv"
        return [single] if single.exists() else sorted(folder.glob("part-*.csv"))

    def output_file(self, job_id: str, number: int) -> Path:
        """Chunk `number`'s spooled output of a localFile job."""
        return self.root / job_id / "out" / f"{number:08d}.csv"

    def download_ready(self, who: Principal, job_id: str) -> None:
        """Check that the caller's job has results to stream, and audit their download (batchJob.download, never
        a row): 409 saying why not unless it is RUNNING or COMPLETED (when its `download` link shows), not an empty
        CSV that looks like a result."""
        row = self.get(who, job_id)
        _local_output(row)
        status = row["status"]
        if status in ("RUNNING", "COMPLETED"):
            self.jobs.record(Event("batchJob.download", 200, who, detail={"jobId": job_id, "status": status}).entry())
            return
        if status == "INITIALIZING":
            waiting = "it is queued" if row["intake_ready"] else "it is waiting for its CSV upload"
            msg = f"the job's results are not ready (status {status}): {waiting}"
        else:
            msg = f"the job ended with status {status}: it has no results to download"
        raise Conflict(msg, {"status": status})

    def download_state(self, who: Principal, job_id: str) -> tuple[str, int | None]:
        """(status, total chunks once known) of the caller's job with a localFile output."""
        row = self.get(who, job_id)
        _local_output(row)
        return row["status"], row["total_chunks"]

    # ---- the API's view of a job ------------------------------------------------------------------------

    def wire(self, row: Mapping[str, Any], base: str) -> dict[str, Any]:
        """A job as `GET batchPredictions/{id}/` shows it (`base`: the API root URL)."""
        spec = json.loads(row["spec"])
        status = row["status"]
        own = f"{base}/batchPredictions/{row['id']}/"
        links = {"self": own}
        if spec["intakeSettings"]["type"] == "localFile" and status == "INITIALIZING" and not row["intake_ready"]:
            links["csvUpload"] = own + "csvUpload/"
        if spec["outputSettings"]["type"] == "localFile" and status in ("RUNNING", "COMPLETED"):
            links["download"] = own + "download/"
        if status == "COMPLETED":
            percentage = 100.0
        elif row["expected_rows"]:
            percentage = min(99.0, round(100.0 * row["scored_rows"] / row["expected_rows"], 1))
        else:
            percentage = 0.0
        start = row["started_at"] or row["created_at"]
        end = row["finished_at"] or utcnow()
        return {
            "id": row["id"],
            "status": status,
            "percentageCompleted": percentage,
            "elapsedTimeSec": max(0, int((moment(end) - moment(start)).total_seconds())),
            "statusDetails": row["status_details"] or status.capitalize(),
            "links": links,
            "jobSpec": _shown_spec(spec),
            "scoredRows": row["scored_rows"],
            "failedRows": row["failed_rows"],
            "skippedRows": 0,
            "created": iso(row["created_at"]),
            "createdBy": {"userId": row["owner_id"], "username": row.get("owner")},
            "source": "api",
            "hidden": None,
        }

    # ---- validation -------------------------------------------------------------------------------------

    def _validate(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        known = {
            "deploymentId",
            "intakeSettings",
            "outputSettings",
            "csvSettings",
            "numConcurrent",
            "chunkSize",
            "passthroughColumns",
            "passthroughColumnsSet",
            "abortOnError",
            "includeProbabilities",
            "includePredictionStatus",
            "skipDriftTracking",
        }
        unknown = sorted(k for k in body if k not in known and body[k] is not None)
        if unknown:
            msg, name = "is not supported by this server", _cut(unknown[0])
            raise InvalidInput(f"{name}: {msg}", {name: msg})
        deployment = self._deployment(body.get("deploymentId"), "deploymentId")
        spec: dict[str, Any] = {"deploymentId": deployment["id"]}
        spec["numConcurrent"] = _int(body, "numConcurrent", 1, 1, self.settings.job_max_concurrent)
        chunk = body.get("chunkSize")
        if chunk is None or chunk in CHUNK_NAMES:  # a strategy: rows, this server's default
            spec["chunkSize"] = chunk or "auto"
            spec["chunkRows"] = self.settings.job_chunk_rows
        else:  # bytes, as in DataRobot (see batch.ChunkSize for the rows that makes)
            spec["chunkSize"] = _int(body, "chunkSize", 0, 1, MAX_CHUNK_BYTES)
        columns = body.get("passthroughColumns")
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns):
                msg = "must be a list of column names"
                raise InvalidInput(f"passthroughColumns: {msg}", {"passthroughColumns": msg})
            spec["passthroughColumns"] = columns
        if body.get("passthroughColumnsSet") not in (None, "all"):
            msg = 'must be "all"'
            raise InvalidInput(f"passthroughColumnsSet: {msg}", {"passthroughColumnsSet": msg})
        if body.get("passthroughColumnsSet") == "all":
            spec["passthroughColumnsSet"] = "all"
        spec["csvSettings"] = _csv_settings(body.get("csvSettings"))
        spec["intakeSettings"] = self._adapter(who, body.get("intakeSettings"), "intakeSettings")
        spec["outputSettings"] = self._adapter(who, body.get("outputSettings"), "outputSettings")
        return spec

    def _s3(self, who: Principal, given: Mapping[str, Any], field: str) -> dict[str, Any]:
        _only(given, {"type", "url", "credentialId", "endpointUrl", "region", "format"}, field)
        spec: dict[str, Any] = {"type": "s3", "url": _string(given, "url", field, required=True)}
        for name in ("endpointUrl", "region"):
            if name in given:
                spec[name] = _string(given, name, field)
        s3_location(spec, field)
        if given.get("format", "csv") != "csv":
            msg = "only csv is supported"
            raise InvalidInput(f"{field}.format: {msg}", {f"{field}.format": msg})
        spec["format"] = "csv"
        credential = _string(given, "credentialId", field, required=True)
        kind = self.datastores.credentials.check_use(who, credential)
        if kind != "s3":
            msg = f"an s3 adapter needs an s3 credential, not {kind}"
            raise InvalidInput(f"{field}.credentialId: {msg}", {f"{field}.credentialId": msg})
        spec["credentialId"] = credential
        return spec

    def s3_keys(self, who: Principal, spec: Mapping[str, Any], purpose: Mapping[str, Any]) -> s3.Keys:
        """The signing keys of an s3 adapter's credential, opened for the job (audited as credential.use); a
        failure names the adapter (`s3 intake` or `s3 output`)."""
        from strongroom.services.batch import JobFailed

        try:
            kind, fields = self.datastores.credentials.use(who, spec["credentialId"], {**purpose, "url": spec["url"]})
            return s3.keys(kind, fields, "credentialId")
        except StrongroomError as exc:
            raise JobFailed(f"s3 {purpose['side']}: {exc.message}") from None

    def _adapter(self, who: Principal, value: Any, field: str) -> dict[str, Any]:
        if value is None:
            value = {"type": "localFile"}
        if not isinstance(value, dict):
            raise InvalidInput(f"{field}: must be an object", {field: "must be an object"})
        kind = value.get("type")
        if kind not in ADAPTERS:
            msg = f"unsupported type {_shown(kind)}; supported: {', '.join(ADAPTERS)}"
            raise InvalidInput(f"{field}.type: {msg}", {f"{field}.type": msg})
        given = {k: v for k, v in value.items() if v is not None}
        intake = field == "intakeSettings"
        if kind == "localFile":
            allowed = {"type", "multipart", "async"} if intake else {"type", "path"}
            _only(given, allowed, field)
            return {"type": "localFile"}
        if kind == "s3":
            return self._s3(who, given, field)
        if intake:
            names = {"type", "dataStoreId", "table", "query", "schema", "catalog", "fetchSize", "credentialId"}
            _only(given, names, field)
        else:
            _only(
                given,
                {
                    "type",
                    "dataStoreId",
                    "table",
                    "schema",
                    "catalog",
                    "statementType",
                    "updateColumns",
                    "whereColumns",
                    "createTableIfNotExists",
                    "credentialId",
                },
                field,
            )
        spec: dict[str, Any] = {"type": "jdbc", "dataStoreId": _string(given, "dataStoreId", field, required=True)}
        for name in ("schema", "catalog"):
            if name in given:
                spec[name] = _string(given, name, field)
        if intake:
            table, query = _string(given, "table", field), _string(given, "query", field)
            if (table is None) == (query is None):
                msg = "give exactly one of table and query"
                raise InvalidInput(f"{field}.table: {msg}", {f"{field}.table": msg})
            spec.update({"table": table} if table else {"query": query})
            if "fetchSize" in given:
                spec["fetchSize"] = _int(given, "fetchSize", 0, 1, 1_000_000, f"{field}.")
        else:
            spec["table"] = _string(given, "table", field, required=True)
            statement = given.get("statementType")
            if statement not in STATEMENT_TYPES:
                msg = f"must be one of {', '.join(STATEMENT_TYPES)}"
                raise InvalidInput(f"{field}.statementType: {msg}", {f"{field}.statementType": msg})
            spec["statementType"] = statement
            for name in ("updateColumns", "whereColumns"):
                if name in given:
                    names = given[name]
                    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                        msg = "must be a list of column names"
                        raise InvalidInput(f"{field}.{name}: {msg}", {f"{field}.{name}": msg})
                    spec[name] = names
            if statement in ("update", "insert_update") and not spec.get("whereColumns"):
                msg = f"is required for statementType {statement}"
                raise InvalidInput(f"{field}.whereColumns: {msg}", {f"{field}.whereColumns": msg})
            create = given.get("createTableIfNotExists", False)
            if not isinstance(create, bool):
                msg = "must be true or false"
                raise InvalidInput(f"{field}.createTableIfNotExists: {msg}", {f"{field}.createTableIfNotExists": msg})
            spec["createTableIfNotExists"] = create
        credential = _string(given, "credentialId", field)
        spec["credentialId"], spec[STORE_TARGET] = self.datastores.check_job_use(
            who, spec["dataStoreId"], credential, field
        )
        return spec


def s3_location(spec: Mapping[str, Any], field: str) -> s3.Location:
    """Where an s3 adapter reads or writes (422 naming `field`'s setting that is wrong)."""
    body = {k: spec[k] for k in ("url", "endpointUrl", "region") if k in spec}
    try:
        where = s3.location(body)
    except InvalidInput as exc:
        raise InvalidInput(f"{field}.{exc.message}", {f"{field}.{k}": v for k, v in exc.errors.items()}) from None
    if not where.prefix or where.prefix.endswith("/"):
        msg = "must name an object: s3://bucket/key"
        raise InvalidInput(f"{field}.url: {msg}", {f"{field}.url": msg})
    return where


def moment(value: datetime | str) -> datetime:
    """A stored moment as a datetime (SQLite may hand back text)."""
    found = Database.as_datetime(value)
    assert found is not None
    return found


def _ids(job_id: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A job's audit detail: its id, deployment, and the ids of the stores and credentials it names."""
    detail: dict[str, Any] = {"jobId": job_id, "deploymentId": spec["deploymentId"]}
    for side in ("intakeSettings", "outputSettings"):
        adapter = spec[side]
        detail[side] = {k: adapter[k] for k in ("type", "dataStoreId", "credentialId") if k in adapter}
    return detail


def _shown_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored spec as `jobSpec` shows it: the adapters without their stores' target fingerprints."""
    shown = dict(spec)
    for side in ("intakeSettings", "outputSettings"):
        shown[side] = {k: v for k, v in spec[side].items() if k != STORE_TARGET}
    return shown


def _local_output(row: Mapping[str, Any]) -> None:
    """409 unless the job's output is localFile (the only one downloaded)."""
    if json.loads(row["spec"])["outputSettings"]["type"] != "localFile":
        raise Conflict("this job's output is not localFile: nothing to download", {"outputSettings": "not local"})


def _deployment_wire(row: Mapping[str, Any]) -> dict[str, Any]:
    builtin = row["entry_point"] is None
    return {
        "id": row["id"],
        "label": row["label"],
        "entryPoint": "builtin:passthrough" if builtin else row["entry_point"],
        "description": "writes the intake rows unchanged" if builtin else f"scores with {row['entry_point']}",
        "createdAt": iso(row["created_at"]) if row["created_at"] else None,
        "status": "active",
    }


def _cut(text: str) -> str:
    """A client's text as an error may carry it: its first ECHO_MAX characters, an unprintable one as U+FFFD, and
    "…" when there were more."""
    shown = "".join(c if c.isprintable() else "\ufffd" for c in text[:ECHO_MAX])
    return shown + "…" if len(text) > ECHO_MAX else shown


def _shown(value: Any) -> str:
    """A client's JSON value as an error message may quote it: a string cut (`_cut`) in quotes, a number,
    boolean or null as JSON, a list or an object by its kind only (never its contents)."""
    if isinstance(value, str):
        return f"'{_cut(value)}'"
    if isinstance(value, list):
        return "(a list)"
    if isinstance(value, dict):
        return "(an object)"
    return _cut(json.dumps(value))


def _only(given: Mapping[str, Any], allowed: set[str], field: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        msg, name = f"unknown setting for type {given.get('type')}", f"{field}.{_cut(unknown[0])}"
        raise InvalidInput(f"{name}: {msg}", {name: msg})


def _string(given: Mapping[str, Any], name: str, field: str, *, required: bool = False) -> Any:
    value = given.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"{field}.{name}: is required", {f"{field}.{name}": "is required"})
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 100_000:
        raise InvalidInput(f"{field}.{name}: must be a non-empty string", {f"{field}.{name}": "must be a string"})
    return value


def _int(body: Mapping[str, Any], name: str, default: int, low: int, high: int, prefix: str = "") -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        msg = f"must be a whole number from {low} to {high}"
        raise InvalidInput(f"{prefix}{name}: {msg}", {f"{prefix}{name}": msg})
    return value


def _csv_settings(value: Any) -> dict[str, str]:
    """A job's csvSettings, each a value the CSV reader (and PostgreSQL's COPY) takes; 422 naming the setting."""
    if value is None:
        return {"delimiter": ",", "quotechar": '"', "encoding": "utf-8"}
    if not isinstance(value, dict):
        raise InvalidInput("csvSettings: must be an object", {"csvSettings": "must be an object"})
    _only({"type": "csv", **value}, {"type", "delimiter", "quotechar", "encoding"}, "csvSettings")
    delimiter = value.get("delimiter")
    delimiter = "," if delimiter is None else _csv_character(delimiter, "delimiter")
    quote = value.get("quotechar")
    quote = '"' if quote is None else _csv_character(quote, "quotechar")
    if quote == ("\t" if delimiter == "tab" else delimiter):
        msg = "must differ from csvSettings.delimiter"
        raise InvalidInput(f"csvSettings.quotechar: {msg}", {"csvSettings.quotechar": msg})
    encoding = value.get("encoding")
    encoding = "utf-8" if encoding is None else _csv_encoding(encoding)
    settings = {"delimiter": delimiter, "quotechar": quote, "encoding": encoding}
    if encoding != "utf-8" or delimiter != "," or quote != '"':
        from strongroom.services.batch import csv_options, reads_csv_in

        if not reads_csv_in(**csv_options(settings)):
            msg = "the CSV reader cannot read this encoding (with this delimiter and quotechar)"
            raise InvalidInput(f"csvSettings.encoding: {msg}", {"csvSettings.encoding": msg})
    return settings


def _csv_character(value: Any, name: str) -> str:
    """A delimiter ("tab" too) or quotechar: one ASCII character, printable or a tab (the CSV reader takes one
    byte, and neither it nor COPY takes a newline, a carriage return or a NUL)."""
    if name == "delimiter" and value == "tab":
        return value
    if not (isinstance(value, str) and len(value) == 1 and value.isascii() and (value.isprintable() or value == "\t")):
        msg = "must be one printable ASCII character or a tab" + (' ("tab")' if name == "delimiter" else "")
        raise InvalidInput(f"csvSettings.{name}: {msg}", {f"csvSettings.{name}": msg})
    return value


def _csv_encoding(value: Any) -> str:
    """The name of a Python text codec (as the DataRobot client reads it too), as given."""
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        msg = "must be the name of a text encoding, such as utf-8"
        raise InvalidInput(f"csvSettings.encoding: {msg}", {"csvSettings.encoding": msg})
    try:
        codec = codecs.lookup(value)
    except (LookupError, ValueError):
        raise InvalidInput("csvSettings.encoding: unknown encoding", {"csvSettings.encoding": "unknown"}) from None
    if not getattr(codec, "_is_text_encoding", True):
        msg = "is not a text encoding (bytes to text)"
        raise InvalidInput(f"csvSettings.encoding: {msg}", {"csvSettings.encoding": msg})
    return value
