"""Envelope encryption through the services: a fresh data key and nonce per credential, and ciphertext bound to
its row (copied to another row or owner it does not decrypt)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, update

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.crypto import DecryptionError
from strongroom.store.models import Credential
from tests.support import make_credential, secrets_of


@pytest.fixture
def local_store(tmp_path: Path) -> Services:
    service = Services.open(Settings(data_dir=tmp_path / "data"))
    yield service
    service.close()


def test_copied_ciphertext_does_not_decrypt(local_store: Services) -> None:
    s = local_store
    s.accounts.create_user("alice"), s.accounts.create_user("mallory")
    alice = s.accounts.authenticate(s.accounts.create_token("alice")[1])
    mallory = s.accounts.authenticate(s.accounts.create_token("mallory")[1])
    source = make_credential(s, alice, {"name": "prod", "user": "admin", "password": "hunter2"})
    targets = [
        make_credential(s, mallory, {"name": "mine", "user": "m", "password": "m"}),  # another owner
        make_credential(s, alice, {"name": "other", "user": "a", "password": "a"}),  # same owner, other row
    ]
    with s.db.write() as db:
        row = db.get(Credential, source["credentialId"])
        sealed = {"key_version": row.key_version, "wrapped_key": row.wrapped_key, "ciphertext": row.ciphertext}
        for target in targets:
            db.execute(update(Credential).where(Credential.id == target["credentialId"]).values(**sealed))
    with s.db.read() as db:
        assert secrets_of(s, db.get(Credential, source["credentialId"])) == {"user": "admin", "password": "hunter2"}
        for target in targets:
            with pytest.raises(DecryptionError):
                secrets_of(s, db.get(Credential, target["credentialId"]))
    # A secret update on the tampered row is refused instead of re-sealing someone else's secrets.
    with pytest.raises(DecryptionError):
        s.credentials.update(mallory, targets[0]["credentialId"], {"password": "new"})


def test_secrets_are_aes_gcm_sealed_per_credential(local_store: Services) -> None:
    s = local_store
    s.accounts.create_user("alice")
    who = s.accounts.authenticate(s.accounts.create_token("alice")[1])
    a = make_credential(s, who, {"name": "a", "user": "same", "password": "same"})
    b = make_credential(s, who, {"name": "b", "user": "same", "password": "same"})
    with s.db.read() as db:
        rows = db.scalars(select(Credential).where(Credential.id.in_([a["credentialId"], b["credentialId"]]))).all()
    # Fresh data key and nonce per credential: equal plaintexts give unrelated ciphertexts.
    assert rows[0].ciphertext != rows[1].ciphertext and rows[0].wrapped_key != rows[1].wrapped_key
    assert all(len(r.wrapped_key) == 12 + 32 + 16 for r in rows)  # nonce + AES-256 key + GCM tag
    assert all(b"same" not in r.ciphertext for r in rows)
