"""A deleted secret is gone from the SQLite file (secure_delete) and from its WAL after the next checkpoint
(journal_size_limit: the WAL is cut back when it starts over, instead of keeping old frames past its end)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import select

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.store.models import Credential
from tests.support import make_credential


def test_deleted_ciphertext_leaves_no_trace_in_file_or_wal(tmp_path: Path) -> None:
    services = Services.open(Settings(data_dir=tmp_path))
    try:
        services.accounts.create_user("alice")
        who = services.accounts.authenticate(services.accounts.create_token("alice")[1])
        body = {"name": "doomed", "credentialType": "basic", "user": "etl", "password": "p" * 200}
        doomed = make_credential(services, who, body)["credentialId"]
        make_credential(services, who, {**body, "name": "kept"})  # the page stays in use, not freed whole
        with services.db.read() as s:
            row = s.scalars(select(Credential).where(Credential.id == doomed)).one()
            traces = [bytes(row.ciphertext), bytes(row.wrapped_key)]
        services.credentials.delete(who, doomed)
        with sqlite3.connect(tmp_path / "strongroom.db") as conn:  # what SQLite's automatic checkpoint does
            assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
        make_credential(services, who, {**body, "name": "later"})  # the next write starts the WAL over
        files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("strongroom.db")}
        assert files["strongroom.db"]
        found = [name for name, data in files.items() for trace in traces if trace[-16:] in data]
        assert found == []
    finally:
        services.close()
