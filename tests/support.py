"""Everything the tests share, in one module: no test file imports another, and conftest files only define
fixtures on top of what is here.

- Processes and stores: `Server` (a `strongroom serve` child), `backend_database`, `postgres_store`, `PgDatabase`.
- Services in-process: `memory_services` (a migrated temporary SQLite store with a test key provider),
  `new_principal`, `make_credential`, `fetch_credential`, `secrets_of`, `open_service`.
- HTTP: `assert_error` (the error contract), `LeakGuard`, credential bodies built from the type declarations,
  `create`/`create_basic`, `follow_pages`, `client`.
- Real peers of data stores: `scram_postgres`, `mariadb_user`, and `s3_server` (a signature-checking moto S3).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from bench import server as bench_server

from strongroom import credential_types
from strongroom.bootstrap import Services
from strongroom.client.client import tls_context
from strongroom.config import Settings
from strongroom.crypto.barrier import Binding
from strongroom.crypto.envelope import Sealed
from strongroom.crypto.keys import Keyring
from strongroom.services.accounts import Principal
from strongroom.store.db import Database
from strongroom.store.repositories.credentials import _NAMES_BEHIND

# ---- processes and stores ---------------------------------------------------------------------------------

# The PostgreSQL server, free ports and throwaway databases: the bench's launcher has them (bench/ imports nothing
# from tests/, so the tests take them from there).
PG_ADMIN_URL = bench_server.PG_ADMIN_URL
PgDatabase = bench_server.PgDatabase
free_port = bench_server.free_port
pg_unreachable_reason = bench_server.pg_unreachable_reason
S3Peer = bench_server.S3Peer


@contextmanager
def backend_database(backend: str, *, migrated: bool = False) -> Iterator[str | None]:
    """The database URL for a test on `backend`: None (SQLite in the data directory), or a throwaway PostgreSQL
    database dropped afterwards, empty or with `migrated` a copy of an already migrated one (`migrated_template`:
    for tests about what runs on the schema, not about migrating it); skips, saying why, when PostgreSQL is
    unreachable."""
    if backend == "sqlite":
        yield None
        return
    if reason := pg_unreachable_reason():
        pytest.skip(reason)
    pg = PgDatabase()
    if migrated:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg.name}" TEMPLATE "{migrated_template()}"')
    else:
        pg.create()
    try:
        yield pg.url
    finally:
        pg.drop()


_TEMPLATE: list[str] = []


def migrated_template() -> str:
    """The name of this process's PostgreSQL database at the migrations' head, made on first use and dropped when
    the process exits. Copying it (`CREATE DATABASE … TEMPLATE`) takes a tenth of the time migrating takes."""
    if not _TEMPLATE:
        import atexit

        template = PgDatabase(name="strongroom_tpl_" + secrets.token_hex(4))
        template.create()
        atexit.register(template.drop)
        database = Database(template.url)
        try:
            database.migrate()
        finally:
            database.dispose()  # a template must have no connection while it is copied
        _TEMPLATE.append(template.name)
    return _TEMPLATE[0]


@contextmanager
def postgres_store() -> Iterator[Any]:
    """A migrated `Database` on a throwaway PostgreSQL database, disposed and dropped afterwards (skips, saying
    why, when PostgreSQL is unreachable)."""
    with backend_database("postgres", migrated=True) as url:
        assert url is not None
        database = Database(url)
        database.migrate()  # at head already: checks the revision only
        try:
            yield database
        finally:
            database.dispose()


def default_signals() -> None:
    """`preexec_fn` for children the tests interrupt: SIGINT handled as usual (KeyboardInterrupt) even when the
    test run itself ignores it (`nohup make test &`, `trap '' INT`), since an ignored signal stays ignored
    across exec and Python then installs no handler of its own."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_in_process(
    args: list[str], env: Mapping[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `strongroom ARGS` through the CLI's own entry point (its error wrapper included) in this process, with
    exactly `env` for Strongroom's variables, stdin from `input` (never a terminal) and stdout/stderr captured;
    what a command changes for its process (umask, SIGINT handler, the SDK's default client) is put back."""
    from typer.testing import CliRunner

    from strongroom.cli.main import main
    from strongroom.cli.output import forget_consoles
    from strongroom.client.client import set_client

    overrides: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("STRONGROOM_", "DATAROBOT_"))}
    overrides.update(env)
    umask = os.umask(0o077)
    os.umask(umask)
    sigint = signal.getsignal(signal.SIGINT)
    previous_client = set_client(None)
    code: int | str | None = 0
    try:
        with CliRunner().isolation(input=input, env=overrides) as (out, err, _):
            forget_consoles()
            try:
                main(args)
            except SystemExit as exc:
                code = exc.code
            finally:
                forget_consoles()
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        os.umask(umask)
        signal.signal(signal.SIGINT, sigint)
        set_client(previous_client)
    status = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["strongroom", *args], status, stdout, stderr)


@dataclass
class Server:
    """A `strongroom serve` child process with its own data directory and log file."""

    data_dir: Path
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    launcher: list[str] = field(default_factory=list)  # e.g. ["taskset", "-c", "1"] for benchmarks
    proc: subprocess.Popen[bytes] | None = None
    _services: Services | None = field(default=None, repr=False, compare=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.base}/api/v2"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.data_dir.name}.log"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRONGROOM_", "DATAROBOT_"))}
        env["STRONGROOM_DATA_DIR"] = str(self.data_dir)
        env["STRONGROOM_PORT"] = str(self.port)
        # Every test client shares 127.0.0.1, so the suite's deliberate bad tokens would add up to a 429;
        # the limit is still counted on every 401, and test_abuse.py sets a small one to test it.
        env["STRONGROOM_AUTH_FAILURE_LIMIT"] = "1000000"
        if self.database_url:
            env["STRONGROOM_DATABASE_URL"] = self.database_url
            # One PostgreSQL of 100 connections serves the whole run: by default a server keeps up to 36 open
            # (two pools of 10, 16 on the event loop), and the session's servers beside a concurrent test once
            # left it no connection to give ("too many clients"). Small pools still queue, never refuse.
            env.update(STRONGROOM_DB_POOL_SIZE="2", STRONGROOM_DB_POOL_OVERFLOW="8", STRONGROOM_STORE_THREADS="4")
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.launcher, sys.executable, "-m", "strongroom", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=default_signals,
        )
        deadline = time.monotonic() + timeout
        with http_client(timeout=1) as probe:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
                try:
                    if probe.get(f"{self.base}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log_path.read_text()}")

    def __enter__(self) -> Server:
        """Started; stopped on leaving the block, whatever happened in it."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, sig: int | None = None) -> None:
        if self._services is not None:
            self._services.close()
            self._services = None
        if self.proc is not None and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def cli(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        process: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the `strongroom` CLI against this server's data and endpoint (`env` added to its environment):
        in this process (the command's logic, at a fraction of a start-up's cost), or as a real subprocess with
        `process=True` or from a thread other than the main one (what only a process shows: its exact console
        output, exit status and interpreter warnings; concurrent commands)."""
        env = {**self.env, "STRONGROOM_ENDPOINT": self.api, "COLUMNS": "200", **(env or {})}
        if process or threading.current_thread() is not threading.main_thread():  # one process, one sys.stdout
            result = subprocess.run(
                [sys.executable, "-m", "strongroom", *args],
                env=env,
                input=input,
                capture_output=True,
                text=True,
                timeout=60,
            )
        else:
            result = cli_in_process(list(args), env=env, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"strongroom {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def new_user(self, prefix: str = "user", *, admin: bool = False) -> str:
        """Create a user (an administrator with `admin`) with a token through the service (fast), returning the
        raw token. The services stay open until the server stops: opening them (migrations checked, keys
        verified against every stored version) cost more than the user."""
        if self._services is None:
            self._services = Services.open(Settings(data_dir=self.data_dir, database_url=self.database_url))
        username = f"{prefix}-{secrets.token_hex(4)}"
        self._services.accounts.create_user(username, admin=admin)
        return self._services.accounts.create_token(username)[1]


def start_worker(server: Server, name: str, *args: str) -> subprocess.Popen[bytes]:
    """A `strongroom worker` child on the server's store and data directory, logging beside the server's log."""
    log = (server.data_dir.parent / f"worker-{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "strongroom", "worker", *args],
        env=server.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=default_signals,
    )


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

# The files that take longest, longest first (seconds of a parallel run, measured 2026-12-06), which the conftest
# hands to the workers before every other file: with whole files per worker (`--dist loadfile`), a long file handed
# out late is the run's tail, while short ones fill the end. The rest keep their collection order (end-to-end,
# integration, then unit files). A file listed here that no longer exists fails tests/unit/test_test_layout.py.
SLOW_FIRST = (
    "tests/e2e/test_keys.py",
    "tests/e2e/test_workers.py",
    "tests/e2e/test_jobs.py",
    "tests/e2e/test_oauth.py",
    "tests/e2e/test_reliability.py",
    "tests/e2e/test_fuzz.py",
    "tests/e2e/test_bench.py",
    "tests/e2e/test_client_install.py",
    "tests/e2e/test_accounts.py",
    "tests/integration/test_backup.py",
    "tests/integration/test_sharing.py",
    "tests/e2e/test_races.py",
    "tests/e2e/test_api_auth.py",
    "tests/e2e/test_security.py",
    "tests/e2e/test_permissions_datastores.py",
    "tests/e2e/test_multiprocess.py",
    "tests/integration/test_name_filters.py",
    "tests/integration/test_retire_backups.py",
)
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def canary() -> str:
    """A fresh, recognisable secret value."""
    return "canary-" + secrets.token_hex(12)


def canary_body(ctype: credential_types.CredentialType, planted: list[str]) -> dict[str, Any]:
    """A valid create body whose every secret value is a fresh canary (recorded in `planted`)."""
    body: dict[str, Any] = {"name": f"{ctype.name}-{secrets.token_hex(3)}", "credentialType": ctype.name}
    for f in ctype.fields:
        if f.name == ctype.exclusive:
            continue
        if f.kind == "object":
            value: Any = {"type": "service_account", "private_key": canary(), "client_email": canary()}
            planted.extend([value["private_key"], value["client_email"]])
        elif f.kind == "string_list":
            value = ["scope.read"]
        else:
            value = canary() if f.secret else f"public-{f.name}"
            if f.secret:
                planted.append(value)
        body[f.name] = value
    return body


def stored_bytes(server: Server, tmp_path: Path) -> bytes:
    """Everything the database holds on disk (SQLite file + WAL + SHM) or a full dump (PostgreSQL)."""
    if server.database_url is None:
        db = server.data_dir / "strongroom.db"
        return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        pytest.skip("pg_dump not installed: cannot scan the PostgreSQL database")
    url = server.database_url.replace("postgresql+psycopg://", "postgresql://")
    return subprocess.run([pg_dump, "--data-only", url], capture_output=True, check=True).stdout


# ---- services in-process --------------------------------------------------------------------------------------


@contextmanager
def memory_services(directory: Path) -> Iterator[Services]:
    """Services over a freshly migrated SQLite file in `directory` and a test key provider (one random key,
    version 1, held in memory): no server process, no key file, no key check."""
    database = Database(f"sqlite:///{directory / 'unit.db'}")
    database.migrate()
    try:
        yield Services.build(database, Keyring({1: os.urandom(32)}, 1, "test"))
    finally:
        database.dispose()


def named_user(server: Server, prefix: str) -> tuple[str, str]:
    """(username, all-scope token) of a new user named after `prefix`, made in the server's own store."""
    services = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        username = unique(prefix)
        services.accounts.create_user(username)
        return username, services.accounts.create_token(username)[1]
    finally:
        services.close()


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """`check()`'s first truthy answer, asked every 0.1 s; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.1)
    return found


def wait_for_job(api: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The batch job once it has ended (the 409 body's job for a FAILED one); fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = api.get(f"batchPredictions/{job_id}/")
        job = resp.json()["job"] if resp.status_code == 409 else resp.json()
        if job["status"] in ("COMPLETED", "FAILED", "ABORTED"):
            return dict(job)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end in {timeout} s: {job}")


def new_principal(services: Services, prefix: str = "user") -> Principal:
    """A fresh user, authenticated through a new token of all scopes."""
    username = unique(prefix)
    services.accounts.create_user(username)
    return services.accounts.authenticate(services.accounts.create_token(username)[1])


@contextmanager
def open_service(server: Server) -> Iterator[Services]:
    """The server's own store, opened beside it, to mint expired, revoked or scoped tokens."""
    service = Services.open(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        yield service
    finally:
        service.close()


def names_waiting(services: Services) -> int:
    """SQLite: how many credentials' names wait to join the trigram index of names (migration 0017)."""
    with services.db.engine.connect() as conn:
        return int(conn.exec_driver_sql(_NAMES_BEHIND).scalar_one())


def names_indexed(services: Services, phrase: str) -> int:
    """SQLite: how many names the trigram index itself holds for `phrase`."""
    with services.db.engine.connect() as conn:
        sql = "SELECT count(*) FROM credential_names WHERE credential_names MATCH ?"
        return int(conn.exec_driver_sql(sql, (f'"{phrase}"',)).scalar_one())


def make_credential(services: Services, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create a credential through the service; its API JSON as a dict."""
    return orjson.loads(services.credentials.create(who, body))  # type: ignore[no-any-return]


def fetch_credential(services: Services, who: Principal, credential_id: str) -> dict[str, Any]:
    """Get a credential through the service; its API JSON as a dict."""
    return orjson.loads(services.credentials.get(who, credential_id)[0])  # type: ignore[no-any-return]


def secrets_of(services: Services, row: Any) -> dict[str, Any]:
    """The secret fields of a stored credential row (an ORM `Credential`), through the barrier."""
    sealed = Sealed(row.key_version, bytes(row.wrapped_key), bytes(row.ciphertext))
    return services.barrier.open(binding_of(row), sealed)


def binding_of(row: Any) -> Binding:
    """What a stored credential row (an ORM `Credential`) is sealed to."""
    return Binding(row.id, row.owner_id, row.credential_type, row.seal_generation, row.public_data)


# ---- HTTP -------------------------------------------------------------------------------------------------------

HEX24 = re.compile(r"^[0-9a-f]{24}$")
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
BASE_KEYS = {"credentialId", "name", "credentialType", "description", "creationDate", "role"}
LIST_KEYS = {"count", "next", "previous", "data", "totalCount"}
BODY_LIMIT: int = Settings.model_fields["max_body_bytes"].default  # the server under test runs with defaults
EXCLUSIVE_TYPES = [name for name, t in credential_types.TYPES.items() if t.exclusive]
SECRET_TYPES = [name for name, t in credential_types.TYPES.items() if any(f.secret for f in t.fields)]
UNKNOWN_ID = "0123456789abcdef01234567"


def assert_error(resp: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """Every error the DataRobot client can meet: exact status, `Content-Type: application/json` (anything
    else makes the client crash or mangle the text, spec §6) and a `message` string. With `field`, the
    message names it and the `errors` dict has it as a key."""
    where = f"{resp.request.method} {resp.request.url}"
    assert resp.status_code == status, f"{where}: expected {status}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("content-type") == "application/json", f"{where}: {resp.headers.get('content-type')}"
    body = resp.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str) and body["message"], body
    if field is not None:
        assert field in body["message"], f"message does not name {field!r}: {body['message']}"
        assert isinstance(body.get("errors"), dict) and field in body["errors"], body
    return body


def unique(prefix: str = "cred") -> str:
    """A name no other test uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


class LeakGuard:
    """Hands out unique secret values and remembers every response body, to prove none is ever echoed."""

    def __init__(self) -> None:
        self.planted: list[str] = []
        self.bodies: list[bytes] = []

    def secret(self, label: str = "s") -> str:
        value = f"canary-{label}-{secrets.token_hex(10)}"
        self.planted.append(value)
        return value

    def record(self, resp: httpx.Response) -> None:
        resp.read()
        self.bodies.append(resp.content)

    def check(self) -> None:
        for value in self.planted:
            leaked = [b for b in self.bodies if value.encode() in b]
            assert not leaked, f"secret {value!r} echoed in a response: {leaked[0][:300]!r}"


def field_value(f: credential_types.Field, guard: LeakGuard) -> Any:
    """A valid value for one declared field; secret strings are canaries."""
    if f.kind == "object":
        return {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": guard.secret("pkid"),
            "private_key": guard.secret("pk"),
            "client_email": guard.secret("email"),
        }
    if f.kind == "string_list":
        return ["scope.read", "scope.write"]
    return guard.secret(f.name) if f.secret else f"public-{f.name}-{secrets.token_hex(3)}"


def complete_body(ctype: credential_types.CredentialType, guard: LeakGuard, **extra: Any) -> dict[str, Any]:
    """A complete create body for `ctype`: every declared field except the exclusive reference (configId)."""
    body: dict[str, Any] = {"name": unique(ctype.name), "credentialType": ctype.name}
    for f in ctype.fields:
        if f.name != ctype.exclusive:
            body[f.name] = field_value(f, guard)
    body.update(extra)
    return body


def public_part(ctype: credential_types.CredentialType, body: dict[str, Any]) -> dict[str, Any]:
    """The fields of `body` a response may show: the type's public (non-secret) fields."""
    return {k: v for k, v in body.items() if (f := ctype.field(k)) is not None and not f.secret}


def assert_credential(obj: Any, ctype: credential_types.CredentialType, body: dict[str, Any]) -> None:
    """The credential object of spec §2: DataRobot's five keys plus only the type's public fields."""
    assert isinstance(obj, dict), obj
    expected_public = public_part(ctype, body)
    assert set(obj) == BASE_KEYS | set(expected_public), f"keys {sorted(obj)}"
    assert HEX24.match(obj["credentialId"]), obj["credentialId"]
    assert obj["name"] == body["name"]
    assert obj["credentialType"] == ctype.name
    assert obj["description"] == body.get("description", "")
    assert ISO_Z.match(obj["creationDate"]), obj["creationDate"]
    created = datetime.fromisoformat(obj["creationDate"])
    assert created.tzinfo is not None and abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    for key, value in expected_public.items():
        assert obj[key] == value, key


def create(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post("credentials/", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.headers.get("content-type") == "application/json"
    result: dict[str, Any] = resp.json()
    return result


def create_basic(api: httpx.Client, name: str | None = None, **extra: Any) -> dict[str, Any]:
    return create(api, {"name": name or unique("basic"), "user": "u", "password": "p", **extra})


def follow_pages(api: httpx.Client, first: httpx.Response) -> list[dict[str, Any]]:
    """Walk `next` links exactly as the DataRobot client does (absolute URLs, followed verbatim)."""
    pages, resp = [], first
    while True:
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) == LIST_KEYS and page["count"] == len(page["data"]), page
        pages.append(page)
        if page["next"] is None:
            return pages
        assert len(pages) < 50, "next links do not terminate"
        resp = api.get(page["next"])


def list_names(api: httpx.Client, **params: Any) -> list[str]:
    pages = follow_pages(api, api.get("credentials/", params=params))
    return [item["name"] for page in pages for item in page["data"]]


def http_client(**kwargs: Any) -> httpx.Client:
    """An `httpx.Client` (keyword arguments passed on) sharing the process's one TLS context: httpx otherwise
    builds one per client, loading the CA bundle (20-180 ms here, a third of an end-to-end test's CPU)."""
    return httpx.Client(verify=tls_context(), **kwargs)


def client(server: Server, token: str, scheme: str = "Bearer") -> httpx.Client:
    return http_client(base_url=server.api, headers={"Authorization": f"{scheme} {token}"}, timeout=30)


def padded(size: int) -> bytes:
    """A valid basic body padded with whitespace to exactly `size` bytes."""
    raw = orjson.dumps({"name": unique("big"), "user": "u", "password": "p"})
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


# ---- the credential use cases in-process, answered as the API answers -------------------------------------------


class InProcess:
    """The credential use cases called directly on `services` for one principal, each answered as an
    `httpx.Response` built the way the API builds it (domain errors rendered by the server's own
    `response_for`), so the HTTP-shaped assertions (`assert_error`, `LeakGuard`) apply without a server.
    The route wiring itself (body parsing, status mapping through the pipeline) is proven in `tests/e2e/`."""

    def __init__(self, services: Services, who: Principal, guard: LeakGuard | None = None) -> None:
        self.services = services
        self.who = who
        self.guard = guard

    def _answer(self, method: str, status: int, call: Any) -> httpx.Response:
        from strongroom.api.errors import response_for
        from strongroom.errors import StrongroomError

        request = httpx.Request(method, "http://in-process/api/v2/credentials/")
        try:
            content = call()
        except StrongroomError as exc:
            rendered = response_for(exc)
            resp = httpx.Response(
                rendered.status_code, headers=list(rendered.headers.items()), content=rendered.body, request=request
            )
        else:
            resp = httpx.Response(
                status, headers={"content-type": "application/json"}, content=content, request=request
            )
        if self.guard is not None:
            self.guard.record(resp)
        return resp

    def create(self, body: Any) -> httpx.Response:
        """POST credentials/: 201 with the new credential, or the error."""
        return self._answer("POST", 201, lambda: self.services.credentials.create(self.who, body))

    def get(self, credential_id: str) -> httpx.Response:
        """GET credentials/{id}/: 200 with the credential, or the error."""
        return self._answer("GET", 200, lambda: self.services.credentials.get(self.who, credential_id)[0])

    def update(self, credential_id: str, body: Any) -> httpx.Response:
        """PATCH credentials/{id}/: 200 with the updated credential, or the error."""
        return self._answer("PATCH", 200, lambda: self.services.credentials.update(self.who, credential_id, body)[0])

    def total(self) -> int:
        """How many credentials the principal has (the list's totalCount)."""
        return self.services.credentials.list(self.who).total

    def created(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create expecting 201; the credential's JSON."""
        resp = self.create(body)
        assert resp.status_code == 201, resp.text
        result: dict[str, Any] = resp.json()
        return result

    def basic(self, name: str | None = None, **extra: Any) -> dict[str, Any]:
        """Create a basic credential expecting 201 (`create_basic` in-process)."""
        return self.created({"name": name or unique("basic"), "user": "u", "password": "p", **extra})


# ---- real databases for data stores: a scram-sha-256 PostgreSQL cluster and a MariaDB user ----------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADB = {"host": "127.0.0.1", "port": int(os.environ.get("STRONGROOM_TEST_MYSQL_PORT", "3306")), "user": "root"}


@dataclass(frozen=True)
class PeerDatabase:
    """A database a data store points at: where it is, a user with a password, and its JDBC URL."""

    scheme: str
    host: str
    port: int
    database: str
    user: str
    password: str

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:{self.scheme}://{self.host}:{self.port}/{self.database}"


def busy_backends(peer: PeerDatabase, like: str = "%") -> list[tuple[str, str]]:
    """(state, query) of the peer database's other backends that run a statement or hold a transaction open
    ('active', 'idle in transaction'), their query LIKE `like`."""
    import psycopg

    dsn = f"host={peer.host} port={peer.port} user={peer.user} password={peer.password} dbname={peer.database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction') AND query LIKE %s",
            (like,),
        ).fetchall()
    return [(str(state), str(query)) for state, query in rows]


def _as_postgres(args: list[str]) -> list[str]:
    """Run a PostgreSQL binary as the `postgres` user when the tests run as root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def scram_postgres() -> Iterator[PeerDatabase]:
    """A throwaway PostgreSQL 15 cluster on a free loopback port that checks passwords (scram-sha-256), with a
    database `shop` (a table `public.orders` of two rows) owned by a user with a password; stopped afterwards."""
    import tempfile

    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="strongroom-pg-"))
    root.chmod(0o755)
    superpass, password, port = "super-" + secrets.token_hex(8), "pw-" + secrets.token_hex(8), free_port()
    (root / "pw").write_text(superpass)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    run = lambda args: subprocess.run(_as_postgres(args), check=True, capture_output=True, timeout=120)  # noqa: E731
    run([str(PG_BIN / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=scram-sha-256",
         f"--pwfile={root / 'pw'}"])  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run([str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-o", options, "-l", str(root / "log"), "-w", "start"])
    try:
        import psycopg

        admin = f"host=127.0.0.1 port={port} user=postgres password={superpass}"
        with psycopg.connect(f"{admin} dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE ROLE alice LOGIN PASSWORD '{password}'")
            conn.execute("CREATE DATABASE shop OWNER alice")
        with psycopg.connect(f"host=127.0.0.1 port={port} user=alice password={password} dbname=shop") as conn:
            conn.execute("CREATE TABLE orders (id integer PRIMARY KEY, item text)")
            conn.execute("INSERT INTO orders VALUES (1, 'apple'), (2, 'pear')")
        yield PeerDatabase("postgresql", "127.0.0.1", port, "shop", "alice", password)
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mariadb_user() -> Iterator[PeerDatabase]:
    """A fresh database (a table `orders` of two rows) and a user with a password on the local MariaDB; both
    dropped afterwards (skips, saying why, when MariaDB is unreachable)."""
    import pymysql

    try:
        admin = pymysql.connect(**MARIADB, connect_timeout=3, autocommit=True)
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB not reachable at {MARIADB['host']}:{MARIADB['port']} ({exc.args[0]})")
    tag = secrets.token_hex(4)
    user, database, password = f"sr_{tag}", f"sr_{tag}", "pw-" + secrets.token_hex(8)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {database}")
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'")
            for host in ("%", "localhost"):
                cur.execute(f"GRANT ALL ON {database}.* TO '{user}'@'{host}'")
            cur.execute(f"CREATE TABLE {database}.orders (id integer PRIMARY KEY, item varchar(20))")
            cur.execute(f"INSERT INTO {database}.orders VALUES (1, 'apple'), (2, 'pear')")
        yield PeerDatabase("mysql", MARIADB["host"], MARIADB["port"], database, user, password)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database}")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
        admin.close()


def log_with(server: Any, needle: bytes, timeout: float = 10) -> bytes:
    """The server's log once it holds `needle` (the access log is written in batches), or as it is after
    `timeout` seconds, for the caller's assertion to report."""
    import time

    deadline = time.monotonic() + timeout
    while needle not in (log := server.log_path.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return log


# ---- a real S3-compatible server that checks signatures (moto in server mode, authentication on) -------------


@contextmanager
def s3_server() -> Iterator[S3Peer]:
    """The bench's signature-checking moto S3 server (`bench.server.s3_server`); skips when moto is missing."""
    pytest.importorskip("moto")
    with bench_server.s3_server() as peer:
        yield peer


# ---- a real OAuth 2.0 authorization server: npm's oidc-provider (tests/peers/oauth) ------------------------------

OAUTH_PEER_DIR = Path(__file__).resolve().parent / "peers" / "oauth"
OAUTH_REDIRECT = "http://127.0.0.1/callback"


@dataclass
class OAuthPeer:
    """The running oidc-provider: its clients' secrets (`app` Basic, `post` client_secret_post, `brief` Basic with
    access tokens shorter than Strongroom's refresh margin), and what a test does at it directly."""

    base: str
    secrets: dict[str, str]

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    def refreshes(self, client_id: str) -> dict[str, int]:
        """Refresh-token grants the provider has answered for the client: `success` and `error` counts."""
        counts = httpx.get(f"{self.base}/test/counts", timeout=10, verify=tls_context()).json()
        return {"success": 0, "error": 0, **counts.get(client_id, {})}

    def authorize(self, client_id: str = "app") -> dict[str, Any]:
        """A token answer (access_token, refresh_token, expires_in) from a real authorization-code flow with PKCE:
        authorize, the provider's login and consent interaction (which completes itself), then the code grant."""
        import base64
        import hashlib
        from urllib.parse import parse_qsl, urlsplit

        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "client_id": client_id,
            "response_type": "code",
            "scope": "openid offline_access",
            "redirect_uri": OAUTH_REDIRECT,
            "prompt": "consent",
            "state": secrets.token_hex(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        with http_client(base_url=self.base, follow_redirects=False, timeout=10) as browser:
            answer = browser.get("/auth", params=params)
            for _ in range(10):
                location = answer.headers.get("location", "")
                if location.startswith(OAUTH_REDIRECT):
                    break
                assert answer.status_code in (302, 303), answer.text
                answer = browser.get(location)
            query = dict(parse_qsl(urlsplit(location).query))
            assert query.get("state") == params["state"] and "code" in query, query
            grant = {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": OAUTH_REDIRECT}
            tokens = self.token_request(client_id, {**grant, "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        result: dict[str, Any] = tokens.json()
        assert result.get("refresh_token"), result
        return result

    def token_request(self, client_id: str, data: dict[str, str]) -> httpx.Response:
        """A request to the token endpoint as the client (Basic, or in the body for `post`)."""
        secret = self.secrets[client_id]
        if client_id == "post":
            return httpx.post(
                self.token_url, data={**data, "client_id": client_id, "client_secret": secret}, verify=tls_context()
            )
        return httpx.post(self.token_url, data=data, auth=(client_id, secret), verify=tls_context())

    def revoke(self, client_id: str, token: str) -> None:
        """Revoke a token at the provider (RFC 7009)."""
        secret = self.secrets[client_id]
        answer = httpx.post(
            f"{self.base}/token/revocation", data={"token": token}, auth=(client_id, secret), verify=tls_context()
        )
        assert answer.status_code == 200, answer.text

    def userinfo(self, access_token: str) -> httpx.Response:
        """The provider's userinfo answer for an access token (200 only for a valid one)."""
        return httpx.get(
            f"{self.base}/me", headers={"Authorization": f"Bearer {access_token}"}, timeout=10, verify=tls_context()
        )


@contextmanager
def oauth_peer(log_dir: Path) -> Iterator[OAuthPeer]:
    """oidc-provider (tests/peers/oauth/server.js) on a free loopback port with fresh client secrets, stopped
    afterwards; skips, saying why, when node or the npm packages (`make oauth-peer`) are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the OAuth provider of tests/peers/oauth cannot run")
    if not (OAUTH_PEER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("oidc-provider is not installed: run `make oauth-peer` (npm ci in tests/peers/oauth)")
    port = free_port()
    client_secrets = {c: f"{c}-secret-" + secrets.token_hex(12) for c in ("app", "post", "brief")}
    log = (log_dir / "oauth-peer.log").open("ab")
    args = [node, str(OAUTH_PEER_DIR / "server.js"), str(port), *client_secrets.values()]
    proc = subprocess.Popen(args, cwd=OAUTH_PEER_DIR, stdout=log, stderr=subprocess.STDOUT)
    peer = OAuthPeer(f"http://127.0.0.1:{port}", client_secrets)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the OAuth peer exited with {proc.returncode}: see {log.name}")
            try:
                if httpx.get(f"{peer.base}/test/counts", timeout=1, verify=tls_context()).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the OAuth peer did not start in 30 s: see {log.name}") from None
                time.sleep(0.1)
        yield peer
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@dataclass
class Listener:
    """A loopback port whose server accepts connections and closes them at once, counting them."""

    port: int
    accepted: list[int] = field(default_factory=list)


@contextmanager
def closing_listener(*, hold: bool = False) -> Iterator[Listener]:
    """A thread that accepts each connection on a free loopback port and closes it without a word (a broken
    upstream), or with `hold` keeps it open without answering (a hung one), counting the connections; stopped
    afterwards."""
    import socket
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.1)
    listener = Listener(int(sock.getsockname()[1]))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            listener.accepted.append(1)
            if hold:
                held.append(conn)
            else:
                conn.close()

    held: list[socket.socket] = []
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()
