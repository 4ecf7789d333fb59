"""Backup and restore: a faithful round trip across backends, and every damaged or mismatched archive refused."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from strongroom import credential_types
from strongroom.backup import MAGIC, ArchiveError, backup, header_of, restore
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.crypto import load_keyring
from strongroom.store import Database
from strongroom.store.models import Base, Credential, utcnow
from tests.support import (
    PgDatabase,
    Server,
    canary_body,
    client,
    make_credential,
    pg_unreachable_reason,
    secrets_of,
)

PASSPHRASE = "correct horse battery staple"


@dataclass
class Source:
    """A live SQLite server holding several users, tokens and credentials of every type."""

    server: Server
    tokens: dict[str, str]  # username -> a working token
    revoked: str
    planted: list[str]
    listings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # username -> API list

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.server.data_dir)


def _listings(server: Server, tokens: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Every credential each user sees through the API, list and get alike."""
    seen = {}
    for username, token in tokens.items():
        with client(server, token) as api:
            listed = api.get("credentials/", params={"limit": 1000}).json()["data"]
            assert [api.get(f"credentials/{c['credentialId']}/").json() for c in listed] == listed
            assert api.get("credentials/", params={"limit": 1}).json()["totalCount"] == len(listed)
            seen[username] = listed
    return seen


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    srv = Server(data_dir=tmp_path_factory.mktemp("backup") / "source")
    srv.start()
    service = Services.open(Settings(data_dir=srv.data_dir))
    tokens = {}
    for username in ("alice", "bob"):
        service.accounts.create_user(username)
        tokens[username] = service.accounts.create_token(username, expires_at=utcnow() + timedelta(days=30))[1]
    revoked = service.accounts.create_token("alice", "old")
    service.accounts.revoke_token(revoked[0].id)
    service.close()
    planted: list[str] = []
    with client(srv, tokens["alice"]) as alice, client(srv, tokens["bob"]) as bob:
        for ctype in credential_types.TYPES.values():
            assert alice.post("credentials/", json=canary_body(ctype, planted)).status_code == 201
        body = canary_body(credential_types.TYPES["basic"], planted)
        made = bob.post("credentials/", json={**body, "description": "b"})
        patched = bob.patch(f"credentials/{made.json()['credentialId']}/", json={"password": "canary-rotated-1"})
        assert patched.status_code == 200
        planted[planted.index(body["password"])] = "canary-rotated-1"  # the replaced one is gone for good
        lake = bob.post("credentials/", json={"name": "lake", "credentialType": "s3", "configId": "cfg"})
        assert lake.is_success
        # A share, so the derived access rows (not archived, rebuilt by a restore) have one to rebuild.
        shared = {"operation": "updateRoles", "roles": [{"username": "alice", "role": "CONSUMER"}]}
        assert bob.patch(f"credentials/{lake.json()['credentialId']}/sharedRoles/", json=shared).status_code == 204
    src = Source(srv, tokens, revoked[1], planted)
    src.listings = _listings(srv, tokens)
    yield src
    srv.stop()


def table_rows(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (derived ones too, not the source's own backup records), for exact comparison;
    tokens' `last_used_at` is left out, as serving (the source's, the targets') writes it in the background."""
    db = Database(settings.resolved_database_url)
    try:
        with db.read() as s:
            return {
                t.name: [
                    tuple(v for c, v in zip(t.columns, r, strict=True) if c.name != "last_used_at")
                    for r in s.execute(select(t).order_by(*t.primary_key.columns))
                ]
                for t in Base.metadata.sorted_tables
                if t.name != "backups"
            }
    finally:
        db.dispose()


def rewrapped_rows(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows a self-contained (passphrase) restore keeps: not the key versions, nor how data keys are wrapped."""
    columns = [c.name for c in Credential.__table__.columns]
    drop = {columns.index("key_version"), columns.index("wrapped_key")}
    credentials = [tuple(v for i, v in enumerate(row) if i not in drop) for row in rows["credentials"]]
    return {**{k: v for k, v in rows.items() if k != "key_versions"}, "credentials": credentials}


def decrypted(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every credential's secrets, opened by the service with the store's own keys."""
    service = Services.open(settings)
    try:
        with service.db.read() as s:
            return {c.id: secrets_of(service, c) for c in s.scalars(select(Credential))}
    finally:
        service.close()


def empty_target(root: Path, source: Source, database_url: str | None = None) -> Server:
    """A server directory with the source's key file and no data (its database is created by the restore)."""
    target = Server(data_dir=root, database_url=database_url)
    root.mkdir(mode=0o700, parents=True)
    shutil.copy2(source.server.data_dir / "master.key", root / "master.key")
    return target


def settings_of(server: Server) -> Settings:
    master_key = server.extra_env.get("STRONGROOM_MASTER_KEY")
    return Settings(data_dir=server.data_dir, database_url=server.database_url, master_key=master_key)


def assert_serves_the_same(target: Server, source: Source) -> None:
    """The restored store, served, authenticates the same tokens and returns the same credentials."""
    target.start()
    try:
        assert _listings(target, source.tokens) == source.listings
        revoked = httpx.get(f"{target.api}/version/", headers={"Authorization": f"Bearer {source.revoked}"})
        assert revoked.status_code == 401
    finally:
        target.stop()


@pytest.mark.postgres
def test_round_trip_sqlite_to_postgres_and_back(source: Source, tmp_path: Path) -> None:
    reason = pg_unreachable_reason()
    if reason:
        pytest.skip(reason)
    original_rows = table_rows(source.settings)
    original_secrets = decrypted(source.settings)
    assert len(original_secrets) == len(credential_types.TYPES) + 2
    assert all(value in json.dumps(original_secrets) for value in source.planted)  # what the users sent

    first = tmp_path / "store.srb"
    made = source.server.cli("backup", str(first))  # while the server is running
    assert f"{len(original_secrets)} credential(s)" in made.stdout and first.stat().st_mode & 0o777 == 0o600

    pg = PgDatabase()
    pg.create()
    try:
        on_pg = empty_target(tmp_path / "pg", source, pg.url)
        on_pg.cli("restore", str(first))
        assert table_rows(settings_of(on_pg)) == original_rows
        assert decrypted(settings_of(on_pg)) == original_secrets
        assert_serves_the_same(on_pg, source)

        # Back again, now with a passphrase and the master key given in the environment.
        (tmp_path / "passphrase").write_text(PASSPHRASE + "\n")
        second = tmp_path / "from-pg.srb"
        on_pg.cli("backup", str(second), "--passphrase-file", str(tmp_path / "passphrase"))
    finally:
        pg.drop()
    on_sqlite = Server(
        data_dir=tmp_path / "sqlite",
        extra_env={"STRONGROOM_MASTER_KEY": (source.server.data_dir / "master.key").read_text()},
    )
    on_sqlite.cli("restore", str(second), "--passphrase-file", str(tmp_path / "passphrase"))
    final_rows = table_rows(settings_of(on_sqlite))
    # Serving on PostgreSQL added audit records (a bad token is one); the original chain is kept as it was.
    assert set(original_rows["audit_log"]) < set(final_rows["audit_log"])
    audit = ("audit_log", "audit_heads")
    assert {k: v for k, v in rewrapped_rows(final_rows).items() if k not in audit} == {
        k: v for k, v in rewrapped_rows(original_rows).items() if k not in audit
    }
    assert decrypted(settings_of(on_sqlite)) == original_secrets
    assert_serves_the_same(on_sqlite, source)


# ---- refused archives: each leaves the target empty ------------------------------------------------------


@pytest.fixture(scope="module")
def archives(source: Source, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A master-key archive of several small chunks, and a passphrase archive, of the source store."""
    root = tmp_path_factory.mktemp("archives")
    service = Services.open(source.settings)
    try:
        backup(service.db, service.barrier.keys, root / "key.srb", chunk_bytes=1024)
        backup(service.db, service.barrier.keys, root / "pass.srb", passphrase=PASSPHRASE)
    finally:
        service.close()
    return {"key": (root / "key.srb").read_bytes(), "pass": (root / "pass.srb").read_bytes()}


def chunk_spans(data: bytes) -> list[tuple[int, int]]:
    """Where each sealed chunk (length prefix included) lies, parsed independently of the code under test."""
    _, header_length = struct.unpack(">HI", data[len(MAGIC) : len(MAGIC) + 6])
    at = len(MAGIC) + 6 + header_length
    spans = []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        spans.append((at, at + 4 + length))
        at += 4 + length
    return spans


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def swap_chunks(data: bytes, a: int, b: int) -> bytes:
    spans = chunk_spans(data)
    parts = [data[s:e] for s, e in spans]
    parts[a], parts[b] = parts[b], parts[a]
    return data[: spans[0][0]] + b"".join(parts)


def drop_chunk(data: bytes, index: int) -> bytes:
    start, end = chunk_spans(data)[index]
    return data[:start] + data[end:]


def edit_header(data: bytes, old: bytes, new: bytes) -> bytes:
    """Change header text in place (same length), leaving the file well-formed."""
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


TAMPERED: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "byte flipped in a chunk": (lambda d: flip(d, chunk_spans(d)[1][0] + 30), "chunk 1 fails authentication"),
    "header edited": (lambda d: edit_header(d, b'"createdAt":"2', b'"createdAt":"3'), "chunk 0 fails authentication"),
    "header unreadable": (lambda d: edit_header(d, b'"zlib"', b'"lz4!"'), "header is unreadable"),
    "chunks swapped": (lambda d: swap_chunks(d, 0, 1), "chunk 0 fails authentication"),
    "middle chunk dropped": (lambda d: drop_chunk(d, 1), "chunk 1 fails authentication"),
    "final chunk dropped": (lambda d: drop_chunk(d, -1), "truncated: it ends after"),
    "cut inside a chunk": (lambda d: d[: chunk_spans(d)[-2][1] - 10], "truncated in chunk"),
    "cut inside the header": (lambda d: d[: len(MAGIC) + 20], "header is incomplete"),
    "empty file": (lambda d: b"", "not a Strongroom backup"),
    "bytes appended": (lambda d: d + b"\x00" * 8, "after its final chunk"),
    "format version 2": (lambda d: d[: len(MAGIC)] + b"\x00\x02" + d[len(MAGIC) + 2 :], "format version 2"),
    "not an archive": (lambda d: b"SQLite format 3\x00" + d[16:], "not a Strongroom backup"),
}


def assert_still_empty(settings: Settings) -> None:
    if settings.database_url is None and not (settings.data_dir / "strongroom.db").exists():
        return
    rows = table_rows(settings)
    assert not any(rows[name] for name in ("users", "api_tokens", "credentials", "credential_counts"))


@pytest.mark.parametrize("case", TAMPERED)
def test_damaged_archive_refused(case: str, archives: dict[str, bytes], source: Source, tmp_path: Path) -> None:
    mutate, expected = TAMPERED[case]
    assert len(chunk_spans(archives["key"])) >= 4  # small chunks, so order and truncation matter
    path = tmp_path / "bad.srb"
    path.write_bytes(mutate(archives["key"]))
    settings = settings_of(empty_target(tmp_path / "target", source))
    with pytest.raises(ArchiveError, match=expected):
        restore(settings, path)
    assert_still_empty(settings)


def other_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


KEY_CASES: dict[str, tuple[str, str | None, str | None, str]] = {
    # archive, passphrase given, target's master key ("none": no key, "v2": only a version 2), expected refusal
    "wrong passphrase": ("pass", "not the passphrase at all", None, "wrong passphrase"),
    "passphrase missing": ("pass", None, None, "protected by a passphrase"),
    "passphrase for a key archive": ("key", PASSPHRASE, None, "sealed with the store's master key, not a passphrase"),
    "another master key": ("key", None, "other", "not the key of the store that made this backup"),
    "no master key at all": ("key", None, "none", "restore needs the master key"),
}


@pytest.mark.parametrize("case", KEY_CASES)
def test_wrong_key_or_passphrase_refused(case: str, archives: dict[str, bytes], source: Source, tmp_path: Path) -> None:
    kind, passphrase, master, expected = KEY_CASES[case]
    path = tmp_path / "archive.srb"
    path.write_bytes(archives[kind])
    target = empty_target(tmp_path / "target", source)
    if master == "other":
        target.extra_env["STRONGROOM_MASTER_KEY"] = other_key()
    elif master == "v2":
        keyring = {"format": "strongroom-keyring-1", "active": 2, "keys": {"2": other_key()}}
        target.extra_env["STRONGROOM_MASTER_KEY"] = json.dumps(keyring)
    elif master == "none":
        (target.data_dir / "master.key").unlink()
    settings = settings_of(target)
    with pytest.raises(ArchiveError, match=expected):
        restore(settings, path, passphrase=passphrase)
    assert_still_empty(settings)
    assert master != "none" or not (target.data_dir / "master.key").exists()  # never a fresh key over old data


def test_target_must_be_empty_and_at_the_same_schema(
    archives: dict[str, bytes], source: Source, tmp_path: Path
) -> None:
    path = tmp_path / "archive.srb"
    path.write_bytes(archives["key"])
    settings = settings_of(empty_target(tmp_path / "target", source))
    restore(settings, path)
    restored = table_rows(settings)
    assert restored == table_rows(source.settings)
    with pytest.raises(ArchiveError, match="target store is not empty"):
        restore(settings, path)
    assert table_rows(settings) == restored

    # An archive made at an older schema revision: refused, naming both revisions.
    old = tmp_path / "old"
    old.mkdir(mode=0o700)
    shutil.copy2(source.server.data_dir / "master.key", old / "master.key")
    with (
        sqlite3.connect(source.server.data_dir / "strongroom.db") as live,
        sqlite3.connect(old / "strongroom.db") as copy,
    ):
        live.backup(copy)
    with sqlite3.connect(old / "strongroom.db") as copy:
        copy.execute("UPDATE alembic_version SET version_num = '0001'")
    old_settings = Settings(data_dir=old)
    service = Services.build(
        Database(old_settings.resolved_database_url),
        load_keyring(env_value=None, key_file=old_settings.resolved_key_file, create=False),
    )
    try:
        backup(service.db, service.barrier.keys, tmp_path / "old.srb")
    finally:
        service.close()
    fresh = settings_of(empty_target(tmp_path / "fresh", source))
    with pytest.raises(ArchiveError, match="archive is at schema revision 0001 but this store is at"):
        restore(fresh, tmp_path / "old.srb")
    assert_still_empty(fresh)


def test_cli_refusals_are_one_clean_line(archives: dict[str, bytes], source: Source, tmp_path: Path) -> None:
    target = empty_target(tmp_path / "target", source)
    damaged = tmp_path / "damaged.srb"
    damaged.write_bytes(flip(archives["key"], chunk_spans(archives["key"])[2][0] + 40))
    locked = tmp_path / "locked.srb"
    locked.write_bytes(archives["pass"])
    refusals = {
        "chunk 2 fails authentication": target.cli("restore", str(damaged), check=False, process=True),
        "protected by a passphrase": target.cli("restore", str(locked), input="", check=False, process=True),
        "already exists": source.server.cli("backup", str(damaged), check=False, process=True),
        "cannot write": source.server.cli("backup", str(tmp_path / "no-such-dir" / "x.srb"), check=False, process=True),
        "at least 10 characters": source.server.cli(
            "backup", str(tmp_path / "weak.srb"), "--passphrase-file", "-", input="short", check=False, process=True
        ),
    }
    for expected, result in refusals.items():
        assert result.returncode == 1, result.stderr
        assert expected in result.stderr and "Error:" in result.stderr and "Traceback" not in result.stderr
    assert_still_empty(settings_of(target))
    assert not (tmp_path / "weak.srb").exists() and not (tmp_path / "no-such-dir").exists()


# ---- AWS KMS (a local moto server) ---------------------------------------------------------------------------


def test_kms_store_round_trip(kms: Any, kms_endpoint: str, tmp_path: Path) -> None:
    """Master keys in KMS: the archive key is wrapped by KMS too, and a KMS target finds every version's key
    id in the archive; without KMS configured, the restore is refused naming the key."""
    arn, elsewhere = (kms.create_key(Description=d)["KeyMetadata"]["Arn"] for d in ("source", "target's default"))

    def on_kms(root: Path, key_id: str) -> Settings:
        return Settings(data_dir=root, kms_key_id=key_id, kms_endpoint_url=kms_endpoint)

    source = on_kms(tmp_path / "source", arn)
    service = Services.open(source)
    try:
        service.accounts.create_user("alice")
        who = service.accounts.authenticate(service.accounts.create_token("alice")[1])
        for i in range(3):
            make_credential(service, who, {"name": f"k{i}", "user": "u", "password": f"kms-canary-{i}"})
        backup(service.db, service.barrier.keys, tmp_path / "key.srb")
        backup(service.db, service.barrier.keys, tmp_path / "pass.srb", passphrase=PASSPHRASE)
    finally:
        service.close()
    assert json.loads(header_of(tmp_path / "key.srb").raw)["key"]["keyRef"] == arn
    original_rows, original_secrets = table_rows(source), decrypted(source)
    assert sorted(s["password"] for s in original_secrets.values()) == [f"kms-canary-{i}" for i in range(3)]

    for kind, passphrase in (("key", None), ("pass", PASSPHRASE)):
        target = on_kms(tmp_path / f"target-{kind}", elsewhere)  # the key a new store there would use
        restore(target, tmp_path / f"{kind}.srb", passphrase=passphrase)
        same = (lambda rows: rows) if kind == "key" else rewrapped_rows  # a passphrase archive is re-wrapped
        assert same(table_rows(target)) == same(original_rows) and decrypted(target) == original_secrets
        assert not (target.data_dir / "master.key").exists()  # nothing local holds key material

    local = Settings(data_dir=tmp_path / "local-key", master_key=other_key())
    with pytest.raises(ArchiveError, match=f"is the AWS KMS key {arn}; set STRONGROOM_KMS_KEY_ID"):
        restore(local, tmp_path / "key.srb")
    assert_still_empty(local)
    local = Settings(data_dir=tmp_path / "local-pass")  # self-contained: a new local store, its own fresh key
    restore(local, tmp_path / "pass.srb", passphrase=PASSPHRASE)
    assert decrypted(local) == original_secrets
