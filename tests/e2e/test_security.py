"""Secrets never leak: not to disk in plaintext, not to logs or responses; keys are checked before serving."""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom import backup, credential_types
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.store.models import Credential
from tests.support import (
    Server,
    backend_database,
    canary,
    canary_body,
    http_client,
    log_with,
    make_credential,
    secrets_of,
    stored_bytes,
)


def test_canary_secrets_never_stored_logged_or_returned(server: Server, tmp_path: Path) -> None:
    planted: list[str] = []
    token = server.new_user("canary")
    responses: list[bytes] = []
    headers = {"Authorization": f"Token {token}"}
    with http_client(base_url=server.api, headers=headers, timeout=30) as api:

        def call(method: str, url: str, **kw: Any) -> httpx.Response:
            resp = api.request(method, url, **kw)
            assert resp.status_code < 500, resp.text
            responses.append(resp.content)
            return resp

        ids = []
        for ctype in credential_types.TYPES.values():
            resp = call("POST", "credentials/", json=canary_body(ctype, planted))
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["credentialId"])
        call("GET", "version/")
        call("GET", "credentials/", params={"limit": 5})
        call("GET", "credentials/", params={"types": "basic,s3"})
        for cid in ids:
            call("GET", f"credentials/{cid}/")
        # Updates of secrets, valid and invalid: neither may echo or store the value in plaintext.
        new_password, bad_value = canary(), canary()
        planted += [new_password, bad_value]
        basic_id = ids[0]
        assert call("PATCH", f"credentials/{basic_id}/", json={"password": new_password}).status_code == 200
        assert call("PATCH", f"credentials/{basic_id}/", json={"nonsense": bad_value}).status_code == 422
        assert call("POST", "credentials/", json={"name": "x", "password": bad_value, "bogus": 1}).status_code == 422
        assert call("POST", "credentials/", json={"name": "y", "user": "u", "password": [bad_value]}).status_code == 422
        assert call("POST", "credentials/", content=b'{"password": "' + bad_value.encode()).status_code == 400
        assert call("DELETE", f"credentials/{ids[-1]}/").status_code == 204

    assert len(planted) >= 20
    on_disk = stored_bytes(server, tmp_path)
    log = log_with(server, b"credentials/")
    assert b"credentials/" in log  # the access log is really being captured and scanned
    for value in planted:
        needle = value.encode()
        assert needle not in on_disk, "plaintext secret found in the database"
        assert needle not in log, "secret found in the server log"
        assert not any(needle in body for body in responses), "secret echoed in a response"
    assert token.encode() not in on_disk and token.encode() not in log

    # The audit trail of that session, read over the API and the CLI and exported for a SIEM, names what
    # happened to each credential and holds no planted secret and no token.
    with http_client(base_url=server.api, headers=headers, timeout=30) as api:
        records = api.get("auditLog/", params={"limit": 1000})
    assert records.status_code == 200, records.text
    about = {(r["target"] or {}).get("credentialId") for r in records.json()["data"]}
    assert set(ids) <= about and {"credential.replace_secret", "credential.delete"} <= {
        r["action"] for r in records.json()["data"]
    }
    exported = server.cli("audit", "export")
    listed = server.cli("audit", "list", "--json", "--token", token)
    assert all(cid in exported.stdout and cid in listed.stdout for cid in ids)
    audit_texts = {
        "audit records answered": records.content,
        "audit export": (exported.stdout + exported.stderr).encode(),
        "audit list": (listed.stdout + listed.stderr).encode(),
    }
    for value in [*planted, token]:
        for where, content in audit_texts.items():
            assert value.encode() not in content, f"secret or token found in the {where}"

    # A backup and its restore: the archive, the restored database and both commands' output hold no
    # planted secret, no token and not the archive's passphrase.
    passphrase = canary()
    (tmp_path / "passphrase").write_text(passphrase)
    archive = tmp_path / "store.srb"
    made = server.cli("backup", str(archive), "--passphrase-file", str(tmp_path / "passphrase"))
    master_key = (server.data_dir / "master.key").read_text()
    restored = Server(data_dir=tmp_path / "restored", extra_env={"STRONGROOM_MASTER_KEY": master_key})
    loaded = restored.cli("restore", str(archive), "--passphrase-file", str(tmp_path / "passphrase"))
    service = Services.open(Settings(data_dir=restored.data_dir, master_key=master_key))
    try:  # the archive really carries this user's credentials, so scanning it means something
        assert service.credentials.list(service.accounts.authenticate(token), limit=1000).total == len(ids) - 1
    finally:
        service.close()
    with archive.open("rb") as fh:  # opened with the passphrase, the archive still holds only sealed secrets
        header = backup.read_header(fh)
        inner = b"".join(backup._chunks(fh, header, backup._archive_key(header, service.barrier.keys, passphrase)))
    assert all(cid.encode() in inner for cid in ids[:-1])  # these rows are really in there
    scanned = {
        "backup archive": archive.read_bytes(),
        "archive's decrypted content": inner,
        "restored database": stored_bytes(restored, tmp_path),
        "backup/restore output": (made.stdout + made.stderr + loaded.stdout + loaded.stderr).encode(),
    }
    for value in [*planted, token, passphrase]:
        for where, content in scanned.items():
            assert value.encode() not in content, f"plaintext secret found in the {where}"


def test_user_isolation(server: Server, api: httpx.Client) -> None:
    created = api.post("credentials/", json={"name": "mine", "user": "u", "password": "p"})
    assert created.status_code == 201
    cid = created.json()["credentialId"]
    unknown = "0" * 24
    other = http_client(base_url=server.api, headers={"Authorization": f"Bearer {server.new_user('other')}"})
    with other:
        assert other.get("credentials/").json()["data"] == []
        for method, kw in (("GET", {}), ("PATCH", {"json": {"name": "stolen"}}), ("DELETE", {})):
            theirs = other.request(method, f"credentials/{cid}/", **kw)
            nothing = other.request(method, f"credentials/{unknown}/", **kw)
            assert theirs.status_code == nothing.status_code == 404
            assert theirs.json() == nothing.json()
        # The same name is free for another user: names are per owner.
        assert other.post("credentials/", json={"name": "mine", "user": "u", "password": "p"}).status_code == 201
    assert api.get(f"credentials/{cid}/").json()["name"] == "mine"


def _serve_once(server: Server) -> subprocess.CompletedProcess[str]:
    """Run `strongroom serve` expecting it to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "strongroom", "serve"], env=server.env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def seeded_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory of a server that stored one sealed credential through HTTP and stopped: started once
    for the module, since every test only copies it."""
    srv = Server(data_dir=tmp_path_factory.mktemp("seeded") / "data")
    srv.start()
    token = srv.new_user()
    resp = httpx.post(
        f"{srv.api}/credentials/",
        json={"name": "c", "user": "u", "password": "p"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 201
    srv.stop()
    return srv.data_dir


@pytest.fixture
def seeded(seeded_once: Path, tmp_path: Path) -> Server:
    """A stopped server of the test's own whose store holds one sealed credential (a copy of `seeded_once`, file
    modes included, so a test may break its key file)."""
    shutil.copytree(seeded_once, tmp_path / "data")
    return Server(data_dir=tmp_path / "data")


def test_key_file_is_private_and_world_readable_refused(seeded: Server) -> None:
    key_file = seeded.data_dir / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key_file.chmod(0o644)
    result = _serve_once(seeded)
    assert result.returncode != 0
    assert "accessible to other users" in result.stderr + result.stdout


def test_wrong_master_key_refused_at_start(seeded: Server) -> None:
    seeded.extra_env["STRONGROOM_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    result = _serve_once(seeded)
    assert result.returncode != 0
    assert "master key version 1" in result.stdout + result.stderr
    assert "not the key this database was sealed with" in result.stdout + result.stderr


def test_missing_key_file_refused_not_regenerated(seeded: Server) -> None:
    key_file = seeded.data_dir / "master.key"
    key_file.unlink()
    result = _serve_once(seeded)
    assert result.returncode != 0
    assert "is missing" in result.stdout + result.stderr
    assert not key_file.exists()  # a new key over old data would make every secret unreadable


def test_right_key_from_environment_starts(seeded: Server) -> None:
    """The same key given through STRONGROOM_MASTER_KEY (keyring JSON) is accepted."""
    seeded.extra_env["STRONGROOM_MASTER_KEY"] = (seeded.data_dir / "master.key").read_text()
    (seeded.data_dir / "master.key").unlink()
    seeded.start()
    seeded.stop()


def test_tokens_stored_only_as_hash(tmp_path: Path) -> None:
    service = Services.open(Settings(data_dir=tmp_path))
    service.accounts.create_user("alice")
    _, raw = service.accounts.create_token("alice")
    service.close()
    with sqlite3.connect(tmp_path / "strongroom.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert raw not in dump and raw.startswith("sr_") and len(raw) > 40


@pytest.mark.postgres
def test_postgres_backend_seals_too(tmp_path: Path) -> None:
    """The envelope and key check behave the same on PostgreSQL."""
    with backend_database("postgres") as url:
        settings = Settings(data_dir=tmp_path, database_url=url)
        service = Services.open(settings)
        service.accounts.create_user("alice")
        who = service.accounts.authenticate(service.accounts.create_token("alice")[1])
        cred = make_credential(service, who, {"name": "pg", "user": "u", "password": "p"})
        with service.db.read() as db:
            assert secrets_of(service, db.get(Credential, cred["credentialId"])) == {"user": "u", "password": "p"}
        service.close()
        wrong = Settings(data_dir=tmp_path, database_url=url, master_key=base64.b64encode(os.urandom(32)).decode())
        with pytest.raises(Exception, match="not the key this database was sealed with"):
            Services.open(wrong)


def test_serve_prints_the_database_url_without_its_password_parameter(tmp_path: Path) -> None:
    """libpq reads a password from the URL's query as well as before the host: `serve`'s banner masks both."""
    with backend_database("postgres") as url:
        assert url is not None
        secret = "PGPASS-CANARY-" + os.urandom(4).hex()  # the machine's PostgreSQL trusts any password
        srv = Server(data_dir=tmp_path / "pg", database_url=f"{url}?password={secret}&sslmode=disable")
        srv.start()
        try:
            log = srv.log_path.read_text()
        finally:
            srv.stop()
    assert "database: postgresql+psycopg://" in log and "password=***" in log
    assert secret not in log
