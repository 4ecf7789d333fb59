"""Fixtures that run a real Strongroom server process per backend: SQLite always, PostgreSQL when reachable."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

PG_ADMIN_URL = os.environ.get("STRONGROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_unreachable_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True):
            return None
    except Exception as exc:  # any failure means: skip, and say why
        return f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}); set STRONGROOM_TEST_PG_URL"


@dataclass
class PgDatabase:
    """A throwaway database on the test PostgreSQL server, dropped afterwards."""

    name: str = field(default_factory=lambda: "strongroom_test_" + secrets.token_hex(4))

    @property
    def url(self) -> str:
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{self.name}"

    def create(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@contextmanager
def backend_database(backend: str) -> Iterator[str | None]:
    """The database URL for a test on `backend`: None (SQLite in the data directory), or a throwaway PostgreSQL
    database dropped afterwards; skips, saying why, when PostgreSQL is unreachable."""
    if backend == "sqlite":
        yield None
        return
    if reason := pg_unreachable_reason():
        pytest.skip(reason)
    pg = PgDatabase()
    pg.create()
    try:
        yield pg.url
    finally:
        pg.drop()


@contextmanager
def postgres_store() -> Iterator[Any]:
    """A migrated `Database` on a throwaway PostgreSQL database, disposed and dropped afterwards (skips, saying
    why, when PostgreSQL is unreachable)."""
    from strongroom.store.db import Database

    with backend_database("postgres") as url:
        assert url is not None
        database = Database(url)
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()


@dataclass
class Server:
    """A `strongroom serve` child process with its own data directory and log file."""

    data_dir: Path
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    launcher: list[str] = field(default_factory=list)  # e.g. ["taskset", "-c", "1"] for benchmarks
    proc: subprocess.Popen[bytes] | None = None

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
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.launcher, sys.executable, "-m", "strongroom", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self, sig: int | None = None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the `strongroom` CLI against this server's data and endpoint."""
        result = subprocess.run(
            [sys.executable, "-m", "strongroom", *args],
            env={**self.env, "STRONGROOM_ENDPOINT": self.api, "COLUMNS": "200"},
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"strongroom {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def new_user(self, prefix: str = "user") -> str:
        """Create a user with a token through the service (fast), returning the raw token."""
        from strongroom.bootstrap import Services
        from strongroom.config import Settings

        settings = Settings(data_dir=self.data_dir, database_url=self.database_url)
        service = Services.open(settings)
        try:
            username = f"{prefix}-{secrets.token_hex(4)}"
            service.accounts.create_user(username)
            return service.accounts.create_token(username)[1]
        finally:
            service.close()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One live server per backend for the whole session."""
    with backend_database(request.param) as database_url:
        srv = Server(data_dir=tmp_path_factory.mktemp("srv") / request.param, database_url=database_url)
        srv.start()
        yield srv
        srv.stop()


@pytest.fixture
def token(server: Server) -> str:
    """A fresh user's token, so every test starts with an empty credential list."""
    return server.new_user()


@pytest.fixture
def api(server: Server, token: str) -> Iterator[httpx.Client]:
    """An HTTP client for the raw REST API, authenticated as a fresh user."""
    with httpx.Client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        yield client
