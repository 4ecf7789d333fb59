"""Fixtures shared by every layer: a live server per backend for the session, a fresh user and client per test,
a leak guard, and a local KMS. The helpers they use live in `tests/support.py`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import AWS_ENV, BACKENDS, SLOW_FIRST, LeakGuard, Server, backend_database, client, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of `SLOW_FIRST` first, in its order; every other file after them in collection order. With
    `--no-loadscope-reorder` (pyproject.toml) xdist hands whole files to the workers in this order."""
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def _live_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with backend_database(backend) as database_url:
        srv = Server(data_dir=tmp_path_factory.mktemp("srv") / backend, database_url=database_url)
        srv.start()
        yield srv
        srv.stop()


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The live SQLite server of the session (of each worker under xdist)."""
    yield from _live_server("sqlite", tmp_path_factory)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The live PostgreSQL server of the session (of each worker under xdist); skips when unreachable."""
    yield from _live_server("postgres", tmp_path_factory)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Server:
    """One live server per backend for the whole session. The servers themselves are unparametrised session
    fixtures, so they are started once each even when tests of both backends interleave (as they do when
    xdist hands a worker one file after another); this fixture only picks one."""
    live: Server = request.getfixturevalue(f"{request.param}_server")
    return live


@pytest.fixture
def token(server: Server) -> str:
    """A fresh user's token, so every test starts with an empty credential list."""
    return server.new_user()


@pytest.fixture
def api(server: Server, token: str) -> Iterator[httpx.Client]:
    """An HTTP client for the raw REST API, authenticated as a fresh user."""
    with client(server, token) as c:
        yield c


@pytest.fixture
def other_api(server: Server) -> Iterator[httpx.Client]:
    """A second, unrelated user."""
    with client(server, server.new_user("other")) as c:
        yield c


@pytest.fixture
def guard(api: httpx.Client) -> Iterator[LeakGuard]:
    """Record every response `api` receives in this test; fail if any contains a planted secret."""
    leak_guard = LeakGuard()
    api.event_hooks["response"].append(leak_guard.record)
    yield leak_guard
    if leak_guard.planted:
        assert leak_guard.bodies, "the guard saw no response: it would pass vacuously"
    leak_guard.check()


@pytest.fixture(scope="session")
def kms_endpoint() -> Iterator[str]:
    """A local KMS-compatible server (moto in server mode) for the session (of each worker under xdist): every
    test makes its own keys in it."""
    pytest.importorskip("moto")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture
def kms(kms_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 KMS client of the local KMS, with test credentials in the environment."""
    import boto3

    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return boto3.client("kms", endpoint_url=kms_endpoint)
