"""Fixtures of the unit layer: one in-process store for the session and a fresh principal per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from strongroom.bootstrap import Services
from strongroom.services.accounts import Principal
from tests.support import InProcess, LeakGuard, memory_services, new_principal


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Services over a temporary migrated SQLite store and a test key provider, shared by the session (every
    test works as a principal of its own, so tests do not see each other's data)."""
    with memory_services(tmp_path_factory.mktemp("unit")) as built:
        yield built


@pytest.fixture
def who(services: Services) -> Principal:
    """A fresh user with a token of every scope."""
    return new_principal(services)


@pytest.fixture
def calls(services: Services, who: Principal) -> Iterator[InProcess]:
    """The credential use cases as `who`; every answer is checked for planted secrets at the end of the test."""
    leak_guard = LeakGuard()
    yield InProcess(services, who, leak_guard)
    leak_guard.check()


@pytest.fixture
def guard(calls: InProcess) -> LeakGuard:
    """The leak guard recording `calls`' answers."""
    assert calls.guard is not None
    return calls.guard
