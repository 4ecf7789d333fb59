"""Master-key versions: their check values, KMS references and retirement."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from strongroom.store.db import Database
from strongroom.store.models import Backup, Credential, KeyVersion, OAuthProvider, OAuthTokenState

_SEALED = (Credential.key_version, OAuthProvider.key_version, OAuthTokenState.key_version)


class KeyRepository:
    """The `key_versions` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> dict[int, KeyVersion]:
        with self.db.read() as s:
            return {kv.version: kv for kv in s.scalars(select(KeyVersion))}

    def used_versions(self) -> set[int]:
        """The versions some credential's (or OAuth provider's or token state's) data key is wrapped with."""
        with self.db.read() as s:
            return {v for column in _SEALED for v in s.scalars(select(column).distinct())}

    def kms_refs(self) -> dict[int, str]:
        """The KMS key of each live (unretired) KMS version."""
        with self.db.read() as s:
            rows = s.execute(
                select(KeyVersion.version, KeyVersion.key_ref).where(
                    KeyVersion.key_ref.is_not(None), KeyVersion.retired_at.is_(None)
                )
            ).all()
        return {version: ref for version, ref in rows}

    def add(self, version: int, check_value: bytes, key_ref: str | None, created_at: datetime) -> None:
        """Record a version unless it is recorded already."""
        with self.db.write() as s:
            if s.get(KeyVersion, version) is None:
                s.add(KeyVersion(version=version, check_value=check_value, key_ref=key_ref, created_at=created_at))

    def newest(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.max(KeyVersion.version))) or 0)

    def activated_at(self, version: int) -> datetime | None:
        with self.db.read() as s:
            return s.scalar(select(KeyVersion.created_at).where(KeyVersion.version == version))

    def retire(self, version: int, when: datetime) -> tuple[bool, int]:
        """Mark a version retired if no credential uses it: (whether it is recorded, credentials using it).
        Nothing changes while any credential uses it."""
        with self.db.write() as s:
            kv = s.get(KeyVersion, version)
            used = sum(s.scalar(select(func.count()).where(column == version)) or 0 for column in _SEALED)
            if not used and kv is not None and kv.retired_at is None:
                kv.retired_at = when
            return kv is not None, int(used)

    def record_backup(self, archive_id: str, path: str, versions: set[int], created_at: datetime) -> None:
        """Remember that the archive at `path` needs these master-key versions to restore."""
        with self.db.write() as s:
            s.merge(
                Backup(
                    archive_id=archive_id,
                    path=path,
                    key_versions=" ".join(str(v) for v in sorted(versions)),
                    created_at=created_at,
                )
            )

    def backups_needing(self, version: int) -> list[tuple[str, datetime]]:
        """The recorded backups (path, when) that need `version` to restore, oldest first."""
        with self.db.read() as s:
            rows = s.execute(select(Backup.path, Backup.created_at, Backup.key_versions).order_by(Backup.created_at))
            return [(path, when) for path, when, versions in rows if str(version) in versions.split()]
