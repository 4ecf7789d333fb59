"""`keys retire` never silently breaks a backup: it names the master-key archives that need the version and
refuses without --force; passphrase archives need no master key, so they never hold a retirement back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from strongroom.bootstrap import Services
from strongroom.config import Settings
from tests.support import make_credential

PASSPHRASE = "correct horse battery staple"


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["STRONGROOM_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _store(data_dir: Path) -> None:
    services = Services.open(Settings(data_dir=data_dir))
    try:
        services.accounts.create_user("alice")
        who = services.accounts.authenticate(services.accounts.create_token("alice")[1])
        make_credential(services, who, {"name": "db", "credentialType": "basic", "user": "u", "password": "p"})
    finally:
        services.close()


def test_retire_refuses_while_a_backup_needs_the_version(tmp_path: Path) -> None:
    """The issue's scenario: backup b1.srb; keys rotate; keys retire 1; restore into a fresh data directory."""
    source = tmp_path / "source"
    _store(source)
    b1 = tmp_path / "b1.srb"
    assert cli(source, "backup", str(b1)).returncode == 0
    assert cli(source, "keys", "rotate", "--settle", "0").returncode == 0
    refused = cli(source, "keys", "retire", "1")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert str(b1.resolve()) in refused.stderr and "--force" in refused.stderr
    fresh = tmp_path / "fresh"  # the current key file, as the user had it
    fresh.mkdir(mode=0o700)
    shutil.copy2(source / "master.key", fresh / "master.key")
    restored = cli(fresh, "restore", str(b1))
    assert restored.returncode == 0, restored.stderr
    forced = cli(source, "keys", "retire", "1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert f"the backup {b1.resolve()} can no longer be restored" in forced.stderr


def test_passphrase_backups_do_not_hold_retirement_back(tmp_path: Path) -> None:
    source = tmp_path / "source"
    _store(source)
    passphrase_file = tmp_path / "pass.txt"
    passphrase_file.write_text(PASSPHRASE)
    archive = tmp_path / "offsite.srb"
    assert cli(source, "backup", str(archive), "--passphrase-file", str(passphrase_file)).returncode == 0
    assert cli(source, "keys", "rotate", "--settle", "0").returncode == 0
    retired = cli(source, "keys", "retire", "1")
    assert retired.returncode == 0, retired.stderr
    restored = cli(tmp_path / "new-machine", "restore", str(archive), "--passphrase-file", str(passphrase_file))
    assert restored.returncode == 0, restored.stderr
