"""Batch-job benchmark (issue 16's targets): real jobs on a real server, each against a baseline run the same way.

1. S3 -> PostgreSQL table (`passthrough`, `insert` into a same-shaped table): rows/s vs PostgreSQL's own
   `COPY ... FROM STDIN` of the same CSV (psycopg `cursor.copy`).
2. PostgreSQL table -> S3 CSV: rows/s vs a plain boto3 `upload_fileobj` of the same CSV bytes.
3. Peak RSS (VmHWM) of the process that runs the job, a fresh process per job, at each size.
4. Two `strongroom worker` processes vs one on the largest S3 -> PostgreSQL job (server and workers on a
   PostgreSQL store).

The server runs as `strongroom serve` runs by default (SQLite store, embedded runner); S3 is the
signature-checking moto server of the tests; the target database is a throwaway database on the machine's
PostgreSQL reached through a data store and a stored basic credential. A job's time runs from its create request
to the moment the server recorded it finished; its status is polled every `POLL` seconds meanwhile.
Usage: `python -m bench.jobs [--sizes 100000,1000000] [--py-spy DIR] [--no-workers | --no-moves]`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from bench.server import PG_ADMIN_URL, PgDatabase, S3Peer, Server, s3_server
from strongroom.services.jobs import moment

T = TypeVar("T")
RESULTS = Path(__file__).parent / "results"
PASSTHROUGH = "5e0000000000000000000001"
COLUMNS = (
    "id bigint, customer text, city text, amount double precision, quantity bigint, ordered text, "
    "express boolean, score double precision, code text, note text"
)
CITIES = ("Amsterdam", "Berlin", "Copenhagen", "Dublin", "Edinburgh", "Frankfurt", "Geneva", "Helsinki")
WARM_ROWS = 1000
POLL = 0.25  # seconds between a job's status polls (the time measured is the server's, not the poll's)
TARGETS = {"s3-to-postgres": 0.50, "postgres-to-s3": 0.50, "rss-growth": 1.2, "two-workers": 0.65}


def make_csv(path: Path, rows: int) -> int:
    """Write `rows` deterministic rows of 10 columns (~100 bytes each) as CSV with a header; its size in bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(16)
    block = 100_000
    with pa.OSFile(str(path), "wb") as sink:
        writer = None
        for start in range(0, rows, block):
            n = min(block, rows - start)
            ids = np.arange(start, start + n, dtype=np.int64)
            table = pa.table(
                {
                    "id": ids,
                    "customer": pa.array([f"customer-{i % 50_000:07d}" for i in ids.tolist()]),
                    "city": pa.array([CITIES[i] for i in rng.integers(0, len(CITIES), n).tolist()]),
                    "amount": np.round(rng.uniform(0, 10_000, n), 2),
                    "quantity": rng.integers(1, 100, n),
                    "ordered": pa.array([f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in ids.tolist()]),
                    "express": rng.integers(0, 2, n).astype(bool),
                    "score": np.round(rng.random(n), 6),
                    "code": pa.array([f"{i * 2654435761 % 2**32:08x}" for i in ids.tolist()]),
                    "note": pa.array([f"order note {i % 997:03d}" for i in ids.tolist()]),
                }
            )
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
    return path.stat().st_size


def vm_hwm_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def load() -> str:
    """The machine's 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Measure:
    """One timed run: what, at what size, how long, rows/s, the peak RSS of the job's process(es), the load."""

    scenario: str
    rows: int
    seconds: float
    rows_per_s: float
    peak_rss_mib: float = 0.0
    load: str = field(default_factory=load)


class Profiler:
    """`py-spy record -r 200 -f raw --gil` on a process while a job runs (when enabled), into `folder`."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, pid: int, name: str) -> None:
        """Start recording `pid` into `folder/name.txt`."""
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if self.folder is None or spy is None:
            return
        out = self.folder / f"{name}.txt"
        cmd = [spy, "record", "-r", "200", "-f", "raw", "--gil", "-p", str(pid), "-o", str(out)]
        self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        """Stop every recording (py-spy writes its file on SIGINT)."""
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            proc.wait(timeout=60)
        self.procs.clear()


def _frame(raw: str) -> str:
    """`function (file)`: the file's base name, without the line (a function's lines add up)."""
    function, _, where = raw.rpartition(" (")
    return f"{function} ({where.rsplit('/', 1)[-1].rsplit(':', 1)[0]})" if function else raw


def summarise_profile(path: Path, top: int = 12) -> str:
    """The leaf functions (self) and any functions (inclusive) taking the most GIL-holding samples of a raw
    py-spy profile, as percentages."""
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        n = int(count)
        total += n
        leaf[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return f"{path.name}: no samples\n"
    out = [f"{path.name}: {total} samples holding the GIL", "  self:"]
    out += [f"    {n / total:6.1%}  {f}" for f, n in leaf.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(out) + "\n"


@dataclass
class Stack:
    """A running server (and workers) with a user, a PostgreSQL data store with a basic credential, and an s3
    credential: what a job needs, all by id."""

    server: Server
    api: httpx.Client
    store_id: str
    basic_id: str
    s3_id: str
    store: Any  # the store's services, for the moment a job finished
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def job(self, *, intake: dict[str, Any], output: dict[str, Any], chunk: int, concurrent: int) -> float:
        """Run a passthrough job to COMPLETED; the seconds from its create request to the moment the server
        recorded it finished (`finished_at`, the same clock). The status is polled only every `POLL` seconds:
        polls take CPU from the job they measure."""
        spec = {
            "deploymentId": PASSTHROUGH,
            "chunkSize": chunk,
            "numConcurrent": concurrent,
            "intakeSettings": intake,
            "outputSettings": output,
        }
        sent = time.time()
        created = self.api.post("batchPredictions/", json=spec)
        if created.status_code != 202:
            raise RuntimeError(f"job not created: {created.status_code} {created.text}")
        job_id = created.json()["id"]
        while True:
            resp = self.api.get(f"batchPredictions/{job_id}/")
            body = resp.json()
            status = (body.get("job") or body)["status"]
            if status == "COMPLETED":
                return moment(self.store.jobs.jobs.get(job_id)["finished_at"]).timestamp() - sent
            if status in ("FAILED", "ABORTED"):
                raise RuntimeError(f"job {status}: {(body.get('job') or body).get('statusDetails')}")
            gone = [w for w in self.workers if w.poll() is not None]
            if gone:  # the figure would be another worker count's: stop, and say why
                raise RuntimeError(f"a worker exited ({gone[0].returncode}) mid-job: see {self.server.data_dir.parent}")
            time.sleep(POLL)

    def job_pids(self) -> list[int]:
        """The processes that run jobs: the workers if any, else the server."""
        procs = self.workers or [self.server.proc]
        return [p.pid for p in procs if p is not None]


@contextmanager
def stack(
    workdir: Path,
    name: str,
    target: PgDatabase,
    s3: S3Peer,
    store_url: str | None,
    workers: int,
    concurrency: int = 2,
    pin: bool = False,
) -> Iterator[Stack]:
    """A fresh server (on `store_url`, or SQLite) with `workers` `strongroom worker --concurrency N` processes
    (worker i on core i with `pin`), set up for jobs."""
    from strongroom.bootstrap import Services
    from strongroom.config import Settings

    def core(i: int) -> list[str]:
        return ["taskset", "-c", str(i % (os.cpu_count() or 1))] if pin and shutil.which("taskset") else []

    server = Server(data_dir=workdir / name, database_url=store_url)
    server.start()
    procs: list[subprocess.Popen[bytes]] = []
    services = None
    try:
        services = Services.open(Settings(data_dir=server.data_dir, database_url=store_url))
        services.accounts.create_user("bench")
        token = services.accounts.create_token("bench")[1]
        for i in range(workers):
            log = (workdir / f"worker-{name}-{i}.log").open("ab")
            procs.append(
                subprocess.Popen(
                    [*core(i), sys.executable, "-m", "strongroom", "worker", "--concurrency", str(concurrency)],
                    env=server.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        api = httpx.Client(base_url=f"{server.base}/api/v2/", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        drivers = api.get("externalDataDrivers/").json()["data"]
        driver = next(d["id"] for d in drivers if d["databaseDriver"] == "postgres")
        host = PG_ADMIN_URL.split("@")[-1].rsplit("/", 1)[0]
        jdbc = f"jdbc:postgresql://{host}/{target.name}"
        store = api.post(
            "externalDataStores/",
            json={"type": "jdbc", "canonicalName": f"bench-{name}", "params": {"driverId": driver, "jdbcUrl": jdbc}},
        )
        user = PG_ADMIN_URL.split("://", 1)[1].split("@")[0].split(":")[0] or "postgres"
        basic = api.post("credentials/", json={"name": f"pg-{name}", "user": user, "password": "bench"})
        keys = api.post(
            "credentials/",
            json={
                "name": f"s3-{name}",
                "credentialType": "s3",
                "awsAccessKeyId": s3.access_key_id,
                "awsSecretAccessKey": s3.secret_access_key,
            },
        )
        for resp in (store, basic, keys):
            if resp.status_code != 201:
                raise RuntimeError(f"set-up failed: {resp.status_code} {resp.text}")
        ids = store.json()["id"], basic.json()["credentialId"], keys.json()["credentialId"]
        yield Stack(server, api, *ids, services, procs)
        api.close()
    finally:
        if services is not None:
            services.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.stop()


def patiently(step: Callable[[], T], seconds: float = 120) -> T:
    """Run `step`, again while PostgreSQL has no connection slot free (other suites share this server)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return step()
        except psycopg.OperationalError as exc:
            if "too many clients" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def connect(target: PgDatabase, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection to the target database (waiting for a free slot)."""
    return patiently(lambda: psycopg.connect(target.url.replace("+psycopg", ""), autocommit=autocommit))


def sql(target: PgDatabase, statement: str) -> Any:
    """Run one statement on the target database; the first column of the first row, if any."""
    with connect(target, autocommit=True) as conn:
        cur = conn.execute(statement)  # type: ignore[arg-type]
        return cur.fetchone()[0] if cur.description else None  # type: ignore[index]


def copy_baseline(target: PgDatabase, csv_path: Path, table: str) -> float:
    """Seconds for PostgreSQL's own COPY FROM STDIN of the CSV into a fresh same-shaped table (committed)."""
    sql(target, f"CREATE TABLE {table} ({COLUMNS})")
    with connect(target) as conn, csv_path.open("rb") as source:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN (FORMAT csv, HEADER true)") as copy:  # type: ignore[arg-type]
            while data := source.read(1 << 20):
                copy.write(data)
        conn.commit()
        return time.perf_counter() - started


def upload_baseline(s3: S3Peer, csv_path: Path, key: str) -> float:
    """Seconds for a plain boto3 `upload_fileobj` of the CSV to the same S3 server."""
    client = s3.client()
    with csv_path.open("rb") as source:
        started = time.perf_counter()
        client.upload_fileobj(source, s3.bucket, key)
        return time.perf_counter() - started


def s3_to_postgres(st: Stack, s3: S3Peer, key: str, table: str, kind: str) -> dict[str, Any]:
    """The job spec's intake and output of an S3 -> PostgreSQL job."""
    return {
        "intake": {"type": "s3", "url": f"{s3.url}/{key}", "credentialId": st.s3_id, "endpointUrl": s3.endpoint_url},
        "output": {"type": "jdbc", "dataStoreId": st.store_id, "credentialId": st.basic_id, "table": table,
                   "statementType": kind},
    }  # fmt: skip


def postgres_to_s3(st: Stack, s3: S3Peer, table: str, key: str) -> dict[str, Any]:
    """The job spec's intake and output of a PostgreSQL -> S3 job."""
    return {
        "intake": {"type": "jdbc", "dataStoreId": st.store_id, "credentialId": st.basic_id, "table": table},
        "output": {"type": "s3", "url": f"{s3.url}/{key}", "credentialId": st.s3_id, "endpointUrl": s3.endpoint_url},
    }


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every scenario at every size, each timed `--repeat` times (the fastest counts: on a shared machine the
    slower runs measure the neighbours); the measurements and the derived ratios."""
    sizes = [int(s) for s in args.sizes.split(",")]
    measures: list[Measure] = []
    spy_dir: Path | None = args.py_spy
    if spy_dir:
        spy_dir.mkdir(parents=True, exist_ok=True)
    profiler = Profiler(spy_dir)
    target = PgDatabase()
    patiently(target.create)
    stores: list[PgDatabase] = []
    chunk, concurrent, kind, repeat = args.chunk_size, args.num_concurrent, args.statement_type, args.repeat
    try:
        with s3_server() as s3:
            client = s3.client()
            # A warm-up job of each kind in each fresh process first: what is measured is moving rows, not
            # the first job's imports.
            warm = workdir / "warm.csv"
            make_csv(warm, WARM_ROWS)
            client.upload_file(str(warm), s3.bucket, "warm.csv")
            copy_baseline(target, warm, "warm")
            for rows in sizes:
                csv_path = workdir / f"in-{rows}.csv"
                size = make_csv(csv_path, rows)
                print(f"{rows} rows: {size / 1e6:.1f} MB CSV; load {load()}", flush=True)
                client.upload_file(str(csv_path), s3.bucket, f"in-{rows}.csv")
                if not args.moves:
                    continue

                times = [copy_baseline(target, csv_path, f"copy_{rows}_{i}") for i in range(repeat)]
                measures.append(Measure("copy-baseline", rows, min(times), rows / min(times)))
                for i in range(1, repeat):
                    sql(target, f"DROP TABLE copy_{rows}_{i}")
                times = []
                with stack(workdir, f"s3pg-{rows}", target, s3, None, 0) as st:
                    st.job(**s3_to_postgres(st, s3, "warm.csv", f"warm_{rows}", "create_table"), chunk=chunk,
                           concurrent=concurrent)  # fmt: skip
                    profiler.start(st.job_pids()[0], f"s3-to-postgres-{rows}")
                    for i in range(repeat):
                        table = f"job_{rows}_{i}"
                        if kind == "insert":
                            sql(target, f"CREATE TABLE {table} ({COLUMNS})")
                        times.append(st.job(**s3_to_postgres(st, s3, f"in-{rows}.csv", table, kind), chunk=chunk,
                                            concurrent=concurrent))  # fmt: skip
                        count = sql(target, f"SELECT count(*) FROM {table}")
                        if count != rows:
                            raise RuntimeError(f"the S3 -> PostgreSQL job wrote {count} rows of {rows}")
                        sql(target, f"DROP TABLE {table}")
                    profiler.stop()
                    rss = max(vm_hwm_mib(p) for p in st.job_pids())
                measures.append(Measure("s3-to-postgres", rows, min(times), rows / min(times), rss))

                times = []
                for _ in range(repeat):
                    times.append(upload_baseline(s3, csv_path, f"upload-{rows}.csv"))
                    client.delete_object(Bucket=s3.bucket, Key=f"upload-{rows}.csv")
                measures.append(Measure("upload-baseline", rows, min(times), rows / min(times)))
                times = []
                with stack(workdir, f"pgs3-{rows}", target, s3, None, 0) as st:
                    st.job(**postgres_to_s3(st, s3, "warm", f"warm-{rows}.csv"), chunk=chunk, concurrent=concurrent)
                    profiler.start(st.job_pids()[0], f"postgres-to-s3-{rows}")
                    for i in range(repeat):
                        key = f"out-{rows}-{i}.csv"
                        times.append(st.job(**postgres_to_s3(st, s3, f"copy_{rows}_0", key), chunk=chunk,
                                            concurrent=concurrent))  # fmt: skip
                        lines = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read().count(b"\n")
                        if lines != rows + 1:  # the header and every row once (no value here holds a newline)
                            raise RuntimeError(f"the PostgreSQL -> S3 job wrote {lines} lines for {rows} rows")
                        client.delete_object(Bucket=s3.bucket, Key=key)
                    profiler.stop()
                    rss = max(vm_hwm_mib(p) for p in st.job_pids())
                measures.append(Measure("postgres-to-s3", rows, min(times), rows / min(times), rss))
                sql(target, f"DROP TABLE copy_{rows}_0")
                print(f"  {measures[-4:]}", flush=True)

            if args.workers:
                rows = max(sizes)
                for count in (1, 2):
                    stores.append(PgDatabase())
                    patiently(stores[-1].create)
                    times = []
                    with stack(workdir, f"workers-{count}", target, s3, stores[-1].url, count,
                               args.worker_concurrency, args.pin_workers) as st:  # fmt: skip
                        # warm-up chunks of 4 KiB: every worker takes some (one 5 MB chunk would warm one worker)
                        st.job(**s3_to_postgres(st, s3, "warm.csv", f"warm_w{count}", "create_table"), chunk=4096,
                               concurrent=args.workers_concurrent)  # fmt: skip
                        for n, pid in enumerate(st.job_pids()):
                            profiler.start(pid, f"workers-{count}-{n}")
                        for i in range(repeat):
                            table = f"workers_{count}_{i}"
                            if kind == "insert":
                                sql(target, f"CREATE TABLE {table} ({COLUMNS})")
                            times.append(st.job(**s3_to_postgres(st, s3, f"in-{rows}.csv", table, kind), chunk=chunk,
                                                concurrent=args.workers_concurrent))  # fmt: skip
                            written = sql(target, f"SELECT count(*) FROM {table}")
                            if written != rows:
                                raise RuntimeError(f"{count} worker(s) wrote {written} rows of {rows}")
                            sql(target, f"DROP TABLE {table}")
                        profiler.stop()
                        rss = max(vm_hwm_mib(p) for p in st.job_pids())
                    measures.append(Measure(f"workers-{count}", rows, min(times), rows / min(times), rss))
                    print(f"  {measures[-1]}", flush=True)
    finally:
        profiler.stop()
        for db in [target, *stores]:
            patiently(db.drop)
    profiles = [summarise_profile(p) for p in sorted(spy_dir.glob("*.txt"))] if spy_dir else []
    return {"measures": [asdict(m) for m in measures], "ratios": ratios(measures, sizes), "profiles": profiles}


def ratios(measures: list[Measure], sizes: list[int]) -> list[dict[str, Any]]:
    """Each target's figure: a job's rows/s over its baseline's at each size, RSS growth, the workers' speed-up."""
    by = {(m.scenario, m.rows): m for m in measures}
    out: list[dict[str, Any]] = []
    for rows in sizes:
        for job, base in (("s3-to-postgres", "copy-baseline"), ("postgres-to-s3", "upload-baseline")):
            if (job, rows) not in by:
                continue
            ratio = by[(job, rows)].rows_per_s / by[(base, rows)].rows_per_s
            out.append({"figure": f"{job} / {base}", "rows": rows, "value": ratio, "target": f">= {TARGETS[job]}",
                        "met": ratio >= TARGETS[job], "load": by[(job, rows)].load})  # fmt: skip
    if len(sizes) > 1 and ("s3-to-postgres", min(sizes)) in by:
        low, high = min(sizes), max(sizes)
        for job in ("s3-to-postgres", "postgres-to-s3"):
            growth = by[(job, high)].peak_rss_mib / by[(job, low)].peak_rss_mib
            met = growth <= TARGETS["rss-growth"]
            out.append({"figure": f"peak RSS {job} {high} / {low} rows", "rows": high, "value": growth,
                        "target": "<= 1.2", "met": met, "load": by[(job, high)].load})  # fmt: skip
    if ("workers-1", max(sizes)) in by and ("workers-2", max(sizes)) in by:
        one, two = by[("workers-1", max(sizes))], by[("workers-2", max(sizes))]
        share = two.seconds / one.seconds
        out.append({"figure": "two workers' time / one worker's", "rows": one.rows, "value": share,
                    "target": "<= 0.65", "met": share <= TARGETS["two-workers"], "load": two.load})  # fmt: skip
    else:
        out.append({"figure": "two workers' time / one worker's", "rows": max(sizes), "value": None,
                    "target": "<= 0.65", "met": None, "load": "not measured (--no-workers)"})  # fmt: skip
    return out


def report(result: dict[str, Any], args: argparse.Namespace, out: Path) -> Path:
    """Write the table (markdown), the raw figures (JSON) and the plot; the markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{date.today().isoformat()}-jobs{args.suffix}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Batch-job benchmark, {date.today().isoformat()}",
        "",
        f"`python -m bench.jobs --sizes {args.sizes} --chunk-size {args.chunk_size} --num-concurrent "
        f"{args.num_concurrent} --workers-concurrent {args.workers_concurrent} --worker-concurrency "
        f"{args.worker_concurrency} --statement-type "
        f"{args.statement_type} --repeat {args.repeat}` (the fastest of the runs counts, for each job and each "
        f"baseline; peak RSS over all of a process's runs); {os.cpu_count()} cores shared with other work "
        "(load averages 1/5/15 min beside each figure). Jobs: the built-in passthrough deployment, in a fresh "
        f"server (or workers) after a {WARM_ROWS}-row warm-up job of the same kind, timed from the create "
        f"request to the moment the server recorded it finished (status polled every {POLL} s). S3 is the "
        "signature-checking moto server; PostgreSQL the machine's.",
        "",
        "| figure | rows | value | target | met | load |",
        "|---|---:|---:|---|---|---|",
    ]
    for r in result["ratios"]:
        value = "not measured" if r["value"] is None else f"{r['value']:.2f}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['figure']} | {r['rows']:,} | {value} | {r['target']} | {met} | {r['load']} |")
    lines += ["", "| run | rows | seconds | rows/s | peak RSS MiB | load |", "|---|---:|---:|---:|---:|---|"]
    for m in result["measures"]:
        rss = f"{m['peak_rss_mib']:.0f}" if m["peak_rss_mib"] else ""
        lines.append(
            f"| {m['scenario']} | {m['rows']:,} | {m['seconds']:.2f} | {m['rows_per_s']:,.0f} | {rss} | {m['load']} |"
        )
    if result["profiles"]:
        lines += ["", "## Where the GIL-holding CPU went (py-spy, 200 Hz, --gil)", "", "```"]
        lines += [p.rstrip() for p in result["profiles"]] + ["```"]
    md = stem.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    plot(result, stem.with_suffix(".png"))
    return md


def plot(result: dict[str, Any], path: Path) -> None:
    """One bar per figure (value over its target, so 1.0 is the line each must clear)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in result["ratios"] if r["value"] is not None]
    labels, heights = [], []
    for r in shown:
        limit = float(r["target"].split()[-1])
        better_high = r["target"].startswith(">=")
        labels.append(f"{r['figure']}\n{r['rows']:,} rows")
        heights.append(r["value"] / limit if better_high else limit / r["value"])
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(shown) + 1.5))
    colours = ["tab:green" if h >= 1 else "tab:red" for h in heights]
    ax.barh(labels, heights, color=colours)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("figure relative to its target (>= 1: target met)")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="rows per run, comma-separated")
    parser.add_argument(
        "--chunk-size", type=int, default=5_000_000, help="bytes per chunk (chunkSize, bytes as in DataRobot)"
    )
    parser.add_argument("--num-concurrent", type=int, default=2, help="chunks of a job at once (numConcurrent)")
    parser.add_argument("--workers-concurrent", type=int, default=4, help="numConcurrent of the workers' job")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=1,
        help="each worker's --concurrency (1: a worker per core, one chunk at a time, so the second worker is the "
        "scale-out measured; at 2, one worker already runs two chunks' COPYs on the two cores)",
    )
    parser.add_argument("--pin-workers", action="store_true", help="worker i on core i (taskset)")
    parser.add_argument(
        "--statement-type", default="create_table", choices=("create_table", "insert"), help="of the jdbc output"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (the fastest counts)")
    parser.add_argument("--no-moves", dest="moves", action="store_false", help="only the workers' runs")
    parser.add_argument("--no-workers", dest="workers", action="store_false", help="skip the workers' runs")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="profile each job's process with py-spy into DIR")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    parser.add_argument("--suffix", default="", help="appended to the results' file names")
    args = parser.parse_args(argv)
    # Stopped by a signal, the bench still stops its servers and drops its databases (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="strongroom-bench-jobs-"))
    try:
        result = run(args, workdir)
    except BaseException:
        for data in workdir.glob("*.csv"):
            data.unlink()
        print(f"the servers' and workers' logs are in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    md = report(result, args, args.out)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
