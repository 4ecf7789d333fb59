"""`pip install strongroom` alone: a fresh virtual environment gets the SDK and CLI without the server's packages,
and they work against a running server (built from this working tree; skipped when the package index is
unreachable)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, unique

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = (
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "alembic",
    "psycopg",
    "cryptography",
    "pydantic_settings",
    "orjson",
)
# What pip prints when it cannot reach an index (or finds nothing there): a reason to skip, not to fail.
_UNREACHABLE = (
    "No matching distribution",
    "Could not find a version",
    "NewConnectionError",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Max retries exceeded",
    "ConnectTimeout",
    "ReadTimeout",
)

pytestmark = pytest.mark.network


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without this checkout on PYTHONPATH or any Strongroom setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("STRONGROOM_", "VIRTUAL"))}
    return {**env, "COLUMNS": "200", **extra}


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with `pip install <this tree>` (no extras); the tree is copied so no build files land here."""
    work = tmp_path_factory.mktemp("client-install")
    tree = work / "strongroom"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    venv = work / "venv"
    # Without a pip of its own (ensurepip took ~4 s): this run's pip installs into it (`--python`).
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True, timeout=120
    )
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here: {made.stderr.strip()[-300:]}")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", str(tree)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        if any(marker in output for marker in _UNREACHABLE):
            pytest.skip(f"the package index is unreachable: {output.strip().splitlines()[-1]}")
        raise AssertionError(f"pip install failed:\n{output}")
    yield venv


def _run(venv: Path, *args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def test_the_client_installs_without_the_server_packages(client_venv: Path) -> None:
    probe = "import importlib.util as u, json, sys; print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"
    found = _run(client_venv, "python", "-c", probe, *SERVER_ONLY, env=_clean_env())
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == []
    where = _run(client_venv, "python", "-c", "import strongroom; print(strongroom.__file__)", env=_clean_env())
    assert where.stdout.startswith(str(client_venv)), "the test must use the installed package, not the checkout"


def test_local_admin_commands_name_the_server_extra(client_venv: Path, tmp_path: Path) -> None:
    for command in (("users", "list"), ("serve",), ("init",), ("backup", str(tmp_path / "b.srb"))):
        result = _run(client_venv, "strongroom", *command, env=_clean_env(STRONGROOM_DATA_DIR=str(tmp_path)))
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith("Error: ") and "install strongroom[server]" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def test_installed_cli_and_sdk_work_against_a_server(client_venv: Path, server: Server, token: str) -> None:
    env = _clean_env(STRONGROOM_ENDPOINT=server.api, STRONGROOM_API_TOKEN=token)
    name = unique("light")
    body = json.dumps({"name": name, "user": "etl", "password": "pw"})
    made = _run(
        client_venv, "strongroom", "credentials", "create", "basic", "--from-json", "-", "--json", env=env, stdin=body
    )
    assert made.returncode == 0, made.stderr
    listed = _run(client_venv, "strongroom", "credentials", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [c["name"] for c in json.loads(listed.stdout)] == [name]
    sdk = (
        "import json, strongroom as dr; "
        "made = dr.Credential.create_basic(name='from-sdk', user='u', password='p'); "
        "print(json.dumps(sorted(c.name for c in dr.Credential.list())))"
    )
    used = _run(client_venv, "python", "-c", sdk, env=env)
    assert used.returncode == 0, used.stderr
    assert json.loads(used.stdout) == sorted([name, "from-sdk"])


def test_connect_helpers_name_their_extras_on_a_client_install(client_venv: Path, server: Server, token: str) -> None:
    """`strongroom.connect` imports on the bare SDK; sql() and s3() say which extra brings SQLAlchemy or boto3."""
    env = _clean_env(STRONGROOM_ENDPOINT=server.api, STRONGROOM_API_TOKEN=token)
    script = (
        "import json, strongroom as dr\n"
        "from strongroom import connect\n"
        "from strongroom.client.client import get_client\n"
        "api = get_client()\n"
        "drivers = api.get('externalDataDrivers/').json()['data']\n"
        "driver = next(d['id'] for d in drivers if d['databaseDriver'] == 'postgres')\n"
        "params = {'driverId': driver, 'jdbcUrl': 'jdbc:postgresql://127.0.0.1:5432/x'}\n"
        "store = api.post('externalDataStores/', json={'canonicalName': 'light', 'params': params}).json()['id']\n"
        "basic = dr.Credential.create_basic(name='db', user='u', password='p').credential_id\n"
        "keys = dr.Credential.create_s3(name='k', aws_access_key_id='AKIA1', aws_secret_access_key='s')\n"
        "said = []\n"
        "for call in (lambda: connect.sql(store, basic), lambda: connect.s3(keys.credential_id)):\n"
        "    try:\n"
        "        call()\n"
        "    except dr.StrongroomSDKError as exc:\n"
        "        said.append(str(exc))\n"
        "print(json.dumps(said))\n"
    )
    ran = _run(client_venv, "python", "-c", script, env=env)
    assert ran.returncode == 0, ran.stderr
    said = json.loads(ran.stdout)
    assert len(said) == 2, said
    assert "pip install 'strongroom[connect-sql]'" in said[0] and "pip install 'strongroom[connect-s3]'" in said[1]
