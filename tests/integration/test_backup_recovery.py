"""Backups a user can trust: a passphrase archive restores on a new machine, an archive can be checked before it
is needed, and an altered header cannot make a restore spend unbounded memory."""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from strongroom.backup import MAGIC, ArchiveError, backup, header_of, restore, verify_archive
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.store.models import Credential
from tests.support import backend_database, make_credential, names_waiting, secrets_of

PASSPHRASE = "correct horse battery staple"
BODIES: list[dict[str, Any]] = [
    {"name": "warehouse", "credentialType": "basic", "user": "etl", "password": "pw-1"},
    {"name": "lake", "credentialType": "s3", "awsAccessKeyId": "AKIA1", "awsSecretAccessKey": "sk-1"},
    {"name": "tok", "credentialType": "api_token", "apiToken": "t-1"},
]


@dataclass
class Source:
    data_dir: Path
    secrets: dict[str, dict[str, Any]]  # credential id -> its secret fields
    passphrase_archive: Path
    key_archive: Path
    passphrase_file: Path


def all_secrets(services: Services) -> dict[str, dict[str, Any]]:
    with services.db.read() as s:
        return {row.id: secrets_of(services, row) for row in s.scalars(select(Credential))}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """A store with two users and credentials on two master-key versions (a rotation left unfinished)."""
    root = tmp_path_factory.mktemp("recovery")
    services = Services.open(Settings(data_dir=root / "source"))
    try:
        for username in ("alice", "bob"):
            services.accounts.create_user(username)
            who = services.accounts.authenticate(services.accounts.create_token(username)[1])
            for body in BODIES[:2]:
                make_credential(services, who, {**body, "name": f"{username}-{body['name']}"})
        assert services.keys.start_rotation() == 2
        make_credential(services, who, BODIES[2])  # sealed under version 2, the others under version 1
        secrets = all_secrets(services)
        assert {row["credentials"] for row in services.keys.status()["versions"]} == {4, 1}
        backup(services.db, services.barrier.keys, root / "pass.srb", passphrase=PASSPHRASE, chunk_bytes=256)
        backup(services.db, services.barrier.keys, root / "key.srb", chunk_bytes=256)
    finally:
        services.close()
    passphrase_file = root / "pass.txt"
    passphrase_file.write_text(PASSPHRASE + "\n")
    yield Source(root / "source", secrets, root / "pass.srb", root / "key.srb", passphrase_file)


def cli(data_dir: Path, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["STRONGROOM_DATA_DIR"] = str(data_dir)
    env.update(extra or {})
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_passphrase_archive_restores_on_a_new_machine(source: Source, tmp_path: Path) -> None:
    """Only the archive and the passphrase: a data directory that never saw the master key gets a fresh one."""
    new = tmp_path / "new-machine"
    assert header_of(source.passphrase_archive).self_contained
    result = cli(new, "restore", str(source.passphrase_archive), "--passphrase-file", str(source.passphrase_file))
    assert result.returncode == 0, result.stderr
    assert (new / "master.key").read_text() != (source.data_dir / "master.key").read_text()
    services = Services.open(Settings(data_dir=new))  # the server's own start-up checks pass
    try:
        assert all_secrets(services) == source.secrets
        assert names_waiting(services) == 0  # the restored names are in the trigram index, none waits
        with services.db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM credential_names").scalar_one() == len(source.secrets)
        assert {row["version"] for row in services.keys.status()["versions"]} == {1}
        who = services.accounts.authenticate(services.accounts.create_token("alice")[1])
        made = make_credential(services, who, {**BODIES[0], "name": "after-restore"})  # sealed under the new key
        assert services.credentials.secrets(who, made["credentialId"])["password"] == "pw-1"
    finally:
        services.close()


def test_master_key_archive_still_needs_the_key(source: Source, tmp_path: Path) -> None:
    """A master-key archive holds data keys wrapped by the source's key: no fresh key is made for it."""
    new = tmp_path / "new-machine"
    with pytest.raises(ArchiveError, match="no master key at"):
        restore(Settings(data_dir=new), source.key_archive)
    assert not (new / "master.key").exists()


def test_verify_good_archives_writes_nothing(source: Source, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # no store, no key: a passphrase archive needs neither
    summary = verify_archive(Settings(data_dir=elsewhere), source.passphrase_archive, passphrase=PASSPHRASE)
    assert summary.rows["credentials"] == len(source.secrets)
    assert verify_archive(Settings(data_dir=source.data_dir), source.key_archive).rows == summary.rows
    assert not elsewhere.exists()
    result = cli(
        elsewhere,
        "backup",
        "--verify",
        str(source.passphrase_archive),
        "--passphrase-file",
        str(source.passphrase_file),
    )
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout and f"{len(source.secrets)} credential(s)" in result.stdout
    result = cli(source.data_dir, "backup", "--verify", str(source.key_archive))
    assert result.returncode == 0, result.stderr
    assert not elsewhere.exists()


def _chunk_starts(data: bytes) -> list[int]:
    _, header_length = struct.unpack(">HI", data[len(MAGIC) : len(MAGIC) + 6])
    at, starts = len(MAGIC) + 6 + header_length, []
    while at < len(data):
        starts.append(at)
        at += 4 + struct.unpack(">I", data[at : at + 4])[0]
    return starts


@pytest.mark.parametrize("which", ["passphrase", "key"])
def test_verify_damaged_archive_refused(source: Source, tmp_path: Path, which: str) -> None:
    good = (source.passphrase_archive if which == "passphrase" else source.key_archive).read_bytes()
    at = _chunk_starts(good)[2] + 40
    damaged = tmp_path / "damaged.srb"
    damaged.write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :])
    extra = ["--passphrase-file", str(source.passphrase_file)] if which == "passphrase" else []
    with pytest.raises(ArchiveError, match="chunk 2 fails authentication"):
        verify_archive(Settings(data_dir=source.data_dir), damaged, passphrase=PASSPHRASE if extra else None)
    result = cli(source.data_dir, "backup", "--verify", str(damaged), *extra)
    assert result.returncode == 1 and "chunk 2 fails authentication" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_with_a_wrong_passphrase_refused(source: Source) -> None:
    with pytest.raises(ArchiveError, match="wrong passphrase"):
        verify_archive(Settings(data_dir=source.data_dir), source.passphrase_archive, passphrase="not the passphrase")


def _with_header(data: bytes, old: bytes, new: bytes) -> bytes:
    """The archive with its header text changed (any length), the length prefix updated."""
    start = len(MAGIC) + 6
    version, length = struct.unpack(">HI", data[len(MAGIC) : start])
    header = data[start : start + length]
    assert header.count(old) == 1
    header = header.replace(old, new)
    return data[: len(MAGIC)] + struct.pack(">HI", version, len(header)) + header + data[start + length :]


def test_unknown_scrypt_costs_refused_before_deriving(source: Source, tmp_path: Path) -> None:
    """n=2^20, r=32 would take 4 GiB: the header is unauthenticated until the key is derived, so only known
    parameter sets are derived with."""
    hostile = tmp_path / "hostile.srb"
    hostile.write_bytes(
        _with_header(source.passphrase_archive.read_bytes(), b'"n":131072,"r":8,', b'"n":1048576,"r":32,')
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for attempt in (verify_archive, restore):
        with pytest.raises(ArchiveError, match="unknown key-derivation costs"):
            attempt(Settings(data_dir=tmp_path / "target"), hostile, passphrase=PASSPHRASE)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 * 1024  # far below the 4 GiB the header asked for
    for cost in (b'"n":Infinity,"r":8,', b'"n":"131072","r":8,', b'"n":131072.0,"r":8,'):
        hostile.write_bytes(_with_header(source.passphrase_archive.read_bytes(), b'"n":131072,"r":8,', cost))
        with pytest.raises(ArchiveError, match="unknown key-derivation costs"):
            verify_archive(Settings(data_dir=tmp_path / "target"), hostile, passphrase=PASSPHRASE)


def test_a_header_nested_past_the_parsers_depth_is_damaged_not_a_crash(source: Source, tmp_path: Path) -> None:
    deep = tmp_path / "deep.srb"
    deep.write_bytes(
        _with_header(
            source.key_archive.read_bytes(), b'"tables":', b'"x":' + b"[" * 100_000 + b"]" * 100_000 + b',"tables":'
        )
    )
    with pytest.raises(ArchiveError, match="header is unreadable"):
        verify_archive(Settings(data_dir=source.data_dir), deep)


def _tree(root: Path) -> list[str]:
    """Every path under `root`, relative, sorted (empty for a missing root)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_a_refused_restore_leaves_the_target_as_it_found_it(source: Source, tmp_path: Path) -> None:
    """A wrong passphrase, a damaged archive or refused parameters leave no store and no fresh key behind, so the
    next restore (or `serve`) finds the directory as it was; what was there before stays."""
    damaged = tmp_path / "damaged.srb"
    good = source.passphrase_archive.read_bytes()
    at = _chunk_starts(good)[2] + 40
    damaged.write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :])
    hostile = tmp_path / "hostile.srb"
    hostile.write_bytes(_with_header(good, b'"n":131072,"r":8,', b'"n":1048576,"r":8,'))
    new = tmp_path / "new" / "nested"
    for archive, passphrase in ((source.passphrase_archive, "not the passphrase"), (damaged, PASSPHRASE)):
        with pytest.raises(ArchiveError):
            restore(Settings(data_dir=new), archive, passphrase=passphrase)
        assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArchiveError, match="unknown key-derivation costs"):
        restore(Settings(data_dir=empty), hostile, passphrase=PASSPHRASE)
    assert _tree(empty) == []
    keyed = tmp_path / "keyed"  # the source's key copied over, for its master-key archive
    keyed.mkdir()
    (keyed / "master.key").write_bytes((source.data_dir / "master.key").read_bytes())
    (keyed / "master.key").chmod(0o600)
    key_damaged = tmp_path / "key-damaged.srb"
    good = source.key_archive.read_bytes()
    at = _chunk_starts(good)[2] + 40
    key_damaged.write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :])
    with pytest.raises(ArchiveError, match="chunk 2 fails authentication"):
        restore(Settings(data_dir=keyed), key_damaged)
    assert _tree(keyed) == ["master.key"]
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    result = cli(new, "restore", str(source.passphrase_archive), "--passphrase-file", str(wrong))
    assert result.returncode == 1 and result.stderr.startswith("Error: wrong passphrase"), result.stderr
    assert not (tmp_path / "new").exists()
    # then the right passphrase restores as on a new machine, and an existing store is still refused, untouched
    restore(Settings(data_dir=new), source.passphrase_archive, passphrase=PASSPHRASE)
    before = {name: (new / name).read_bytes() for name in ("master.key", "strongroom.db")}
    with pytest.raises(ArchiveError, match="the target store is not empty"):
        restore(Settings(data_dir=new), source.passphrase_archive, passphrase=PASSPHRASE)
    assert {name: (new / name).read_bytes() for name in before} == before


def _pg_objects(url: str) -> list[tuple[str, str]]:
    """Every relation (table, sequence, view…) and user-defined type in the public schema of the database at `url`."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        rows = conn.execute(
            "SELECT c.relkind::text, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' UNION ALL SELECT 'type', t.typname FROM pg_type t JOIN pg_namespace n"
            " ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype <> 'b' AND t.typrelid = 0"
        ).fetchall()
    return sorted((str(kind), str(name)) for kind, name in rows)


@pytest.mark.postgres
def test_a_refused_restore_into_an_empty_postgres_database_leaves_it_empty(source: Source, tmp_path: Path) -> None:
    """A wrong passphrase, a damaged archive or refused parameters drop the tables, sequences and Alembic's table
    the restore's migration made in an empty PostgreSQL database; a database that held anything keeps all of it."""
    good = source.passphrase_archive.read_bytes()
    at = _chunk_starts(good)[2] + 40
    damaged = tmp_path / "damaged.srb"
    damaged.write_bytes(good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :])
    hostile = tmp_path / "hostile.srb"
    hostile.write_bytes(_with_header(good, b'"n":131072,"r":8,', b'"n":1048576,"r":8,'))
    refusals = (
        (source.passphrase_archive, "not the passphrase", "wrong passphrase"),
        (damaged, PASSPHRASE, "chunk 2 fails authentication"),
        (hostile, PASSPHRASE, "unknown key-derivation costs"),
    )
    with backend_database("postgres") as url:
        assert url is not None
        settings = Settings(data_dir=tmp_path / "target", database_url=url)
        for archive, passphrase, message in refusals:
            with pytest.raises(ArchiveError, match=message):
                restore(settings, archive, passphrase=passphrase)
            assert _pg_objects(url) == []
        # then the right passphrase restores, and the restored store is refused again and left whole
        restore(settings, source.passphrase_archive, passphrase=PASSPHRASE)
        restored = _pg_objects(url)
        assert ("r", "alembic_version") in restored and ("r", "credentials") in restored
        with pytest.raises(ArchiveError, match="the target store is not empty"):
            restore(settings, source.passphrase_archive, passphrase=PASSPHRASE)
        assert _pg_objects(url) == restored
    with backend_database("postgres") as url:  # a database with a table of its own before: never dropped
        assert url is not None
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
            conn.execute("CREATE TABLE theirs (id serial PRIMARY KEY)")
        settings = Settings(data_dir=tmp_path / "shared", database_url=url)
        with pytest.raises(ArchiveError, match="wrong passphrase"):
            restore(settings, source.passphrase_archive, passphrase="not the passphrase")
        after = _pg_objects(url)
        assert ("r", "theirs") in after and ("S", "theirs_id_seq") in after


@contextmanager
def small_disk(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mountpoint` for the test's duration; skips, saying why, where it cannot be."""
    mountpoint.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root and mount(8)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs failed (no CAP_SYS_ADMIN in this container?)")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_a_full_disk_during_restore_says_so(tmp_path: Path) -> None:
    """ENOSPC (SQLite's SQLITE_FULL) while the rows are written is reported as a full disk naming the database, not
    as a busy database to retry shortly; the store it was restoring into is left as it was."""
    big = tmp_path / "big"
    services = Services.open(Settings(data_dir=big))
    try:
        services.accounts.create_user("alice")
        who = services.accounts.authenticate(services.accounts.create_token("alice")[1])
        for i in range(24):  # about 600 KiB of incompressible secrets, far more than the space left below
            body = {"name": f"big-{i}", "credentialType": "basic", "user": "u", "password": secrets.token_hex(12_000)}
            make_credential(services, who, body)
        backup(services.db, services.barrier.keys, tmp_path / "big.srb", passphrase=PASSPHRASE)
    finally:
        services.close()
    (tmp_path / "pass.txt").write_text(PASSPHRASE)
    with small_disk(tmp_path / "disk", "4m") as disk:
        store = disk / "store"
        Services.open(Settings(data_dir=store)).close()  # an empty store, as `strongroom init` makes
        key = (store / "master.key").read_bytes()
        free = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 96 * 1024))
        result = cli(store, "restore", str(tmp_path / "big.srb"), "--passphrase-file", str(tmp_path / "pass.txt"))
        assert result.returncode == 1, result.stdout
        assert (
            f"Error: the disk holding the database {store / 'strongroom.db'} is full (no space left on the device)"
            in result.stderr
        ), result.stderr
        assert "retry shortly" not in result.stderr and "Traceback" not in result.stderr
        new = disk / "new"  # a new store does not even fit its schema: refused the same way, and nothing is left
        result = cli(new, "restore", str(tmp_path / "big.srb"), "--passphrase-file", str(tmp_path / "pass.txt"))
        assert result.returncode == 1, result.stdout
        assert f"Error: the disk holding the database {new / 'strongroom.db'} is full" in result.stderr, result.stderr
        assert not new.exists()
        with (disk / "filler").open("ab") as filler, pytest.raises(OSError, match="No space left"):
            filler.write(b"\0" * (1 << 20))  # not a byte left, for a key file there
            filler.flush()
        elsewhere, key_file = tmp_path / "elsewhere", disk / "keys" / "master.key"
        args = ("restore", str(tmp_path / "big.srb"), "--passphrase-file", str(tmp_path / "pass.txt"))
        result = cli(elsewhere, *args, extra={"STRONGROOM_MASTER_KEY_FILE": str(key_file)})
        assert result.returncode == 1, result.stdout
        full = f"Error: the disk holding {key_file} is full (no space left on the device)"
        assert result.stderr == f"{full}; free some space, then try again\n"
        assert not elsewhere.exists() and not key_file.parent.exists()
        (disk / "filler").unlink()
        assert (store / "master.key").read_bytes() == key
        services = Services.open(Settings(data_dir=store))
        try:
            assert services.accounts.list_users() == [] and all_secrets(services) == {}
        finally:
            services.close()
