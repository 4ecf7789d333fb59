"""Master keys: check them at start, report their use, rotate to a new version and retire old ones."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.crypto.barrier import KEY_REFRESH_SECONDS, Barrier, Binding, RecordBinding
from strongroom.crypto.keys import DecryptionError
from strongroom.errors import Conflict, InvalidInput, MasterKeyError, NotFound
from strongroom.store.models import utcnow
from strongroom.store.repositories import CredentialRepository, KeyRepository
from strongroom.store.repositories.keys import BACKUP_LAPSE, BackupClaim
from strongroom.store.repositories.oauth import OAuthRepository


class KeyService:
    """Key checks, status, rotation (re-wrapping data keys) and retirement."""

    def __init__(
        self,
        versions: KeyRepository,
        credentials: CredentialRepository,
        barrier: Barrier,
        oauth: OAuthRepository | None = None,
    ) -> None:
        self.versions = versions
        self.credentials = credentials
        self.oauth = oauth
        self.barrier = barrier
        self.keys = barrier.keys

    def verify(self) -> None:
        """Every key version the data needs must be present and be the very key that sealed it."""
        source = self.keys.source
        available = self.keys.versions()
        stored = self.versions.all()
        for version, count in sorted(self.credentials.count_by_key_version().items()):
            if version not in available:
                raise MasterKeyError(
                    f"master key version {version} is missing from {source}; {count} credential(s) are sealed with it"
                )
        for version in sorted(available & stored.keys()):
            if not self.barrier.matches(version, stored[version].check_value):
                raise MasterKeyError(
                    f"master key version {version} from {source} does not match: "
                    "it is not the key this database was sealed with"
                )
        active = self.keys.active_version()
        if active not in stored:
            self._record(active)

    def _record(self, version: int) -> None:
        wrapped_under, check = self.barrier.check_value(version)
        if wrapped_under != version:
            raise MasterKeyError(f"{self.keys.source} did not activate master key version {version}")
        self.versions.add(version, check, self.keys.key_ref(version), utcnow())

    def active_version(self) -> int:
        """The master-key version new data keys are wrapped with."""
        return self.keys.active_version()

    def status(self) -> dict[str, Any]:
        """The active version and, per version, how many credentials' data keys it wraps."""
        self.keys.refresh()
        active = self.keys.active_version()
        counts = self.credentials.count_by_key_version()
        stored = self.versions.all()
        versions = []
        for version in sorted(set(counts) | set(stored) | self.keys.versions()):
            kv = stored.get(version)
            versions.append(
                {
                    "version": version,
                    "credentials": counts.get(version, 0),
                    "active": version == active,
                    "retired": bool(kv and kv.retired_at),
                    "keyRef": kv.key_ref if kv else self.keys.key_ref(version),
                }
            )
        older = sum(n for v, n in counts.items() if v != active)
        return {"active": active, "source": self.keys.source, "onOlderVersions": older, "versions": versions}

    def start_rotation(self, *, key_ref: str | None = None, resume_only: bool = False) -> int | None:
        """Add and activate a new master-key version, unless an earlier rotation is unfinished.

        Returns the new version, or None when there is one to finish (or nothing to do with `resume_only`):
        rotation progress is only "rows still on other versions", so a rerun after a crash resumes it.
        """
        if key_ref is not None and not self.keys.remote:
            raise InvalidInput(
                f"a KMS key id only applies when the master keys are in AWS KMS; they come from {self.keys.source} "
                "(the provider is chosen by the settings)"
            )
        if key_ref is not None and resume_only:
            raise InvalidInput("a KMS key id is for a new version, and a resumed rotation adds none")
        self.keys.refresh()
        active = self.keys.active_version()
        if resume_only or self.credentials.count_not_on(active):
            if active not in self.versions.all():  # a crash between the key file and this row: record it now
                self._record(active)
            return None
        version = max(self.versions.newest(), *self.keys.versions()) + 1
        ref = self.keys.add_version(version, key_ref)
        wrapped_under, check = self.barrier.check_value(version)
        if wrapped_under != version:
            raise MasterKeyError(f"{self.keys.source} did not activate master key version {version}")
        self.versions.add(version, check, ref, utcnow())
        return version

    def rewrap(
        self,
        *,
        batch_size: int = 500,
        pause: float = 0.0,
        max_passes: int = 20,
        settle: float = 2 * KEY_REFRESH_SECONDS,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Re-wrap every data key still under another version with the active one, in short batches.

        Only the wrapped data keys change; ciphertexts are untouched. Each batch is one short transaction whose
        updates apply only if the row still holds the wrapped key that was read, so a concurrent PATCH or
        DELETE always wins and is never undone; such rows are picked up again by the next pass. KMS calls
        happen before the transaction, never inside it.
        """
        if batch_size < 1:
            raise InvalidInput("batch-size: must be at least 1", {"batchSize": "must be at least 1"})
        target = self.keys.active_version()
        activated = self.versions.activated_at(target)
        age = (utcnow() - activated).total_seconds() if activated is not None else 0.0
        waited = max(0.0, settle - age)
        time.sleep(waited)  # let running servers adopt the version before judging what is left
        rewrapped = conflicts = passes = 0
        failed: set[str] = set()
        settled = age > 2 * settle  # activated long ago: no request can still be sealing under the old version
        while passes < max_passes:
            passes += 1
            after = ""
            while rows := self.credentials.not_on(target, after, batch_size):
                after = rows[-1][0]
                changes = []
                for credential_id, owner_id, credential_type, generation, public_data, version, wrapped in rows:
                    if credential_id in failed:
                        continue
                    binding = Binding(credential_id, owner_id, credential_type, generation, public_data)
                    try:
                        new_version, new_wrapped = self.barrier.rewrap(binding, version, bytes(wrapped))
                    except DecryptionError:
                        failed.add(credential_id)  # tampered or corrupt: reported, never rewritten
                        continue
                    if new_version != target:
                        raise MasterKeyError(
                            f"the active master key changed to version {new_version} during the rotation "
                            "(another rotation?); run `strongroom keys rotate` again"
                        )
                    changes.append(
                        {"target": credential_id, "old_version": version, "old_wrapped": bytes(wrapped)}
                        | {"new_version": target, "new_wrapped": new_wrapped}
                    )
                if changes:
                    done = self.credentials.rewrap(changes)
                    rewrapped += done
                    conflicts += len(changes) - done
                if on_batch is not None:
                    on_batch(rewrapped, len(changes))
                if pause:
                    time.sleep(pause)
            if self.credentials.count_not_on(target) <= len(failed):
                if settled:
                    break
                # A request that sealed under the old version just before its server re-read the keys may
                # commit after this pass: look once more after it must have landed.
                time.sleep(settle)
                waited += settle
                settled = True
        rewrapped += self._rewrap_oauth(target)
        return {
            "rewrapped": rewrapped,
            "retried": conflicts,
            "failed": len(failed),
            "left": self.credentials.count_not_on(target),
            "passes": passes,
            "settleSeconds": round(waited, 3),
        }

    def _rewrap_oauth(self, target: int) -> int:
        """Re-wrap the data keys of OAuth providers' client secrets and credentials' token states (few rows, one
        pass; a row changed meanwhile was sealed anew under the active version); how many."""
        if self.oauth is None:
            return 0
        changes = []
        for kind, row_id, generation, version, wrapped in self.oauth.sealed_not_on(target):
            try:
                new_version, new_wrapped = self.barrier.rewrap(
                    RecordBinding(kind, row_id, generation), version, wrapped
                )
            except DecryptionError:
                continue  # tampered or corrupt: it keeps its version, so that version cannot be retired
            changes.append((kind, row_id, wrapped, new_version, new_wrapped))
        return self.oauth.rewrap(changes) if changes else 0

    def retire(self, version: int, *, force: bool = False) -> Retired:
        """Forget an old master-key version; refused while it is active, any credential still uses it or a backup
        being written may need it, and, unless `force`, while a recorded master-key backup needs it."""
        self.keys.refresh()
        if version == self.keys.active_version():
            raise Conflict(f"master key version {version} is active; rotate to a new version before retiring it")
        recorded = self.versions.all().get(version)
        if recorded is not None and recorded.retired_at is not None and version not in self.keys.versions():
            raise Conflict(f"master key version {version} is already retired")
        now = utcnow()
        outcome = self.versions.retire(version, now, force=force, lapsed=lambda claim: _lapsed(claim, now))
        cleared = [_claim_text(c) for c in outcome.cleared]
        if outcome.running:
            # Not even --force: the archive being written would be reported as made yet never restore.
            running = "; ".join(_claim_text(c) for c in outcome.running)
            raise Conflict(
                f"master key version {version} may be needed by a backup being written now: {running}. Retire it "
                "once that backup has finished (--force does not override this). A backup whose process has ended "
                f"without finishing stops holding versions back at once when it ran on this host, otherwise "
                f"{_minutes(BACKUP_LAPSE)} minutes after its last sign of life"
            )
        needing = [path for path, _when in outcome.needing]
        if needing and not force:
            listed = ", ".join(needing[:5]) + (f" and {len(needing) - 5} more" if len(needing) > 5 else "")
            raise Conflict(
                f"master key version {version} is needed to restore {len(needing)} backup(s): {listed}; "
                "retiring it makes them unrestorable. Make a new backup (a passphrase backup needs no master key), "
                "then pass --force"
            )
        if not outcome.recorded and version not in self.keys.versions():
            raise NotFound(f"master key version {version} does not exist")
        if outcome.used:
            raise Conflict(
                f"master key version {version} still wraps the data keys of {outcome.used} credential(s) or OAuth "
                "secret(s); run `strongroom keys rotate` to finish re-wrapping them first"
            )
        self.keys.remove_version(version)
        return Retired(needing, cleared)


@dataclass(frozen=True)
class Retired:
    """A retirement's aftermath: the recorded backups it leaves unrestorable (with --force), and the unfinished
    backups whose dead writers' claims it cleared (described)."""

    unrestorable: list[str]
    cleared: list[str]


def _lapsed(claim: BackupClaim, now: datetime) -> bool:
    """Whether a backup being written has died: silent for BACKUP_LAPSE, or its process gone from this host."""
    if now - claim.heartbeat_at > BACKUP_LAPSE:
        return True
    return claim.host == socket.gethostname() and not _process_exists(claim.pid)


def _process_exists(pid: int) -> bool:
    """Whether a process of this id runs on this host (a reused id reads as alive: the safe side)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _claim_text(claim: BackupClaim) -> str:
    return (
        f"{claim.path} (started {_when(claim.started_at)} by process {claim.pid} on host {claim.host}, "
        f"last sign of life {_when(claim.heartbeat_at)})"
    )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _minutes(span: timedelta) -> int:
    return int(span.total_seconds() // 60)
