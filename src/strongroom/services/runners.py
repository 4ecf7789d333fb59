"""What runs batch jobs: `JobRunner` in the server process (the embedded default), `QueuedJobs` on `strongroom
worker` processes through the PostgreSQL queue (services/queue.py), and the intake and output each opens.

Both run a job as numbered chunks (services/batch.py) and record progress through `JobService`; see
services/jobs.py for what a job is and how a stopped one is resumed.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from strongroom.errors import StrongroomError
from strongroom.services.accounts import Principal, expired
from strongroom.services.jobs import ACTIVE, LEASE, STOPPED, STORE_TARGET, JobService, moment, s3_location
from strongroom.store.models import utcnow

_log = logging.getLogger("strongroom.jobs")
KEEP_OUTPUT_SECONDS = 30.0  # a worker closes a job's jdbc output (its open connections) this long after its last chunk


# ---- the embedded runner ----------------------------------------------------------------------------------


class JobRunner:
    """Runs jobs in this process: `threads` jobs at once, each job's chunks `numConcurrent` at once."""

    def __init__(self, service: JobService, threads: int, worker: str) -> None:
        from strongroom.services.heap import return_big_buffers

        return_big_buffers()
        self.service = service
        self.jobs = service.jobs
        self._outputs: dict[str, Any] = {}
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="strongroom-job")
        self.worker = worker
        self.cancelled: set[str] = set()
        self.running: dict[str, Future[None]] = {}
        self.lock = threading.Lock()
        self.closing = False

    def resume(self) -> list[str]:
        """Queue every job this store was running or had queued when a server last stopped; their ids."""
        found = [r["id"] for r in self.jobs.with_status(ACTIVE) if r["status"] == "RUNNING" or r["intake_ready"]]
        for job_id in found:
            self.submit(job_id)
        return found

    def submit(self, job_id: str) -> None:
        """Queue a job (once: a job already queued here is not queued again)."""
        with self.lock:
            if self.closing or job_id in self.running:
                return
            self.running[job_id] = self.pool.submit(self._run, job_id)

    def cancel(self, job_id: str) -> None:
        """Stop a job after the chunks it is writing (it was aborted)."""
        self.cancelled.add(job_id)

    def holds(self, job_id: str) -> bool:
        """Whether the job is queued or running here (its spool is removed when it lets go)."""
        with self.lock:
            return job_id in self.running

    def close(self) -> None:
        """Finish no new chunk, and wait for the chunks being written (their jobs are resumed at the next start)."""
        with self.lock:
            self.closing = True
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _stopped(self, job_id: str) -> bool:
        return self.closing or job_id in self.cancelled

    def _run(self, job_id: str) -> None:
        try:
            self._attempt(job_id)
        except Exception as exc:  # the job fails with a reason; the runner goes on with the next
            if self.closing:  # its read was cut short by the stop: the job resumes at the next start
                _log.info("job %s stopped with the server (%s)", job_id, type(exc).__name__)
                return
            reason = exc.message if isinstance(exc, StrongroomError) else f"internal error ({type(exc).__name__})"
            if not isinstance(exc, StrongroomError):
                _log.error("job %s failed: %s", job_id, type(exc).__name__)
            self.jobs.transition(
                job_id, ACTIVE, {"status": "FAILED", "status_details": reason[:2000], "finished_at": utcnow()}
            )
            self._cleanup_output(job_id)
        finally:
            with self.lock:
                self.running.pop(job_id, None)
            self.cancelled.discard(job_id)
            ended = self.jobs.get(job_id)
            if ended is not None and ended["status"] in STOPPED:
                self.service.remove_spool(job_id)  # nothing of it is read again

    def _cleanup_output(self, job_id: str) -> None:
        from strongroom.services.batch import TableOutput

        output = self._outputs.pop(job_id, None)
        if output is not None:
            output.discard()
            if isinstance(output, TableOutput):
                output.close()  # the connections its discard opened

    def _attempt(self, job_id: str) -> None:
        from strongroom.services import batch

        row = self.jobs.get(job_id)
        if row is None or row["status"] not in ACTIVE:
            return
        resumed = row["status"] == "RUNNING"
        if not self.jobs.transition(
            job_id,
            ACTIVE,
            {"status": "RUNNING", "status_details": "Running", "started_at": row["started_at"] or utcnow()},
        ):
            return
        spec = json.loads(row["spec"])
        who = principal_for(self.service, row)
        intake, output = spec["intakeSettings"], spec["outputSettings"]
        size = batch.chunk_size(spec, self.service.settings.job_chunk_rows)
        options = batch.csv_options(spec.get("csvSettings"))
        deployment, columns = _scoring(self.service, spec)
        score = batch.scorer(deployment["entry_point"], columns)
        raw = passes_csv_through(deployment, columns, output, options)
        purpose = {"purpose": "batchJob", "jobId": job_id}
        done: set[int] = set()
        folder = self.service.root / job_id / "out"
        if resumed and intake["type"] == "localFile":
            done = {c["number"] for c in self.jobs.chunks(job_id) if c["status"] == "DONE"}
        elif resumed:
            self.jobs.forget_chunks(job_id)
            shutil.rmtree(folder, ignore_errors=True)
        keep = intake["type"] == "localFile"  # a resumed localFile job keeps its finished chunks' output
        # pooled: a jdbc output's connections stay open from chunk to chunk (closed when the job ends)
        stopped = lambda: self._stopped(job_id)  # noqa: E731
        sink = open_sink(
            self.service, job_id, who, output, options, purpose, keep_chunks=keep, pooled=True, stopped=stopped
        )
        try:
            if resumed and intake["type"] != "localFile" and output["type"] == "jdbc":
                sink.discard()  # what the stopped run staged: every chunk is written again
            self._outputs[job_id] = sink
            copy = copies_slices(deployment, columns, intake, sink, options)
            with open_intake(
                self.service, who, job_id, intake, size, options, purpose, raw, copy=copy, stopped=stopped
            ) as chunks:
                total = self._chunks(job_id, chunks, done, score, sink, int(spec["numConcurrent"]), intake, output)
            if job_id in self.cancelled:
                self._cleanup_output(job_id)
            if self._stopped(job_id):
                return
            try:
                sink.finish(total)
            except StrongroomError as exc:
                raise batch.JobFailed(_prefixed(exc, f"{output['type']} output")) from None
            self._outputs.pop(job_id, None)
            self.service.complete(job_id, total, output["type"])
        finally:
            if isinstance(sink, batch.TableOutput):
                sink.close()

    def _chunks(
        self,
        job_id: str,
        chunks: Iterator[Any],
        done: set[int],
        score: Any,
        sink: Any,
        concurrent: int,
        intake: Mapping[str, Any],
        output: Mapping[str, Any],
    ) -> int:
        """Score and write every chunk not already done, `concurrent` at once; how many chunks there were."""
        from strongroom.services import batch

        kind, output_kind = intake["type"], output["type"]
        slots = threading.BoundedSemaphore(concurrent)
        failures: list[BaseException] = []
        pending: list[Future[None]] = []

        def work(number: int, chunk: Any) -> None:
            try:
                if failures or self._stopped(job_id):
                    return
                now = utcnow()
                attempt = self.jobs.chunk_started(job_id, number, self.worker, now, now + LEASE)
                scored = score(chunk)
                try:
                    rows = sink.write(number, scored, attempt)
                except batch.JobFailed:
                    raise
                except StrongroomError as exc:
                    raise batch.JobFailed(_prefixed(exc, f"{output_kind} output")) from None
                self.jobs.chunk_done(job_id, number, rows, utcnow())
            except BaseException as exc:
                failures.append(exc)
            finally:
                slots.release()

        number = -1
        with ThreadPoolExecutor(concurrent, thread_name_prefix=f"strongroom-chunk-{job_id[-6:]}") as pool:
            try:
                for number, chunk in enumerate(chunks):
                    if failures or self._stopped(job_id):
                        break
                    if number in done:
                        continue
                    slots.acquire()
                    pending.append(pool.submit(work, number, chunk))
            except batch.JobFailed:
                raise
            except StrongroomError as exc:
                raise batch.JobFailed(_prefixed(exc, f"{kind} intake")) from None
            finally:
                for f in pending:
                    f.result()
        if failures:
            raise failures[0]
        return number + 1


def open_intake(
    service: JobService,
    who: Principal,
    job_id: str,
    intake: Mapping[str, Any],
    size: Any,
    options: Mapping[str, str],
    purpose: Mapping[str, Any],
    raw: bool = False,
    split: bool = False,
    copy: bool = False,
    stopped: Callable[[], bool] | None = None,
) -> Any:
    """The intake's chunks of `size` (a `batch.ChunkSize`), in a context that holds its connection open (failures
    name the adapter). `raw`: a PostgreSQL intake's chunks are its COPY CSV as they come (`CsvChunk`s), for a
    passthrough into a CSV output. `split`: an s3 intake's chunks are unparsed slices of whole rows of about
    `size.bytes` (`CsvSlice`s, parsed by whoever writes them). `copy`: an s3 intake's chunks are such slices
    for PostgreSQL's COPY (a localFile intake's too), of `size` in bytes or rows (see `copies_slices`). An s3
    intake keeps the job's expected rows (its percentage) estimated as it reads. A jdbc intake's statement is
    cancelled once `stopped()` (the job was aborted, or its runner stops), and when the job leaves the read
    before its end (see `_Reading`)."""
    from contextlib import contextmanager

    from strongroom.services import batch

    @contextmanager
    def opened() -> Iterator[Iterator[Any]]:
        if intake["type"] == "localFile":
            if copy and batch.splits_at_bytes(options):
                yield batch.split_files(service.intake_files(job_id), options, size, copy)
            else:
                yield batch.read_csv(service.intake_files(job_id), options, size)
            return
        if intake["type"] == "s3":
            location = s3_location(intake, "intakeSettings")
            keys = service.s3_keys(who, intake, {**purpose, "side": "intake"})
            expect = lambda rows: service.jobs.set(job_id, {"expected_rows": rows})  # noqa: E731
            if batch.splits_at_bytes(options) and (copy or (split and size.bytes)):
                yield batch.split_s3(service.connector, location, keys, options, size, expect, copy)
            else:
                yield batch.read_s3(service.connector, location, keys, options, size, expect)
            return
        timeout = service.settings.job_statement_timeout
        try:
            where, user, password = service.datastores.job_login(
                who,
                intake["dataStoreId"],
                intake["credentialId"],
                {**purpose, "side": "intake"},
                intake.get(STORE_TARGET),
            )
            counting = _CountAside(service, job_id, intake, (where, user, password), timeout)
            try:
                with service.connector.connect(where, user, password, statement_timeout=timeout) as conn:
                    reading = _Reading(service, (where, user, password), conn, stopped)
                    if raw and conn.dialect.name == "postgresql":
                        chunks = batch.read_table_csv(conn, intake, size, options, reading.stop)
                    else:
                        chunks = batch.read_table(conn, intake, size, reading.stop)
                    try:
                        yield chunks
                    finally:
                        reading.end(chunks)
            finally:
                counting.stop()
        except batch.JobFailed:
            raise
        except StrongroomError as exc:
            raise batch.JobFailed(_prefixed(exc, "jdbc intake")) from None

    return opened()


class _Reading:
    """A jdbc intake's read in progress. While it runs, a `StatementWatch` cancels its statement once `stopped()`.
    `end` cancels a read the job left before its end, waits for a reader still inside the driver, and closes the
    chunks' generator (which ends the COPY): the connection then closes without waiting on a lock an abandoned
    reader holds, and the store's backend ends its statement and transaction."""

    def __init__(
        self, service: JobService, login: tuple[Any, str, str], conn: Any, stopped: Callable[[], bool] | None
    ) -> None:
        from strongroom.services.batch import ReadStop, StatementWatch

        self.stop = ReadStop()
        raw = conn.connection.driver_connection
        self.watch = StatementWatch(service.connector, login, raw, stopped, self.stop.set)

    def end(self, chunks: Iterator[Any]) -> None:
        """The job left the read: cancel what still runs, wait for readers, close the generator."""
        import inspect

        self.watch.close()
        if inspect.getgeneratorstate(chunks) != inspect.GEN_CLOSED:  # left before its end
            self.stop.set()
            self.watch.cancel()
        self.stop.settle()
        chunks.close()  # type: ignore[attr-defined]


class _CountAside:
    """A jdbc intake's rows counted (the job's expected rows, for percentageCompleted) on a connection of its own,
    beside the read: counting first held every job back by a scan of the intake (1M rows: 60-80 ms here). A
    count that fails leaves the percentage to the rows read; the job goes on. `stop` cancels a count still
    running and waits for it."""

    def __init__(
        self, service: JobService, job_id: str, intake: Mapping[str, Any], login: tuple[Any, str, str], timeout: float
    ) -> None:
        self.service, self.job_id, self.intake, self.login, self.timeout = service, job_id, intake, login, timeout
        self.running: Any = None  # the driver connection while the count runs
        self.thread = threading.Thread(target=self._count, name=f"strongroom-count-{job_id[-6:]}", daemon=True)
        self.thread.start()

    def _count(self) -> None:
        from strongroom.services import batch

        try:
            with self.service.connector.connect(*self.login, statement_timeout=self.timeout) as conn:
                self.running = conn.connection.driver_connection
                try:
                    expected = batch.count_rows(conn, self.intake)
                finally:
                    self.running = None
        except Exception as exc:  # no failure of the count may fail the job; only its kind is logged
            _log.info("job %s: rows not counted (%s)", self.job_id, type(exc).__name__)
            return
        if expected is not None:
            self.service.jobs.set(self.job_id, {"expected_rows": expected})

    def stop(self) -> None:
        while self.thread.is_alive():  # again until it ends: a cancel that came before the statement is lost
            running = self.running
            if running is not None:  # PostgreSQL's cancel request, MySQL's KILL QUERY: safe from another thread
                self.service.connector.cancel(*self.login, running)
            self.thread.join(0.2)


def _scoring(service: JobService, spec: Mapping[str, Any]) -> tuple[Mapping[str, Any], Any]:
    """The job's deployment and the intake columns it passes through (None: every column)."""
    deployment = service._deployment(spec["deploymentId"], "deploymentId")
    return deployment, None if spec.get("passthroughColumnsSet") == "all" else spec.get("passthroughColumns")


def passes_csv_through(
    deployment: Mapping[str, Any], columns: Any, output: Mapping[str, Any], options: Mapping[str, str]
) -> bool:
    """Whether the job moves its intake's CSV as it is: the built-in passthrough of every column into a CSV
    output (localFile or s3) in UTF-8. A registered function, or a jdbc output, gets Arrow batches."""
    from strongroom.services import batch

    return (
        _every_column(deployment, columns)
        and output["type"] in ("localFile", "s3")
        and batch.passes_csv_through(options)
    )


def _every_column(deployment: Mapping[str, Any], columns: Any) -> bool:
    """Whether the job is the built-in passthrough of every intake column, unchanged."""
    return deployment["entry_point"] is None and columns is None


def copies_slices(
    deployment: Mapping[str, Any], columns: Any, intake: Mapping[str, Any], sink: Any, options: Mapping[str, str]
) -> bool:
    """Whether the job hands its intake's CSV to PostgreSQL's COPY as it is: the built-in passthrough of every
    column from an s3 or localFile intake into a PostgreSQL table, in UTF-8. PostgreSQL then parses the rows (an
    unquoted empty field is NULL, a quoted one the empty string), exactly as its own `COPY … FROM STDIN` of the
    file."""
    from strongroom.services import batch

    into_postgres = isinstance(sink, batch.TableOutput) and sink.postgres
    return (
        _every_column(deployment, columns)
        and into_postgres
        and intake["type"] in ("s3", "localFile")
        and batch.passes_csv_through(options)
    )


def open_sink(
    service: JobService,
    job_id: str,
    who: Principal,
    output: Mapping[str, Any],
    options: Mapping[str, str],
    purpose: Mapping[str, Any],
    generation: int = 0,
    keep_chunks: bool = True,
    pooled: bool = False,
    stopped: Callable[[], bool] | None = None,
) -> Any:
    """The job's output adapter, its credential opened (audited): a credential that no longer works fails the
    job before any row is read. `generation`: the run of a queued job whose staging table a jdbc output uses.
    `keep_chunks=False`: an s3 output does not spool the chunks written through it (a run that starts over
    from its intake never reads them again). `pooled`: a jdbc output keeps its connections open (`close` it).
    `stopped`: a jdbc output's write in progress is cancelled once it is true (the job was aborted)."""
    from strongroom.services import batch

    folder = service.root / job_id / "out"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if output["type"] == "jdbc":
        try:
            where, user, password = service.datastores.job_login(
                who,
                output["dataStoreId"],
                output["credentialId"],
                {**purpose, "side": "output"},
                output.get(STORE_TARGET),
            )
        except StrongroomError as exc:
            raise batch.JobFailed(_prefixed(exc, "jdbc output")) from None
        timeout = service.settings.job_statement_timeout
        return batch.TableOutput(
            service.connector, where, user, password, output, job_id, timeout, generation, pooled, stopped
        )
    if output["type"] == "s3":
        location = s3_location(output, "outputSettings")
        keys = service.s3_keys(who, output, {**purpose, "side": "output"})
        part = max(5 * 1024 * 1024, service.settings.job_s3_part_bytes)
        try:
            return batch.S3Output(service.connector, location, keys, folder, options, part, keep_chunks)
        except StrongroomError as exc:
            raise batch.JobFailed(_prefixed(exc, "s3 output")) from None
    return _FileOutput(service, job_id, options)


class _FileOutput:
    """localFile output: one spool file per chunk, chunk 0 with the header."""

    def __init__(self, service: JobService, job_id: str, options: Mapping[str, str]) -> None:
        self.service, self.job_id, self.options = service, job_id, options

    def write(self, number: int, batch: Any, attempt: int = 2) -> int:
        from strongroom.services.batch import write_csv

        write_csv(batch, self.service.output_file(self.job_id, number), number == 0, self.options)
        return int(batch.num_rows)

    def finish(self, total: int) -> None:
        return None

    def discard(self) -> None:
        return None


def _prefixed(exc: StrongroomError, adapter: str) -> str:
    return exc.message if exc.message.startswith(adapter) else f"{adapter}: {exc.message}"


def principal_for(service: JobService, row: Mapping[str, Any]) -> Principal:
    """The job's owner as the runner acts for them: the owner's token id and the `use` scope; roles on what the
    job names are checked again when it runs. As for a request, the owner must be enabled and the token that
    created the job unrevoked and unexpired: otherwise the job FAILS (a denial audited) before any credential is
    opened."""
    from strongroom.services import batch

    who = Principal(
        user_id=row["owner_id"],
        username=row.get("owner") or row["owner_id"],
        token_id=row["token_id"],
        scopes=frozenset({"read", "use"}),
        request_id=f"job-{row['id']}",
    )
    found = service.jobs.token_expiry(row["token_id"], row["owner_id"])
    if found is None or expired(found[0]):
        reason = (
            "the job's owner may no longer act: the user is disabled, or the API token that created the job was "
            "revoked or has expired"
        )
        service.refuse(row["id"], who, reason)
        raise batch.JobFailed(reason)
    return who


def remove_spool(root: Path, job_id: str) -> None:
    """Delete a job's spooled intake and output."""
    shutil.rmtree(root / job_id, ignore_errors=True)


# ---- the PostgreSQL queue: `strongroom worker` processes -----------------------------------------------------


def _running(row: Mapping[str, Any] | None, generation: int) -> bool:
    return row is not None and row["status"] == "RUNNING" and row["generation"] == generation


Defer = Callable[[str, dict[str, Any], "str | None"], None]


class _GiveBack(Exception):
    """The worker is stopping: the producer stops reading and its job goes back to the queue."""


class QueuedJobs:
    """A job as procrastinate tasks run by any number of `strongroom worker` processes sharing the data directory.

    - `produce` (one per run of a job) reads the intake and spools each chunk (Arrow IPC, `in/<gen>-<n>.arrow`),
      records it PENDING and queues a `chunk` task, never more than `numConcurrent` chunks queued or running at
      once: that is how `numConcurrent` holds across workers.
    - `chunk` scores one chunk and writes it under its number (a spool file replaced whole, or the staging
      table's rows of that chunk replaced in one transaction), so a chunk run twice leaves one copy.
    - `finish` (queued once all chunks are DONE, under a procrastinate lock) moves the output into place.
    A task whose worker vanished is run again (procrastinate's stalled jobs, found by worker heartbeats, are
    retried by a periodic task of every worker); a producer run again starts a new generation, and chunk tasks
    of an earlier generation do nothing.
    """

    def __init__(self, service: JobService, defer: Defer, worker: str) -> None:
        from strongroom.services.heap import return_big_buffers

        return_big_buffers()
        self.service = service
        self.jobs = service.jobs
        self.defer = defer
        self.worker = worker
        self.stopping = threading.Event()  # set on SIGTERM: producers give their job back
        self._outputs: dict[tuple[str, int], tuple[Any, float]] = {}  # (job, generation) -> (table output, last use)
        self._outputs_lock = threading.Lock()
        self._opening = threading.Lock()  # held while an output is being opened

    def start(self, job_id: str) -> None:
        """Queue a job's producer."""
        self.defer("strongroom.produce", {"job_id": job_id}, None)

    def _guarded(self, job_id: str, step: Callable[[], None]) -> None:
        """Run a step of a job; a failure fails the job with its reason (the output discarded). A step that failed
        because its job was aborted or failed meanwhile (its statement cancelled) discards the output too: a
        finish stopped that way has no later step to clean up after it."""
        try:
            step()
        except _GiveBack:
            raise
        except Exception as exc:
            reason = exc.message if isinstance(exc, StrongroomError) else f"internal error ({type(exc).__name__})"
            if not isinstance(exc, StrongroomError):
                _log.error("job %s failed: %s", job_id, type(exc).__name__)
            if self.service.fail(job_id, reason) or self._ended(job_id):
                self._discard(job_id)

    def _ended(self, job_id: str) -> bool:
        """Whether the job was aborted or failed (not completed)."""
        row = self.jobs.get(job_id)
        return row is not None and row["status"] in STOPPED

    def _context(self, row: Mapping[str, Any]) -> tuple[dict[str, Any], Principal, dict[str, str], dict[str, Any]]:
        from strongroom.services import batch

        spec = json.loads(row["spec"])
        purpose = {"purpose": "batchJob", "jobId": row["id"]}
        return spec, principal_for(self.service, row), batch.csv_options(spec.get("csvSettings")), purpose

    def _table_output(
        self, job_id: str, generation: int, who: Principal, output: Mapping[str, Any], options: Any, purpose: Any
    ) -> Any:
        """A job's jdbc output in this worker, kept from chunk to chunk: its staging table is looked up once, its
        connections stay open, and the credential is opened (and its use audited) once per worker and run, not
        per chunk. `close_idle` closes what is no longer used."""
        key = (job_id, generation)
        with self._opening:  # one open at a time (rare: once per job): two chunks starting together open it once
            with self._outputs_lock:
                kept = self._outputs.get(key)
                if kept is not None:
                    self._outputs[key] = (kept[0], time.monotonic())
                    return kept[0]
            stopped = self._ends(job_id, generation)
            sink = open_sink(
                self.service, job_id, who, output, options, purpose, generation, pooled=True, stopped=stopped
            )
            with self._outputs_lock:
                self._outputs[key] = (sink, time.monotonic())
            return sink

    def _close_outputs(self, which: Callable[[tuple[str, int], float], bool]) -> None:
        """Close the kept outputs `which(key, last use)` picks (their connections to the store)."""
        with self._outputs_lock:
            picked = [key for key, (_, used) in self._outputs.items() if which(key, used)]
            closing = [self._outputs.pop(key)[0] for key in picked]
        for sink in closing:
            sink.close()

    def _forget_outputs(self, job_id: str) -> None:
        """Close what this worker keeps for the job (it ended, or moved its output into place)."""
        self._close_outputs(lambda key, _: key[0] == job_id)

    def close_idle(self) -> None:
        """Close the outputs no chunk of this worker used for `KEEP_OUTPUT_SECONDS` (their job ended elsewhere,
        or moved on to other workers): their connections to the store do not stay open."""
        now = time.monotonic()
        self._close_outputs(lambda _, used: now - used > KEEP_OUTPUT_SECONDS)

    def close(self) -> None:
        """Close every kept output (the worker is stopping)."""
        self._close_outputs(lambda _, __: True)

    def _discard(self, job_id: str) -> None:
        self._forget_outputs(job_id)
        row = self.jobs.get(job_id)
        if row is None:
            return
        try:  # a job whose owner may no longer act keeps what it staged: its credential is not opened
            spec, who, options, purpose = self._context(row)
            generation = int(row["generation"])
            open_sink(self.service, job_id, who, spec["outputSettings"], options, purpose, generation).discard()
        except StrongroomError:
            return
        finally:
            self.service.remove_spool(job_id)  # a task still writing sees the end after its write, and comes here

    def produce(self, job_id: str) -> None:
        """Read the intake into spooled chunks and queue them (a task); a stopping worker queues it again."""
        try:
            self._guarded(job_id, lambda: self._produce(job_id))
        except _GiveBack:
            _log.info("giving job %s back to the queue: this worker is stopping", job_id)
            self.start(job_id)

    def _produce(self, job_id: str) -> None:
        row = self.jobs.get(job_id)
        if row is not None and row["status"] == "ABORTED":
            self._discard(job_id)
        if row is None or row["status"] not in ACTIVE:
            return
        if not self.jobs.transition(
            job_id,
            ACTIVE,
            {"status": "RUNNING", "status_details": "Running", "started_at": row["started_at"] or utcnow()},
        ):
            return
        generation = self.jobs.next_generation(job_id)
        spec, who, options, purpose = self._context(row)
        folder = self.service.root / job_id
        shutil.rmtree(folder / "out", ignore_errors=True)
        (folder / "in").mkdir(parents=True, exist_ok=True, mode=0o700)
        sink = open_sink(self.service, job_id, who, spec["outputSettings"], options, purpose, generation)
        sink.discard()  # staging tables or an upload of earlier runs
        limit = int(spec["numConcurrent"])
        from strongroom.services import batch

        number = -1
        size = batch.chunk_size(spec, self.service.settings.job_chunk_rows)
        deployment, columns = _scoring(self.service, spec)
        raw = passes_csv_through(deployment, columns, spec["outputSettings"], options)
        intake = spec["intakeSettings"]
        # Parsing an s3 intake is left to the chunk tasks, on every worker: the one producer only cuts rows.
        copy = copies_slices(deployment, columns, intake, sink, options)
        # a read waiting on its store ends (its statement cancelled) when the job ends or the worker stops
        stopped = self._ends(job_id, generation)
        try:
            with open_intake(
                self.service, who, job_id, intake, size, options, purpose, raw, True, copy, stopped
            ) as chunks:
                try:
                    for number, chunk in enumerate(chunks):
                        while self.jobs.in_flight(job_id) >= limit:
                            if not self._current(job_id, generation):
                                return
                            if self.stopping.is_set():
                                raise _GiveBack
                            time.sleep(0.05)
                        if self.stopping.is_set():
                            raise _GiveBack
                        if not self._current(job_id, generation):
                            return
                        batch.spool_batch(chunk, folder / "in" / f"{generation}-{number:08d}.arrow")
                        self.jobs.chunk_queued(job_id, number, utcnow())
                        task = {"job_id": job_id, "number": number, "generation": generation}
                        self.defer("strongroom.chunk", task, None)
                except batch.JobFailed:
                    raise
                except StrongroomError as exc:
                    raise batch.JobFailed(_prefixed(exc, f"{spec['intakeSettings']['type']} intake")) from None
        except StrongroomError:
            if self.stopping.is_set():  # the read was cut short by the stop: another worker runs the job
                raise _GiveBack from None
            if not self._current(job_id, generation):  # it ended meanwhile (aborted): discarded there
                return
            raise
        if self._current(job_id, generation):
            self.jobs.set(job_id, {"total_chunks": number + 1})
            self._maybe_finish(job_id)

    def _current(self, job_id: str, generation: int) -> bool:
        """Whether the job still runs this generation. A job that ended (aborted or failed) has what it left
        discarded here: whichever of its tasks sees the end cleans up, since none may come after it."""
        row = self.jobs.get(job_id)
        if _running(row, generation):
            return True
        if row is not None and row["status"] in STOPPED:
            self._discard(job_id)
        return False

    def _ends(self, job_id: str, generation: int) -> Callable[[], bool]:
        """Whether a statement of the job's run should end now: the job ended (or started again), or the worker
        is stopping."""
        return lambda: self.stopping.is_set() or not self._runs(job_id, generation)

    def _runs(self, job_id: str, generation: int) -> bool:
        """Whether the job still runs this generation (nothing discarded)."""
        return _running(self.jobs.get(job_id), generation)

    def chunk(self, job_id: str, number: int, generation: int) -> None:
        """Score one spooled chunk and write it under its number (a task)."""
        self._guarded(job_id, lambda: self._chunk(job_id, number, generation))

    def _chunk(self, job_id: str, number: int, generation: int) -> None:
        from strongroom.services import batch

        row = self.jobs.get(job_id)
        if row is not None and row["status"] == "ABORTED":
            self._discard(job_id)  # what the aborted job staged
        if row is None or row["status"] != "RUNNING" or row["generation"] != generation:
            return
        spec, who, options, purpose = self._context(row)
        path = self.service.root / job_id / "in" / f"{generation}-{number:08d}.arrow"
        now = utcnow()
        attempt = self.jobs.chunk_started(job_id, number, self.worker, now, now + LEASE, generation)
        if not attempt:  # the job started again meanwhile: this chunk is an earlier run's
            return
        deployment, columns = _scoring(self.service, spec)
        scored = batch.scorer(deployment["entry_point"], columns)(batch.read_spooled(path))
        output = spec["outputSettings"]
        if output["type"] == "jdbc":
            sink = self._table_output(job_id, generation, who, output, options, purpose)
            try:
                rows = sink.write(number, scored, attempt)
            except batch.JobFailed:
                raise
            except StrongroomError as exc:
                raise batch.JobFailed(_prefixed(exc, "jdbc output")) from None
        else:  # localFile and s3: spooled under its number; s3 parts are cut by `finish`
            folder = self.service.root / job_id / "out"
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            batch.write_csv(scored, folder / f"{number:08d}.csv", number == 0, options)
            rows = scored.num_rows
        if not self._current(job_id, generation):  # discarded, if ended: this write may have come after
            return
        if not self.jobs.chunk_done(job_id, number, rows, utcnow(), generation):
            return
        path.unlink(missing_ok=True)
        self._maybe_finish(job_id)

    def _maybe_finish(self, job_id: str) -> None:
        row = self.jobs.get(job_id)
        if row is None or row["status"] != "RUNNING" or row["total_chunks"] is None:
            return
        chunks = self.jobs.chunks(job_id)
        if len(chunks) == row["total_chunks"] and all(c["status"] == "DONE" for c in chunks):
            self.defer("strongroom.finish", {"job_id": job_id}, f"finish-{job_id}")

    def finish(self, job_id: str) -> None:
        """Move the output into place and complete the job (a task; runs once per job at a time)."""
        self._guarded(job_id, lambda: self._finish(job_id))

    def _finish(self, job_id: str) -> None:
        from strongroom.services import batch

        row = self.jobs.get(job_id)
        if row is not None and row["status"] in STOPPED:
            self._discard(job_id)  # ended after its last chunk: nothing else will clean up
        if row is None or row["status"] != "RUNNING" or row["total_chunks"] is None:
            return
        total = int(row["total_chunks"])
        spec, who, options, purpose = self._context(row)
        output = spec["outputSettings"]
        self._forget_outputs(job_id)
        generation = int(row["generation"])
        stopped = self._ends(job_id, generation)
        sink = open_sink(self.service, job_id, who, output, options, purpose, generation, stopped=stopped)
        try:
            sink.finish(total)
        except batch.JobFailed:
            raise
        except StrongroomError as exc:
            raise batch.JobFailed(_prefixed(exc, f"{output['type']} output")) from None
        self.service.complete(job_id, total, output["type"])

    def fail_orphans(self, stalled_after: float, orphan_after: float) -> list[str]:
        """FAIL the RUNNING jobs nothing has moved for `orphan_after` seconds that nothing will move again: every
        worker vanished, or the job has no task left on the queue (a task that ended without finishing or
        failing it, e.g. when its worker lost the database mid-job); their ids."""
        workers = self.jobs.live_workers(stalled_after)
        failed = []
        now = utcnow()
        for row in self.jobs.with_status(("RUNNING",)):
            last = self.jobs.last_activity(row["id"]) or moment(row["started_at"] or row["created_at"])
            if (now - last).total_seconds() <= orphan_after:
                continue
            if workers == 0:
                reason = (
                    f"no strongroom worker has run this job for {int(orphan_after)} s (every worker stopped); "
                    "start `strongroom worker` and submit it again"
                )
            elif self.jobs.open_tasks(row["id"]) == 0:
                reason = (
                    f"this job has had no task on the queue for {int(orphan_after)} s: a step ended without "
                    "finishing it (see the workers' logs); submit it again"
                )
            else:
                continue
            if self.service.fail(row["id"], reason):
                self._discard(row["id"])
                failed.append(row["id"])
        return failed
