"""Benchmark: a real server process, a real load generator (wrk), ratios against a floor measured in the same run.

The server is pinned to one core and wrk to the other so they do not fight. Every figure that matters is a
ratio to the "floor" (bench/floor.py: the bare framework under the same server settings), so results compare
across machines. Usage: `python -m bench [--backend sqlite|postgres|all] [--duration 10] [--sizes 1000,10000,100000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import insert, literal, select

from bench.floor import FloorServer
from bench.server import PgDatabase, Server, free_port, pg_unreachable_reason
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.crypto.barrier import Binding
from strongroom.representation import render_credential
from strongroom.services.audit import Event
from strongroom.store.models import Credential, CredentialRole, new_id, utcnow
from strongroom.store.repositories.audit import append_in, pg_audited
from strongroom.store.repositories.credentials import index_all_names
from strongroom.store.repositories.sharing import rederive_all

HERE = Path(__file__).parent
LUA = HERE / "lua"
RESULTS = HERE / "results"
# Each scenario's baseline (a route of the bare floor app, bench/floor.py) and the target ratio to it.
BASELINES = {
    "healthz": "floor-get",
    "get": "floor-get",
    "get-shared": "floor-get",
    "list": "floor-page",
    "name": "floor-get",  # a list filtered to one name: one item
    "search": "floor-page",  # a page of 100 matches
    "search-prefix": "floor-page",
    "list-shared": "floor-page",
    "create": "floor-post",
    "update": "floor-post",
}
SCALED = ("get", "list", "name", "search", "search-prefix")  # the scenarios measured at each store size
TARGETS = {"get": 0.60, "list": 0.50, "create": 0.25, "update": 0.25}


@dataclass
class Result:
    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    ratio: float = 0.0
    store_size: int = 0
    cpu_us: float = 0.0  # server CPU time per request (all its processes): steadier than req/s on a busy machine
    db_cpu_us: float = 0.0  # PostgreSQL's CPU time per request (all its processes); 0 for SQLite


def wrk(script: str, url: str, env: dict[str, str], seconds: float, connections: int, core: str) -> dict[str, float]:
    """Run wrk pinned to `core` and return the JSON summary its Lua `done` hook prints."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(LUA / script), url]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", core, *cmd]
    out = subprocess.run(
        cmd, env={**os.environ, **env, "BENCH_LUA_DIR": str(LUA)}, capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    return json.loads(line.removeprefix("BENCH_JSON "))


# What users call their credentials: a team or project, a system, an environment and a short random tag.
TEAMS = ("finance", "growth", "marketing", "payments", "risk", "search", "ops", "platform", "sales", "support")
TEAMS += ("data", "ml", "infra", "billing", "identity", "mobile", "web", "research", "security", "hr")
SYSTEMS = ("warehouse", "snowflake", "redshift", "bigquery", "postgres", "mysql", "s3-raw", "s3-curated", "kafka")
SYSTEMS += ("databricks", "looker", "tableau", "airflow", "dbt", "salesforce", "hubspot", "stripe", "zendesk", "gcs")
ENVS = ("prod", "staging", "dev", "test", "qa", "sandbox")
PROJECT = "atlas"  # the team of every tenth of the first size's names only: `search@N` finds it at every size


def realistic_name(i: int, team: str | None = None) -> str:
    """The store's `i`-th name as users write them, e.g. `finance-warehouse-prod-7f3a9c` (distinct for every
    i < 2**24: the tag is i times an odd number modulo 2**24). No word holds a trigram of PROJECT."""
    tag = (i * 0x9E3779B1) % (1 << 24)
    team = team or TEAMS[tag % len(TEAMS)]
    return f"{team}-{SYSTEMS[(tag >> 5) % len(SYSTEMS)]}-{ENVS[(tag >> 10) % len(ENVS)]}-{tag:06x}"


def seed(
    service: Services, user_id: str, count: int, prefix: str, names: Callable[[int], str] | None = None
) -> list[str]:
    """Insert `count` sealed basic credentials quickly (bulk insert; each still gets its own data key), named
    `names(i)` for i in range(count), or `{prefix}-{i}`."""
    named = names or (lambda i: f"{prefix}-{i}")
    ids: list[str] = []
    batch = 5000
    for start in range(0, count, batch):
        rows = []
        for i in range(start, min(start + batch, count)):
            cred = Credential(id=new_id(), owner_id=user_id, credential_type="basic")
            binding = Binding(cred.id, user_id, "basic", 1, "{}")
            sealed = service.barrier.seal(binding, {"user": f"user{i}", "password": f"pw-{i}"})
            cred.key_version, cred.wrapped_key, cred.ciphertext = (
                sealed.key_version,
                sealed.wrapped_key,
                sealed.ciphertext,
            )
            now = utcnow()
            rows.append(
                {
                    "id": cred.id,
                    "owner_id": user_id,
                    "name": named(i),
                    "credential_type": "basic",
                    "description": "",
                    "public_data": "{}",
                    "key_version": cred.key_version,
                    "wrapped_key": cred.wrapped_key,
                    "ciphertext": cred.ciphertext,
                    "revision": 1,
                    "seal_generation": 1,
                    "created_at": now,
                    "updated_at": now,
                    "wire": render_credential((cred.id, named(i), "basic", "", "{}", now)),
                }
            )
        with service.db.write() as s:
            s.execute(insert(Credential), rows)
            index_all_names(s.connection())  # as a restore does: a bulk load leaves no name waiting for SQLite's index
        ids.extend(r["id"] for r in rows)
    # the bulk insert bypassed the per-owner counts that list pages' totalCount reads
    service.credentials.credentials.rebuild_counts()
    settle(service)
    return ids


def share_through_group(service: Services, owner_id: str, ids: list[str]) -> str:
    """A new user in a new group that holds CONSUMER on every one of `ids`; returns the user's token."""
    token, user_id = bench_user(service, "bench-consumer")
    username = next(u.username for u in service.accounts.list_users() if u.id == user_id)
    group = service.sharing.create_group(None, f"bench-team-{user_id[-6:]}")
    service.sharing.add_member(None, group.name, username)
    now = utcnow()
    rows = [
        {"credential_id": cid, "recipient_type": "group", "recipient_id": group.id, "role": 1, "can_share": False}
        | {"created_at": now}
        for cid in ids
    ]
    with service.db.write() as s:
        s.execute(insert(CredentialRole), rows)
        rederive_all(s)  # the derived access rows the sharing service would have written
    return token


def audit_write_cost(service: Services, records: int = 2000) -> float:
    """Microseconds of database work one audit record adds to a write, the commit the write pays anyway excluded.

    SQLite: `records` appended in one transaction (as the committer batches writes). PostgreSQL: each record in its
    own autocommit statement, as a write appends it (`pg_audited`), with asynchronous commit, minus as many bare
    statements, in alternating blocks (the median block counts; the record's own commit record is counted, so this
    errs high). Not all in one transaction there: updating one head row `records` times in one transaction
    makes each update walk the row's chain of versions, a cost no write pays."""
    entry = Event("bench.audit", 200, detail={"n": 1}).entry()
    if service.db.is_sqlite:
        started = time.perf_counter()
        service.db.transact(lambda tx: [append_in(tx, entry, postgres=False) for _ in range(records)])
        return (time.perf_counter() - started) / records * 1e6
    audited, bare, params = pg_audited(select(literal(1))), select(literal(1)), entry.params()
    block, extra = 100, []
    with service.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET synchronous_commit TO off")
        try:
            for _ in range(max(1, records // block)):
                started = time.perf_counter()
                for _ in range(block):
                    conn.execute(audited, params)
                middle = time.perf_counter()
                for _ in range(block):
                    conn.execute(bare)
                extra.append((middle - started) - (time.perf_counter() - middle))
        finally:
            conn.exec_driver_sql("RESET synchronous_commit")  # the pooled connection goes back as it came
    return max(0.0, statistics.median(extra) / block * 1e6)


def bench_user(service: Services, username: str) -> tuple[str, str]:
    """A new user and a token of theirs: (token, user id)."""
    service.accounts.create_user(username)
    token = service.accounts.create_token(username)[1]
    return token, service.accounts.authenticate(token).user_id


def settle(service: Services) -> None:
    """Do the upkeep a bulk load (or a write scenario) calls for before anything is measured, as pgbench does:
    otherwise PostgreSQL's autovacuum, analyze and checkpoint run in the middle of a later scenario, on any core
    (they had cut one GET figure by a quarter), and SQLite's WAL carries the seed into the first reads.
    CHECKPOINT needs a superuser (or pg_checkpoint); the bench's database user is one."""
    if service.db.is_sqlite:
        with service.db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    with service.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(
            "VACUUM (ANALYZE) credentials, credential_counts, api_tokens, users, credential_roles, credential_access, "
            "group_members"
        )
        conn.exec_driver_sql("CHECKPOINT")  # now, rather than spread over the next minutes of measurement


def _process_times() -> dict[int, tuple[int, float, str]]:
    """Every process's parent, user+system CPU seconds and command name, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name, rest = (entry / "stat").read_text().split(" (", 1)[1].rsplit(")", 1)
            except (OSError, IndexError, ValueError):
                continue
            fields = rest.split()
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, name)
    return stats


def cpu_seconds(root: int) -> tuple[float, float]:
    """CPU seconds of a process with all its descendants (uvicorn workers), and of every PostgreSQL process on
    the machine (its share of each request's cost), from one reading of /proc."""
    stats = _process_times()
    server, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        server += stats.get(pid, (0, 0.0, ""))[1]
        frontier += [child for child, (parent, _, _) in stats.items() if parent == pid]
    return server, sum(cpu for _, cpu, name in stats.values() if name.startswith("postgres"))


def pin_database(name: str, cores: str) -> None:
    """Pin the PostgreSQL backends serving database `name` (their process titles name it) to `cores`: on the
    load generator's core (the default), the server's core is the server's alone, as it is for the floor."""
    wanted = {int(c) for c in cores.split(",")}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if title.startswith("postgres:") and f" {name} " in title:
                os.sched_setaffinity(int(entry.name), wanted)
        except (OSError, PermissionError):
            continue  # gone, or not ours to pin


def measure(
    name: str,
    script: str,
    srv: Server | FloorServer,
    env: dict[str, str],
    args: argparse.Namespace,
    warm_up: float = 2,
) -> Result:
    url = srv.base
    if args.pace:
        env = {**env, "BENCH_PACE_MS": str(args.pace)}
    warm = min(warm_up, args.duration) if args.warm_up is None else args.warm_up
    if warm > 0:
        wrk(script, url, env, warm, args.connections, args.load_core)  # discarded
    assert srv.proc is not None
    if args.db_core and srv.database_url:
        pin_database(srv.database_url.rsplit("/", 1)[1], args.db_core)
    cpu_before, db_before = cpu_seconds(srv.proc.pid)
    s = wrk(script, url, env, args.duration, args.connections, args.load_core)
    cpu_after, db_after = cpu_seconds(srv.proc.pid)
    cpu, db_cpu = cpu_after - cpu_before, db_after - db_before
    rps = s["requests"] / (s["duration_us"] / 1e6)
    errors = int(s["errors_status"] + s["errors_socket"])
    per = 1e6 / max(1, s["requests"])
    db_cpu_us = db_cpu * per if srv.database_url else 0.0
    return Result(name, rps, s["p50_us"] / 1000, s["p99_us"] / 1000, errors, cpu_us=cpu * per, db_cpu_us=db_cpu_us)


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> list[Result]:
    pg = None
    database_url = None
    if backend == "postgres":
        pg = PgDatabase()
        pg.create()
        database_url = pg.url
    srv = Server(
        data_dir=workdir / backend,
        database_url=database_url,
        launcher=["taskset", "-c", args.server_core] if shutil.which("taskset") else [],
        extra_env={  # the server as `strongroom serve` runs by default: only the worker count may differ
            "STRONGROOM_WORKERS": str(args.workers),
            **dict(item.split("=", 1) for item in args.env),
        },
    )
    srv.start()
    service = Services.open(Settings(data_dir=srv.data_dir, database_url=database_url))
    try:
        token, user_id = bench_user(service, "bench")
        results: list[Result] = []
        base_env = {"BENCH_TOKEN": token, "BENCH_PREFIX": "load"}

        ids = seed(service, user_id, 1000, "seed")
        # Another owner's credentials beside them, as in any real store: with one owner in its statistics
        # PostgreSQL planned list pages differently (found when the second user of the scaling rows appeared).
        seed(service, bench_user(service, "bench-neighbour")[1], 1000, "neighbour")
        id_env = {**base_env, "BENCH_IDS": ",".join(ids[:1000])}
        # A consumer who sees the bench user's credentials through a group (the role is read on every request).
        shared_env = {"BENCH_TOKEN": share_through_group(service, user_id, ids), "BENCH_PREFIX": "shared"}
        floor_env = {**base_env, "BENCH_PREFIX": "floor"}
        scenarios = [
            ("floor-get", "path.lua", {**floor_env, "BENCH_PATH": "/floor"}),
            ("floor-page", "path.lua", {**floor_env, "BENCH_PATH": "/floor/page"}),
            ("floor-post", "create.lua", {**floor_env, "BENCH_PATH": "/floor"}),
            ("healthz", "path.lua", {**base_env, "BENCH_PATH": "/healthz"}),
            ("get", "get.lua", id_env),
            ("list", "path.lua", {**base_env, "BENCH_PATH": "/api/v2/credentials/?limit=100"}),
            ("get-shared", "get.lua", {**shared_env, "BENCH_IDS": id_env["BENCH_IDS"]}),
            ("list-shared", "path.lua", {**shared_env, "BENCH_PATH": "/api/v2/credentials/?limit=100"}),
            ("create", "create.lua", base_env),
            ("update", "update.lua", id_env),
            ("floor-get-again", "path.lua", {**floor_env, "BENCH_PATH": "/floor"}),
            ("floor-page-again", "path.lua", {**floor_env, "BENCH_PATH": "/floor/page"}),
            ("floor-post-again", "create.lua", {**floor_env, "BENCH_PATH": "/floor"}),
        ]
        args.audit_us = audit_write_cost(service)
        print(f"  {backend:8} audit record: {args.audit_us:.0f} us of database work per write", flush=True)
        floor_log = workdir / f"floor-{backend}.log"
        with FloorServer(free_port(), srv.env, srv.launcher, floor_log) as bare:
            for name, script, env in scenarios:
                if args.only and not name.startswith("floor") and name not in args.only:
                    continue
                settle(service)  # after create, autovacuum would otherwise visit the new rows during update
                target = bare if name.startswith("floor") else srv
                # A fresh server ran slower for its first seconds: the first scenario of each warms up longer.
                first = not any(r.scenario.startswith("floor") == name.startswith("floor") for r in results)
                results.append(measure(name, script, target, env, args, warm_up=6 if first else 2))
                r = results[-1]
                print(
                    f"  {backend:8} {name:16} {r.rps:6.0f} req/s p99 {r.p99_ms:6.2f} ms {r.cpu_us:5.0f} us", flush=True
                )
        # Each floor is measured first and last; the faster of the two is the baseline, so a slow start (or a
        # machine that slowed down) cannot flatter the ratios.
        floors = {base: max(r.rps for r in results if r.scenario.startswith(base)) for base in set(BASELINES.values())}
        for r in results:
            base = BASELINES.get(r.scenario)
            r.ratio = r.rps / floors[base] if base else r.rps / floors[r.scenario.removesuffix("-again")]
            r.store_size = 1000

        # Store-size scaling: a second user whose store grows; GET, list-page and name look-up latency at each
        # size (`--only` picks among them too). Their names are as users write them (`realistic_name`). `name`
        # finds one of the first seeded names (`?name=`, exact); `search` a project that every tenth of the first
        # size's names belongs to (`?search=Atlas`: 100 matches at 1 000 credentials and at 100 000, any case).
        # `search-prefix` is a trigram index's worst case, reported beside it: a third user's names all share a
        # prefix (`s1000-0` … `s100000-98999`, as the benchmark named everything before), and `S1000-7` finds
        # 111 of them, while four of its five trigrams are in every one of that user's names.
        scale_token, scale_user = bench_user(service, "bench-scale")
        have: list[str] = []
        scaled = [kind for kind in SCALED if not args.only or kind in args.only]
        small = args.sizes[0]
        if "search-prefix" in scaled:
            prefix_token, prefix_user = bench_user(service, "bench-prefix")
        for size in args.sizes if scaled else []:
            start = len(have)

            def named(i: int, start: int = start) -> str:
                n = start + i
                return realistic_name(n, PROJECT if n < small and n % 10 == 0 else None)

            have += seed(service, scale_user, size - start, "", named)
            if "search-prefix" in scaled:
                seed(service, prefix_user, size - start, f"s{size}")
            env = {"BENCH_TOKEN": scale_token, "BENCH_PREFIX": "scale"}
            for name, script, extra in (
                ("get", "get.lua", {"BENCH_IDS": ",".join(have[:: max(1, len(have) // 1000)][:1000])}),
                ("list", "path.lua", {"BENCH_PATH": "/api/v2/credentials/?limit=100"}),
                ("name", "path.lua", {"BENCH_PATH": f"/api/v2/credentials/?name={realistic_name(7)}"}),
                ("search", "path.lua", {"BENCH_PATH": f"/api/v2/credentials/?search={PROJECT.title()}"}),
                (
                    "search-prefix",
                    "path.lua",
                    {"BENCH_TOKEN": prefix_token, "BENCH_PATH": f"/api/v2/credentials/?search=S{small}-7"}
                    if "search-prefix" in scaled
                    else {},
                ),
            ):
                if name not in scaled:
                    continue
                short = argparse.Namespace(**{**vars(args), "duration": args.scale_duration})
                r = measure(f"{name}@{size}", script, srv, {**env, **extra}, short)
                r.ratio, r.store_size = r.rps / floors[BASELINES[name]], size
                results.append(r)
                print(f"  {backend:8} {r.scenario:20} p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms", flush=True)
        return results
    finally:
        service.close()
        srv.stop()
        if pg:
            pg.drop()


def report(backend: str, results: list[Result], args: argparse.Namespace) -> Path:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{date.today().isoformat()}-{backend}" + (f"-{args.workers}workers" if args.workers > 1 else "")
    if backend == "postgres" and args.db_core != args.load_core:
        stem += f"-db-core{args.db_core.replace(',', '-')}" if args.db_core else "-db-unpinned"
    lines = [
        f"# Strongroom benchmark: {backend}",
        "",
        f"{args.connections} connections, {args.duration} s per scenario (scaling rows {args.scale_duration} s), "
        f"wrk on core {args.load_core}, server on core {args.server_core}, {args.workers} worker(s), "
        + (
            f"PostgreSQL's backends for the bench on core {args.db_core}. "
            if args.db_core and backend == "postgres"
            else "PostgreSQL not pinned (the scheduler puts its backends on either core). "
            if backend == "postgres"
            else ""
        )
        + "Store size = the credentials of the user whose token reads them; the table also holds another "
        "owner's 1 000 (and, in the scaling rows, the first user's and the other scaling user's). Scaling rows: "
        "`search` finds 100 names as users write them (`?search=Atlas`, a project's); `search-prefix` 111 of "
        "names that all share a prefix (`?search=S1000-7` among `s1000-…`, `s100000-…`), a trigram index's "
        "worst case. "
        "Ratio = requests/s relative to the bare-framework floor in this run (bench/floor.py: a plain Starlette "
        "app with no middleware, served by the same function and settings as `strongroom serve`): GET and "
        "/healthz against the floor's GET, the list page against its 100-item page, create and update against "
        "its POST. Each floor is measured first and again last; the faster of the two is the baseline. "
        "CPU ratio = the baseline's server CPU time per request over the scenario's: what the ratio would be on "
        "a quiet machine where the server's core is the bottleneck. PostgreSQL CPU µs/req = the CPU time of all "
        "PostgreSQL processes per request.",
        "",
        "| scenario | store size | requests/s | p50 ms | p99 ms | non-2xx/errors | ratio to floor | target "
        "| server CPU µs/req | CPU ratio | PostgreSQL CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def floor_cpu(scenario: str) -> float:
        base = BASELINES.get(scenario.split("@")[0], scenario.removesuffix("-again"))
        return min((r.cpu_us for r in results if r.scenario.startswith(base)), default=0.0)

    for r in results:
        target = TARGETS.get(r.scenario)
        verdict = "" if target is None else f"≥ {target:.0%} {'✅' if r.ratio >= target else '❌'}"
        cpu_ratio = floor_cpu(r.scenario) / r.cpu_us if r.cpu_us else 0.0
        lines.append(
            f"| {r.scenario} | {r.store_size} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} "
            f"| {r.ratio:.0%} | {verdict} | {r.cpu_us:.0f} | {cpu_ratio:.0%} | {r.db_cpu_us:.0f} |"
        )
    by = {r.scenario: r for r in results}
    small, large = min(args.sizes), max(args.sizes)
    for kind in SCALED:
        a, b = by.get(f"{kind}@{small}"), by.get(f"{kind}@{large}")
        if a and b and large > small:
            growth = b.p50_ms / a.p50_ms
            lines.append(f"\n{kind}: p50 at {large} is {growth:.2f}x the p50 at {small} (target <= 1.5x)")
    if getattr(args, "audit_us", None):
        lines.append(
            f"\nAudit: each write also appends one hash-chained record in its transaction, {args.audit_us:.0f} µs of "
            "database work per record (the commit the write pays anyway excluded; measured as `audit_write_cost` in "
            "bench/run.py says)"
        )
    get = by.get("get")
    if get:
        lines.append(f"\nGET p99 at {args.connections} connections: {get.p99_ms:.2f} ms (target < 20 ms)")
    path = out / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    plot(backend, results, args, out / f"{stem}.png")
    print("\n".join(lines))
    return path


def plot(backend: str, results: list[Result], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in results if "@" not in r.scenario]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bars = left.bar([r.scenario for r in main], [r.rps for r in main], color="#4c72b0")
    for bar, r in zip(bars, main, strict=True):
        left.annotate(f"{r.ratio:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    left.set_title(f"Throughput ({backend}, {args.connections} conns); label = ratio to floor")
    left.set_ylabel("requests/s")
    colors = {"get": "#55a868", "list": "#c44e52", "name": "#8172b2", "search": "#ccb974", "search-prefix": "#64b5cd"}
    for kind, color in colors.items():
        pts = sorted((r.store_size, r.p50_ms, r.p99_ms) for r in results if r.scenario.startswith(f"{kind}@"))
        if pts:
            sizes = [p[0] for p in pts]
            right.plot(sizes, [p[1] for p in pts], "o-", color=color, label=f"{kind} p50")
            right.plot(sizes, [p[2] for p in pts], "o--", color=color, alpha=0.6, label=f"{kind} p99")
    right.set_xscale("log")
    right.set_xlabel("credentials in the store")
    right.set_ylabel("latency (ms)")
    right.set_title("Latency against store size")
    if right.lines:
        right.legend()
    else:
        right.text(0.5, 0.5, "not measured in this run", ha="center", va="center", transform=right.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--scale-duration", type=float, default=5)
    parser.add_argument(
        "--warm-up",
        type=float,
        help="seconds of discarded load before each measurement (default: 6 for the first of a server, then 2; "
        "0: none, for a smoke run that only checks every scenario answers)",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--pace",
        type=int,
        default=0,
        metavar="MS",
        help="each connection waits MS ms between requests: a smoke run that checks every scenario answers without "
        "loading the machine (its figures then measure nothing)",
    )
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 10000, 100000])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", type=lambda v: v.split(","), default=[], help="scenarios to run, e.g. get,create")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="server setting, e.g. STRONGROOM_STORE_THREADS=4",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go (default bench/results)")
    parser.add_argument("--server-core", default="1")
    parser.add_argument("--load-core", default="0")
    parser.add_argument(
        "--db-core",
        help="pin PostgreSQL's backends for the bench to these cores, or 'none' (default: the load generator's)",
    )
    args = parser.parse_args(argv)
    # Unpinned, the scheduler put PostgreSQL's backends on the server's core in some runs and not in others:
    # GET measured 54 % of the floor with them there and 73 % on the load generator's core, in one run.
    args.db_core = args.load_core if args.db_core is None else "" if args.db_core == "none" else args.db_core
    if shutil.which("wrk") is None:
        print("wrk is not installed: `apt-get install wrk` (make bench does this)", file=sys.stderr)
        return 2
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    if "postgres" in backends and (reason := pg_unreachable_reason()):
        print(f"skipping PostgreSQL: {reason}")
        backends.remove("postgres")
    with tempfile.TemporaryDirectory(prefix="strongroom-bench-") as tmp:
        for backend in backends:
            started = time.monotonic()
            print(f"== {backend}", flush=True)
            results = run_backend(backend, args, Path(tmp))
            print(f"wrote {report(backend, results, args)} ({time.monotonic() - started:.0f} s)")
    return 0
