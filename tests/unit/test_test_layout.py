"""The test pyramid keeps its shape: helpers come from `tests.support` only (no test module imports another, nor a
conftest), unit tests start no process, and `bench/` imports nothing from `tests/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import SLOW_FIRST

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def _imported_modules(path: Path) -> set[str]:
    """Every module name `path` imports, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS)))
def test_tests_import_helpers_only_from_support(path: Path) -> None:
    wrong = {m for m in _imported_modules(path) if m.startswith("tests.") and m != "tests.support"}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}: shared helpers belong in tests/support.py"


@pytest.mark.parametrize("path", sorted((TESTS / "unit").glob("*.py")), ids=lambda p: p.name)
def test_unit_tests_start_no_process(path: Path) -> None:
    assert not {"subprocess", "multiprocessing"} & _imported_modules(path), f"{path.name} belongs in tests/e2e/"
    tree = ast.parse(path.read_text(), str(path))
    helpers = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "Server" not in helpers, f"{path.name} starts a server: it belongs in tests/e2e/"


@pytest.mark.parametrize("path", sorted((ROOT / "bench").rglob("*.py")), ids=lambda p: p.name)
def test_bench_imports_nothing_from_tests(path: Path) -> None:
    assert not {m for m in _imported_modules(path) if m == "tests" or m.startswith("tests.")}, path.name


def test_the_slow_files_handed_out_first_exist() -> None:
    assert [path for path in SLOW_FIRST if not (ROOT / path).is_file()] == []
    assert len(set(SLOW_FIRST)) == len(SLOW_FIRST)
