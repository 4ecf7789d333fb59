"""Master-key versions: their check values, KMS references and retirement, and the backups that need them.

A retirement and the start or end of a backup take turns (a PostgreSQL advisory lock in their transactions;
SQLite's writers queue on its write lock anyway), so a backup's claim on its versions and a retirement's check
of the claims never interleave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.orm import Session

from strongroom.store.db import Database
from strongroom.store.models import Backup, Credential, KeyVersion, OAuthProvider, OAuthTokenState

_SEALED = (Credential.key_version, OAuthProvider.key_version, OAuthTokenState.key_version)
TURN_KEY = 0x535242414B555053  # the advisory lock retirements and backup claims take turns on (PostgreSQL)
_TURN = select(func.pg_advisory_xact_lock(literal(TURN_KEY)))
RUNNING, DONE = "running", "done"
# A running backup refreshes its row at least this often while it writes; a row silent for BACKUP_LAPSE belongs
# to a writer that died (SIGKILL, a crash, a lost machine) and no longer holds a retirement back.
BACKUP_HEARTBEAT = timedelta(seconds=30)
BACKUP_LAPSE = timedelta(minutes=10)


@dataclass(frozen=True)
class BackupClaim:
    """A backup being written: where to, by which process, since when, its last sign of life and the versions
    it may need."""

    archive_id: str
    path: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    versions: frozenset[int]


@dataclass(frozen=True)
class Retirement:
    """What a retirement found, and whether it marked the version retired (only when nothing held it back)."""

    recorded: bool  # the version is in `key_versions`
    used: int  # sealed rows still wrapped by it
    running: list[BackupClaim]  # live backups being written that may need it
    cleared: list[BackupClaim]  # claims of backups whose writer died, removed
    needing: list[tuple[str, datetime]]  # finished backups (path, when) that need it, oldest first
    retired: bool


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

    def retire(self, version: int, when: datetime, *, force: bool, lapsed: Callable[[BackupClaim], bool]) -> Retirement:
        """Mark a version retired unless a sealed row uses it, a backup being written may need it (claims whose
        writer `lapsed` says died are removed instead), or, without `force`, a finished backup needs it."""
        with self.db.write() as s:
            _take_turn(self.db, s)
            holding = [c for c in _claims(s) if version in c.versions]
            cleared = [c for c in holding if lapsed(c)]
            if cleared:
                s.execute(delete(Backup).where(Backup.archive_id.in_([c.archive_id for c in cleared])))
            running = [c for c in holding if c not in cleared]
            done = s.execute(
                select(Backup.path, Backup.created_at, Backup.key_versions)
                .where(Backup.state == DONE)
                .order_by(Backup.created_at)
            )
            needing = [(path, at) for path, at, versions in done if str(version) in versions.split()]
            kv = s.get(KeyVersion, version)
            used = int(sum(s.scalar(select(func.count()).where(column == version)) or 0 for column in _SEALED))
            retired = not running and not used and (force or not needing) and kv is not None and kv.retired_at is None
            if retired:
                assert kv is not None
                kv.retired_at = when
            return Retirement(kv is not None, used, running, cleared, needing, retired)

    def claim_backup(
        self, archive_id: str, path: str, also: set[int], host: str, pid: int, now: datetime
    ) -> frozenset[int]:
        """Record a backup as being written, holding every version not retired (and those of `also`, the writer's
        keys, that are not recorded retired): whatever its snapshot, taken after this commits, may need."""
        with self.db.write() as s:
            _take_turn(self.db, s)
            recorded = {v: at for v, at in s.execute(select(KeyVersion.version, KeyVersion.retired_at))}
            versions = frozenset(v for v in {*recorded, *also} if recorded.get(v) is None)
            s.add(
                Backup(
                    archive_id=archive_id,
                    path=path,
                    key_versions=_joined(versions),
                    created_at=now,
                    state=RUNNING,
                    host=host[:255],
                    pid=pid,
                    heartbeat_at=now,
                )
            )
            return versions

    def backup_alive(self, archive_id: str, now: datetime) -> None:
        """A running backup's sign of life."""
        with self.db.write() as s:
            s.execute(
                update(Backup).where(Backup.archive_id == archive_id, Backup.state == RUNNING).values(heartbeat_at=now)
            )

    def finish_backup(self, archive_id: str, path: str, versions: set[int], now: datetime) -> list[int]:
        """Record a written backup as done, needing exactly `versions`; unless one of them was retired meanwhile
        (its claim had lapsed): then its row goes, and those versions are returned."""
        with self.db.write() as s:
            _take_turn(self.db, s)
            wanted = select(KeyVersion.version).where(KeyVersion.version.in_(versions))
            gone = sorted(s.scalars(wanted.where(KeyVersion.retired_at.is_not(None))))
            if gone:
                s.execute(delete(Backup).where(Backup.archive_id == archive_id))
                return gone
            # A merge: a claim cleared as lapsed while its writer was in fact alive is recorded again.
            done = {"key_versions": _joined(versions), "created_at": now, "state": DONE}
            s.merge(Backup(archive_id=archive_id, path=path, **done, host=None, pid=None, heartbeat_at=None))
            return []

    def drop_backup(self, archive_id: str) -> None:
        """Forget a backup that did not finish (its file was never put in place)."""
        with self.db.write() as s:
            s.execute(delete(Backup).where(Backup.archive_id == archive_id))


def _take_turn(db: Database, s: Session) -> None:
    """Wait for any other retirement or backup claim to commit (PostgreSQL; SQLite's writers queue anyway)."""
    if not db.is_sqlite:
        s.execute(_TURN)


def _claims(s: Session) -> list[BackupClaim]:
    rows = s.execute(
        select(
            Backup.archive_id,
            Backup.path,
            Backup.host,
            Backup.pid,
            Backup.created_at,
            Backup.heartbeat_at,
            Backup.key_versions,
        ).where(Backup.state == RUNNING)
    )
    return [
        BackupClaim(aid, path, host or "", pid or 0, start, beat or start, frozenset(int(v) for v in versions.split()))
        for aid, path, host, pid, start, beat, versions in rows
    ]


def _joined(versions: frozenset[int] | set[int]) -> str:
    return " ".join(str(v) for v in sorted(versions))
