"""The key file and the store's files: private whatever the umask, refused when others could touch them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.crypto.keys import load_key_file, load_keyring
from strongroom.errors import MasterKeyError

# Processes that race: each imports what it needs first, then all are released at once (`_start_together`), so
# they reach the key file and the database within the same moment rather than one interpreter start-up apart.
STARTS = 8


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("mode", [0o640, 0o660, 0o604, 0o610, 0o601, 0o620])
def test_any_group_or_other_bit_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    load_key_file(path, create=True)
    path.chmod(mode)
    with pytest.raises(MasterKeyError) as caught:
        load_key_file(path, create=False)
    assert str(path) in caught.value.message and f"{mode:04o}" in caught.value.message


def test_symlink_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    load_key_file(real, create=True)
    link = tmp_path / "master.key"
    link.symlink_to(real)
    with pytest.raises(MasterKeyError, match="symbolic link"):
        load_key_file(link, create=False)
    with pytest.raises(MasterKeyError, match="symbolic link"):
        load_key_file(link, create=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_foreign_owner_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_key_file(path, create=True)
    os.chown(path, 65534, 65534)
    with pytest.raises(MasterKeyError, match="owned by uid 65534"):
        load_key_file(path, create=False)


def test_rewrite_never_uses_a_fixed_temporary_name(tmp_path: Path) -> None:
    """A leftover world-readable `master.key.tmp` (or a symlink there) must not shape the rotated key file."""
    path = tmp_path / "master.key"
    keyring = load_key_file(path, create=True)
    trap = tmp_path / "elsewhere"
    (tmp_path / "master.key.tmp").symlink_to(trap)
    old_umask = os.umask(0)
    try:
        keyring.add_version(2, None)
    finally:
        os.umask(old_umask)
    assert not trap.exists()
    assert _mode(path) == 0o600 and not path.is_symlink()
    assert load_key_file(path, create=False).versions() == {1, 2}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".master.key")] == []


_LOAD = """
import sys
from pathlib import Path
from strongroom.crypto.keys import load_keyring
print("ready", flush=True)
sys.stdin.readline()
keyring = load_keyring(env_value=None, key_file=Path(sys.argv[1]), create=True)
version, wrapped = keyring.wrap(bytes(32), b"which key")
print(version, wrapped.hex())
"""

_OPEN = """
import sys
from pathlib import Path
from strongroom.bootstrap import Services
from strongroom.config import Settings
import alembic.command  # the migration's modules too: Services.open imports them on first use
print("ready", flush=True)
sys.stdin.readline()
Services.open(Settings(data_dir=Path(sys.argv[1]))).close()
"""


def _start_together(code: str, arg: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run `code` in STARTS processes released together: each says `ready` once its imports are done and waits
    for a line on stdin, which all get only when every one is ready."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(arg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(STARTS)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=60)[1]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def test_concurrent_first_loads_make_one_key(tmp_path: Path) -> None:
    """Every process ends up holding the one key the file holds: each wraps a data key, which that key opens."""
    path = tmp_path / "data" / "master.key"
    results = _start_together(_LOAD, path)
    assert [r.stderr for r in results if r.returncode] == []
    assert len(json.loads(path.read_text())["keys"]) == 1
    final = load_key_file(path, create=False)
    for result in results:
        version, wrapped = result.stdout.split()
        assert final.unwrap(int(version), bytes.fromhex(wrapped), b"which key") == bytes(32)


def test_concurrent_first_starts_all_succeed_with_one_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    results = _start_together(_OPEN, data_dir)
    assert [r.stderr for r in results if r.returncode] == []
    key_text = (data_dir / "master.key").read_text()
    assert len(json.loads(key_text)["keys"]) == 1
    services = Services.open(Settings(data_dir=data_dir))  # every process agreed on the one recorded key
    try:
        assert set(services.keys.versions.all()) == {1}
    finally:
        services.close()


def test_library_creates_private_files_whatever_the_umask(tmp_path: Path) -> None:
    """Not only the CLI (which sets a umask): a library caller with umask 022 gets owner-only files too."""
    data_dir = tmp_path / "data"
    code = (
        "import os, sys\nos.umask(0o022)\n"
        + "from pathlib import Path\nfrom strongroom.bootstrap import Services\n"
        + "from strongroom.config import Settings\n"
        + "s = Services.open(Settings(data_dir=Path(sys.argv[1])))\n"
        + "s.accounts.create_user('alice')\n"
        + "print('ready', flush=True)\n"
        + "input()\n"  # hold the store open, so the WAL and shm files exist while they are checked
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        files = sorted(p for p in data_dir.iterdir())
        names = {p.name for p in files}
        assert {"master.key", "strongroom.db", "strongroom.db-wal", "strongroom.db-shm"} <= names
        assert {p.name: _mode(p) for p in files} == dict.fromkeys(names, 0o600)
        assert _mode(data_dir) == 0o700
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0


def test_env_keyring_needs_no_file(tmp_path: Path) -> None:
    keyring = load_keyring(env_value="A" * 43 + "=", key_file=tmp_path / "absent.key", create=True)
    assert keyring.versions() == {1} and not (tmp_path / "absent.key").exists()


@pytest.mark.parametrize(
    "document",
    [
        '{"format": "strongroom-keyring-1", "active": 1, "keys": []}',
        '{"format": "strongroom-keyring-1", "active": 2, "keys": {"1": "' + "A" * 43 + '="}}',
        '{"format": "strongroom-keyring-1", "active": 1}',
        "[1, 2]",
        '{"format": "strongroom-keyring-1", "active": "one", "keys": {}}',
    ],
    ids=["keys-a-list", "active-missing", "no-keys", "not-an-object", "active-not-a-number"],
)
def test_a_malformed_keyring_is_refused_by_name(tmp_path: Path, document: str) -> None:
    """A keyring in STRONGROOM_MASTER_KEY (or a key file) that is JSON of the wrong shape is a MasterKeyError
    naming its source, not an AttributeError from inside the parser."""
    with pytest.raises(MasterKeyError, match="STRONGROOM_MASTER_KEY"):
        load_keyring(env_value=document, key_file=tmp_path / "absent.key", create=True)
