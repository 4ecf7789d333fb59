"""Which master-key provider the settings name: AWS KMS when a KMS key is configured, else a keyring."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime

from strongroom.config import Settings
from strongroom.crypto.keys import KeyProvider, load_keyring
from strongroom.errors import MasterKeyError

StoredVersion = tuple[int, str | None, datetime | None]  # (version, KMS key ref or None, retired_at)


def key_provider(
    settings: Settings,
    stored: Iterable[StoredVersion],
    used: Collection[int],
    kms_refs: Callable[[], dict[int, str]],
) -> KeyProvider:
    """The provider for a store whose key versions are `stored` and whose data uses the versions `used`.

    `kms_refs` reads the live versions' KMS key references (the KMS provider re-reads them on refresh).
    A store that has KMS versions but no KMS configuration fails naming the version it needs first.
    """
    stored = list(stored)
    if settings.kms_key_id:
        from strongroom.crypto.kms import KmsKeyProvider, kms_client

        client = kms_client(endpoint_url=settings.kms_endpoint_url, region=settings.kms_region)
        return KmsKeyProvider(client, kms_refs, settings.kms_key_id)
    for version, key_ref, retired_at in sorted(stored, key=lambda row: (row[0] not in used, -row[0])):
        if key_ref and retired_at is None:
            raise MasterKeyError(
                f"master key version {version} is missing from the configured keys: it is the AWS KMS key "
                f"{key_ref}; set STRONGROOM_KMS_KEY_ID to use AWS KMS"
            )
    return load_keyring(env_value=settings.master_key, key_file=settings.resolved_key_file, create=not stored)
