"""`keys retire` never silently breaks a backup: it names the master-key archives that need the version and
refuses without --force; passphrase archives need no master key, so they never hold a retirement back. A backup
being written holds its versions from before its snapshot (refused even with --force), a dead one's hold lapses,
and an archive whose version went all the same is not written."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, literal, select, text, update

from strongroom.backup import ArchiveError, backup, restore
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.crypto import load_keyring
from strongroom.errors import Conflict
from strongroom.store.db import Database
from strongroom.store.models import Backup, utcnow
from strongroom.store.repositories import KeyRepository
from strongroom.store.repositories.keys import BACKUP_LAPSE, TURN_KEY
from tests.support import BACKENDS, backend_database, make_credential, new_principal

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


# ---- a backup being written holds its versions (in-process: the retirement runs between the backup's steps) ----


@pytest.fixture(params=BACKENDS)
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    """A store on each backend with a key file in `tmp_path / "source"` and one credential sealed under version 1."""
    with backend_database(request.param, migrated=True) as url:
        services = Services.open(Settings(data_dir=tmp_path / "source", database_url=url))
        try:
            who = new_principal(services)
            make_credential(services, who, {"name": "db", "credentialType": "basic", "user": "u", "password": "p"})
            yield services
        finally:
            services.close()


class _Between:
    """A backup reporter that runs `step` once, when the backup has taken its snapshot and starts writing."""

    def __init__(self, step: Callable[[], None]) -> None:
        self.step: Callable[[], None] | None = step

    def start(self, description: str, total: int) -> None:
        if self.step is not None:
            step, self.step = self.step, None
            step()

    def advance(self, rows: int) -> None:
        pass


def _rotate(services: Services) -> None:
    """A new active version with every data key re-wrapped under it: nothing in the live store uses version 1."""
    services.keys.start_rotation()
    assert services.keys.rewrap(settle=0)["left"] == 0


def _restorable(archive: Path, key_file: Path, tmp_path: Path) -> str:
    """'' if `archive` restores into a fresh store holding only `key_file`, else the refusal."""
    fresh = tmp_path / f"fresh-{secrets.token_hex(3)}"
    fresh.mkdir(mode=0o700)
    shutil.copy2(key_file, fresh / "master.key")
    try:
        restore(Settings(data_dir=fresh), archive)
    except ArchiveError as exc:
        return exc.message
    return ""


def test_retire_is_refused_while_a_backup_that_may_need_the_version_is_written(
    opened: Services, tmp_path: Path
) -> None:
    """The hostile review's order: the backup's snapshot holds credentials under version 1; a rotation and a
    retirement of 1 run while its archive is written. The retirement is refused, even with --force, naming the
    backup; the finished archive restores with the store's key file; then the finished backup holds 1 back as
    before (until --force)."""
    archive = tmp_path / "b.srb"
    refusals: list[str] = []

    def rotate_and_retire() -> None:
        _rotate(opened)
        for force in (False, True):
            with pytest.raises(Conflict) as refused:
                opened.keys.retire(1, force=force)
            refusals.append(refused.value.message)

    backup(opened.db, opened.barrier.keys, archive, reporter=_Between(rotate_and_retire))
    assert len(refusals) == 2
    for message in refusals:
        assert "being written" in message and str(archive.resolve()) in message
        assert f"process {os.getpid()}" in message and "--force does not override" in message
    key_file = tmp_path / "source" / "master.key"
    assert _restorable(archive, key_file, tmp_path) == ""
    with pytest.raises(Conflict) as recorded:
        opened.keys.retire(1)
    assert "needed to restore 1 backup(s)" in recorded.value.message
    assert opened.keys.retire(1, force=True).unrestorable == [str(archive.resolve())]


def test_a_retirement_that_committed_before_the_backup_began_leaves_the_archive_restorable(
    opened: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opposite order: the backup starts after the retirement committed but before it forgot the key. Its
    snapshot holds nothing under version 1, so it neither needs nor records 1, and restores without it."""
    _rotate(opened)
    archive = tmp_path / "b.srb"
    keys = opened.barrier.keys
    forget = keys.remove_version

    def backup_then_forget(version: int) -> None:
        backup(opened.db, keys, archive)
        forget(version)

    monkeypatch.setattr(keys, "remove_version", backup_then_forget)
    assert opened.keys.retire(1).unrestorable == []
    assert 1 not in load_keyring(env_value=None, key_file=tmp_path / "source" / "master.key", create=False).versions()
    assert _restorable(archive, tmp_path / "source" / "master.key", tmp_path) == ""
    with opened.db.read() as s:
        assert [(b.state, b.key_versions) for b in s.scalars(select(Backup))] == [("done", "2")]


def test_an_archive_whose_version_was_retired_anyway_is_not_written(opened: Services, tmp_path: Path) -> None:
    """Should a backup's hold lapse while it is still writing (taken for that of a dead backup), a retirement
    goes through, and the backup then fails saying why instead of leaving an archive that cannot be restored."""
    archive = tmp_path / "b.srb"
    cleared: list[str] = []

    def lapse_then_retire() -> None:
        _rotate(opened)
        with opened.db.write() as s:
            s.execute(update(Backup).values(heartbeat_at=utcnow() - BACKUP_LAPSE - timedelta(minutes=1)))
        cleared.extend(opened.keys.retire(1).cleared)

    with pytest.raises(ArchiveError) as failed:
        backup(opened.db, opened.barrier.keys, archive, reporter=_Between(lapse_then_retire))
    assert len(cleared) == 1 and str(archive.resolve()) in cleared[0]
    assert "master key version 1 was retired while this backup was being written" in failed.value.message
    assert not archive.exists() and list(tmp_path.glob(".b.srb.*")) == []
    with opened.db.read() as s:
        assert list(s.scalars(select(Backup))) == []


def test_a_backup_that_died_stops_holding_versions_back(opened: Services, tmp_path: Path) -> None:
    """A hold whose writer is gone from this host, or that showed no sign of life for BACKUP_LAPSE, is cleared by
    the next retirement (which says so); a live one elsewhere refuses it and says when it would lapse."""
    _rotate(opened)
    repo = KeyRepository(opened.db)
    now = utcnow()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    repo.claim_backup("a" * 32, "/backups/killed.srb", {1}, socket.gethostname(), int(ended.stdout), now)
    repo.claim_backup("b" * 32, "/backups/elsewhere.srb", {1}, "other-host", 4242, now)
    with pytest.raises(Conflict) as refused:
        opened.keys.retire(1)
    message = refused.value.message
    assert "/backups/elsewhere.srb" in message and "on host other-host" in message and "10 minutes" in message
    assert "/backups/killed.srb" not in message
    repo.backup_alive("b" * 32, now - BACKUP_LAPSE - timedelta(seconds=1))
    retired = opened.keys.retire(1)
    assert sorted(c.split(" ")[0] for c in retired.cleared) == ["/backups/elsewhere.srb"]
    with opened.db.read() as s:
        assert list(s.scalars(select(Backup))) == []


@pytest.mark.postgres
def test_on_postgresql_a_retirement_waits_for_a_backup_claim_being_committed(tmp_path: Path) -> None:
    """The two transactions take turns: a retirement that starts while a backup's claim is not yet committed
    waits for it (seen waiting on the advisory lock), then sees the claim and is refused; it never checks the
    claims first and retires after the backup has claimed."""
    with backend_database("postgres", migrated=True) as url:
        services = Services.open(Settings(data_dir=tmp_path / "source", database_url=url))
        other = Database(str(url))
        try:
            _rotate(services)
            outcome: list[BaseException | None] = []

            def retire() -> None:
                try:
                    services.keys.retire(1)
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

            with other.engine.connect() as conn, conn.begin():
                conn.execute(select(func.pg_advisory_xact_lock(literal(TURN_KEY))))
                now = utcnow()
                claim = {"archive_id": "c" * 32, "path": "/backups/now.srb", "key_versions": "1 2", "created_at": now}
                claim |= {"state": "running", "host": "other-host", "pid": 7, "heartbeat_at": now}
                conn.execute(insert(Backup), claim)
                thread = threading.Thread(target=retire)
                thread.start()
                waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")
                deadline = time.monotonic() + 60
                while not conn.execute(waiting).scalar() and thread.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert thread.is_alive() and not outcome, "the retirement did not wait for the claim's transaction"
            thread.join(60)
            assert isinstance(outcome[0], Conflict) and "/backups/now.srb" in outcome[0].message
        finally:
            other.dispose()
            services.close()


def test_a_backup_records_the_version_of_oauth_secrets_too(opened: Services, tmp_path: Path) -> None:
    """A backup made mid-rotation, once the credentials are re-wrapped but not yet the OAuth providers' client
    secrets (the rotation's last step): its archive needs the old version for the provider, so that version's
    retirement names it (before, only the credentials' versions were recorded, and the archive broke)."""
    opened.oauth.create_provider(
        None, {"name": "idp", "tokenUrl": "https://idp.example/token", "clientId": "c", "clientSecret": "s3cret"}
    )
    archive = tmp_path / "b.srb"
    opened.keys.start_rotation()

    def back_up_once(_done: int, _batch: int) -> None:
        if not archive.exists():
            backup(opened.db, opened.barrier.keys, archive)

    assert opened.keys.rewrap(settle=0, on_batch=back_up_once)["left"] == 0
    with pytest.raises(Conflict) as refused:
        opened.keys.retire(1)
    assert str(archive.resolve()) in refused.value.message
    key_file = tmp_path / "source" / "master.key"
    assert _restorable(archive, key_file, tmp_path) == ""
