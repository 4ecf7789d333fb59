"""A sealed secret is bound to its row, its seal generation and its public fields (crypto/barrier.py).

With write access to the database (and nothing else), an attacker must not be able to bring back an older
password of a row, swap a public field (a `configId`, a tenant) under a secret, or replay a seal made before
generations existed once the store has upgraded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.crypto.barrier import Binding
from strongroom.crypto.keys import DecryptionError
from strongroom.services.accounts import Principal
from strongroom.store.models import Credential, StoreState
from tests.support import backend_database, make_credential

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    with backend_database(request.param, migrated=True) as url:
        yield Settings(data_dir=tmp_path, database_url=url)


@pytest.fixture
def store(settings: Settings) -> Iterator[tuple[Services, Principal]]:
    services = Services.open(settings)
    services.accounts.create_user("alice")
    who = services.accounts.authenticate(services.accounts.create_token("alice")[1])
    yield services, who
    services.close()


def _row(services: Services, credential_id: str) -> Credential:
    with services.db.read() as s:
        row = s.get(Credential, credential_id)
        assert row is not None
        return row


def _set(services: Services, credential_id: str, **values: object) -> None:
    with services.db.write() as s:
        s.execute(update(Credential).where(Credential.id == credential_id).values(**values))


def test_an_older_ciphertext_of_the_same_row_no_longer_opens(store: tuple[Services, Principal]) -> None:
    services, who = store
    cid = make_credential(services, who, {"name": "db", "user": "etl", "password": "old-secret"})["credentialId"]
    old = _row(services, cid)
    services.credentials.update(who, cid, {"password": "new-secret"})
    assert _row(services, cid).seal_generation == old.seal_generation + 1
    _set(services, cid, key_version=old.key_version, wrapped_key=old.wrapped_key, ciphertext=old.ciphertext)
    with pytest.raises(DecryptionError):
        services.credentials.secrets(who, cid)
    with pytest.raises(DecryptionError):  # nor is it re-sealed by a later change of the secret
        services.credentials.update(who, cid, {"password": "newer"})


def test_a_changed_public_field_is_detected_where_the_secret_is_used(store: tuple[Services, Principal]) -> None:
    services, who = store
    body = {"name": "sp", "credentialType": "azure_service_principal", "clientId": "c", "clientSecret": "s"}
    cid = make_credential(services, who, {**body, "azureTenantId": "tenant-a"})["credentialId"]
    assert services.credentials.secrets(who, cid)["azureTenantId"] == "tenant-a"
    _set(services, cid, public_data=json.dumps({"azureTenantId": "tenant-evil"}))
    with pytest.raises(DecryptionError):
        services.credentials.secrets(who, cid)


def test_a_metadata_change_keeps_the_seal(store: tuple[Services, Principal]) -> None:
    """Renaming does not re-seal (no decrypt on a rename), and the secret still opens."""
    services, who = store
    cid = make_credential(services, who, {"name": "a", "user": "u", "password": "p"})["credentialId"]
    before = _row(services, cid)
    services.credentials.update(who, cid, {"name": "b"})
    after = _row(services, cid)
    assert (after.seal_generation, after.ciphertext) == (before.seal_generation, before.ciphertext)
    assert services.credentials.secrets(who, cid)["password"] == "p"


def _seal_as_before_generations(services: Services, cid: str, secret: dict[str, str]) -> bytes:
    """Re-seal a row as a release before seal generations did (v1 associated data, generation 0)."""
    row = _row(services, cid)
    legacy = Binding(row.id, row.owner_id, row.credential_type, 0, row.public_data)
    sealed = services.barrier.envelope.seal(json.dumps(secret).encode(), legacy.aad())
    _set(
        services,
        cid,
        seal_generation=0,
        key_version=sealed.key_version,
        wrapped_key=sealed.wrapped_key,
        ciphertext=sealed.ciphertext,
    )
    with services.db.write() as s:
        s.query(StoreState).delete()
    return sealed.ciphertext


def test_seals_from_before_generations_are_upgraded_once_then_refused(settings: Settings) -> None:
    services = Services.open(settings)
    services.accounts.create_user("bob")
    token = services.accounts.create_token("bob")[1]
    who = services.accounts.authenticate(token)
    cid = make_credential(services, who, {"name": "legacy", "user": "u", "password": "v1"})["credentialId"]
    legacy_ciphertext = _seal_as_before_generations(services, cid, {"user": "u", "password": "v1"})
    with pytest.raises(DecryptionError):  # a generation-0 seal never opens in normal service
        services.credentials.secrets(who, cid)
    services.close()

    services = Services.open(settings)  # the start re-seals it under generation 1 and records that it did
    try:
        assert _row(services, cid).seal_generation == 1
        assert services.credentials.secrets(who, cid)["password"] == "v1"
        # A rollback to the old seal, after the upgrade, is refused even across a restart.
        row = _row(services, cid)
        _set(services, cid, seal_generation=0, ciphertext=legacy_ciphertext, wrapped_key=row.wrapped_key)
    finally:
        services.close()
    services = Services.open(settings)
    try:
        assert _row(services, cid).seal_generation == 0  # not "upgraded" again
        with pytest.raises(DecryptionError):
            services.credentials.secrets(who, cid)
    finally:
        services.close()
