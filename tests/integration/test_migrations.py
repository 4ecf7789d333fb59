"""Schema migrations keep what is stored: a store written by the previous release reads the same after upgrade."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from strongroom import credential_types
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.services.accounts import token_hash_of
from strongroom.store.db import MIGRATIONS, Database, head_revision
from tests.support import backend_database, fetch_credential, make_credential, names_waiting


def _body(ctype: credential_types.CredentialType) -> dict[str, Any]:
    """A complete create body of this type, with non-ASCII text where the API JSON must carry it verbatim."""
    body: dict[str, Any] = {"name": f"{ctype.name} naïve ✓", "credentialType": ctype.name, "description": 'dé"scr'}
    for f in ctype.fields:
        if f.name == ctype.exclusive:
            continue
        if f.kind == "object":
            body[f.name] = {"type": "service_account", "private_key": "pk", "client_email": "a@b.iam"}
        elif f.kind == "string_list":
            body[f.name] = ["https://storage.azure.com/.default", "ü"]
        else:
            body[f.name] = f"{f.name}-välue"
    return body


def _downgrade(url: str, revision: str) -> Database:
    """Move the schema to `revision`, as a store last used by that release would be; the caller disposes."""
    db = Database(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    return db


def _at_revision(url: str, revision: str) -> None:
    """`_downgrade` to a revision before the stored API JSON."""
    db = _downgrade(url, revision)
    try:
        assert "wire" not in {c["name"] for c in inspect(db.engine).get_columns("credentials")}
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrade_renders_the_api_json_of_existing_credentials(backend: str, tmp_path: Path) -> None:
    with backend_database(backend) as url:
        settings = Settings(data_dir=tmp_path, database_url=url)
        service = Services.open(settings)
        service.accounts.create_user("old")
        token = service.accounts.create_token("old")[1]
        who = service.accounts.authenticate(token)
        created = [make_credential(service, who, _body(t)) for t in credential_types.TYPES.values()]
        before = service.credentials.list(who, limit=100).credentials()
        assert sorted(before, key=lambda c: c["credentialId"]) == sorted(created, key=lambda c: c["credentialId"])
        assert any(
            c.keys() - {"credentialId", "name", "credentialType", "description", "creationDate", "role"} for c in before
        )
        service.close()

        _at_revision(settings.resolved_database_url, "0003")

        service = Services.open(settings)  # migrates to the newest revision at start
        try:
            who = service.accounts.authenticate(token)
            assert service.credentials.list(who, limit=100).credentials() == before
            for cred in created:
                assert fetch_credential(service, who, cred["credentialId"]) == cred
            assert service.credentials.get_for_token(token_hash_of(token), created[0]["credentialId"]) is not None
        finally:
            service.close()


def test_head_revision_read_from_the_files_is_alembics() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_head_revision_leaves_a_branch_or_an_unreadable_script_to_alembic(tmp_path: Path) -> None:
    for script in (MIGRATIONS / "versions").glob("*.py"):
        (tmp_path / script.name).write_text(script.read_text())
    assert head_revision(tmp_path) == head_revision()
    (tmp_path / "9998_branch.py").write_text('revision = "9998"\ndown_revision = "0001"\n')
    assert head_revision(tmp_path) is None
    (tmp_path / "9998_branch.py").write_text('revision = make_revision()\ndown_revision = "0001"\n')
    assert head_revision(tmp_path) is None


def test_an_up_to_date_store_opens_without_alembic_or_the_postgres_driver(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'strongroom.db'}"
    db = Database(url)
    db.migrate()
    db.dispose()
    code = (
        "import sys; from strongroom.store.db import Database; "
        f"db = Database({url!r}); db.migrate(); db.dispose(); "
        "print([m for m in ('alembic', 'psycopg') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _schema(db: Database) -> set[tuple[str, str]]:
    """Every (table, column) and (table, index) of the store."""
    inspector = inspect(db.engine)
    tables = inspector.get_table_names()
    columns = {(t, c["name"]) for t in tables for c in inspector.get_columns(t)}
    return columns | {(t, str(i["name"])) for t in tables for i in inspector.get_indexes(t)}


def test_a_store_behind_the_files_is_still_migrated(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'strongroom.db'}")
    try:
        db.migrate()
        current = _schema(db)
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "-1")
        assert _schema(db) != current  # the last revision changed tables, columns or indexes
        db.migrate()
        assert _schema(db) == current
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrade_derives_the_access_of_roles_and_members_already_stored(backend: str, tmp_path: Path) -> None:
    """Migration 0014 fills `credential_access` from the roles and memberships of a store written before it."""
    with backend_database(backend) as url:
        settings = Settings(data_dir=tmp_path, database_url=url)
        service = Services.open(settings)
        people = {}
        for name in ("alice", "bob", "carol"):
            service.accounts.create_user(name)
            people[name] = service.accounts.authenticate(service.accounts.create_token(name)[1])
        service.sharing.create_group(None, "team")
        for member in ("carol", "alice"):  # alice, an owner, in a group with a role on her own credential
            service.sharing.add_member(None, "team", member)
        cid = make_credential(service, people["alice"], {"name": "db", "user": "u", "password": "p"})["credentialId"]
        roles = [
            {"username": "bob", "role": "CONSUMER"},
            {"shareRecipientType": "group", "name": "team", "role": "EDITOR", "canShare": True},
        ]
        service.sharing.update_roles(people["alice"], cid, {"operation": "updateRoles", "roles": roles})
        with service.db.read() as s:
            before = set(s.execute(text("SELECT user_id, credential_id, role, can_share FROM credential_access")))
        assert {(row[0], row[2]) for row in before} == {(people["bob"].user_id, 1), (people["carol"].user_id, 2)}
        service.close()

        _downgrade(settings.resolved_database_url, "0013").dispose()

        service = Services.open(settings)  # migrates to the newest revision at start
        try:
            with service.db.read() as s:
                after = set(s.execute(text("SELECT user_id, credential_id, role, can_share FROM credential_access")))
            assert after == before
            carol = service.accounts.authenticate(service.accounts.create_token("carol", name="again")[1])
            assert [json.loads(w)["role"] for w in service.credentials.list(carol).items] == ["EDITOR"]
        finally:
            service.close()


def test_names_waiting_for_the_trigram_index_survive_a_downgrade_and_an_upgrade(tmp_path: Path) -> None:
    """SQLite, migration 0017: a downgrade indexes the names that wait and puts back the insert trigger; the upgrade
    counts every name indexed by then as indexed. Each way, a search finds every name through the index."""
    settings = Settings(data_dir=tmp_path)
    service = Services.open(settings)
    service.accounts.create_user("old")
    token = service.accounts.create_token("old")[1]
    make_credential(service, service.accounts.authenticate(token), {"name": "waiting-1", "user": "u", "password": "p"})
    service.close()

    db = _downgrade(settings.resolved_database_url, "0016")
    try:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO credentials SELECT 'x' || substr(id, 2), owner_id, 'waiting-2', credential_type, "
                "description, public_data, key_version, wrapped_key, ciphertext, revision, created_at, updated_at, "
                "replace(wire, 'waiting-1', 'waiting-2'), seal_generation FROM credentials"
            )
            found = "SELECT count(*) FROM credential_names WHERE credential_names MATCH '\"waiting-\"'"
            assert conn.exec_driver_sql(found).scalar_one() == 2  # one by the downgrade, one by the trigger
    finally:
        db.dispose()

    service = Services.open(settings)
    try:
        assert names_waiting(service) == 0
        who = service.accounts.authenticate(token)
        names = sorted(c["name"] for c in service.credentials.list(who, search="AITING-").credentials())
        assert names == ["waiting-1", "waiting-2"]
    finally:
        service.close()
