"""The layering holds: each package imports only the layers below it, and migrations import nothing from the app.

api, cli  ->  bootstrap  ->  services, backup  ->  store, crypto  ->  leaves: config, errors, credential_types,
                                                                           representation, jdbc
client    ->  credential_types, errors (so the SDK installs without the server's dependencies)
connect   ->  client, jdbc, credential_types, errors (the SDK's connect helpers; SQLAlchemy and boto3 lazily)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "strongroom"
LEAVES = {"errors", "config", "credential_types", "representation", "jdbc"}
ALLOWED: dict[str, set[str]] = {
    "api": {"api", "bootstrap", "services", *LEAVES, "__version__"},
    "cli": {"cli", "bootstrap", "services", "client", "backup", "api", *LEAVES, "__version__"},
    "bootstrap": {"services", "store", "crypto", *LEAVES},
    "services": {"services", "store", "crypto", *LEAVES},
    "backup": {"store", "crypto", *LEAVES, "__version__"},
    "store": {"store", *LEAVES},
    "crypto": {"crypto", *LEAVES},
    "client": {"client", "credential_types", "errors", "__version__"},
    "connect": {"connect", "client", "jdbc", "credential_types", "errors", "__version__"},
    "errors": set(),
    "config": set(),
    "credential_types": {"errors"},
    "representation": set(),
    "jdbc": {"errors"},
}


def _layer(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    """The first component under `strongroom` of every import in the file, at any depth (lazy ones too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = (
                [node.module + "." + alias.name for alias in node.names]
                if node.module == "strongroom"
                else [node.module]
            )
        for name in names:
            parts = name.split(".")
            if parts[0] == "strongroom" and len(parts) > 1:
                found.add(parts[1])
    return found


MODULES = sorted(
    p
    for p in SRC.rglob("*.py")
    if "migrations" not in p.parts and not (p.parent == SRC and p.stem in ("__init__", "__main__"))
)


@pytest.mark.parametrize("path", [p for p in MODULES if _layer(p) in ALLOWED], ids=lambda p: str(p.relative_to(SRC)))
def test_module_imports_only_layers_below(path: Path) -> None:
    layer = _layer(path)
    wrong = _imports(path) - ALLOWED[layer] - {layer}
    assert not wrong, f"{path.relative_to(SRC)} ({layer}) imports {sorted(wrong)}; allowed: {sorted(ALLOWED[layer])}"


def test_every_package_has_a_rule() -> None:
    layers = {_layer(p) for p in MODULES}
    assert layers <= {*ALLOWED, "__init__", "__main__"}, f"no import rule for {sorted(layers - set(ALLOWED))}"


@pytest.mark.parametrize("path", sorted((SRC / "store" / "migrations").rglob("*.py")), ids=lambda p: p.name)
def test_migrations_import_nothing_from_the_app(path: Path) -> None:
    assert not _imports(path), f"{path.name} imports {sorted(_imports(path))} from strongroom: freeze what it needs"


def test_the_rule_can_fail(tmp_path: Path) -> None:
    """The checker sees a lazy import inside a function (a rule that cannot fail proves nothing)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from strongroom.store.db import Database\n    import strongroom.api\n")
    assert _imports(module) == {"store", "api"}
