"""The barrier: the one place where secrets are sealed and opened, and where associated data is decided.

Everything outside it (the store, backups, the API) handles only `Sealed` values. Associated data binds a
ciphertext to the row it belongs to, so a sealed secret copied onto another row fails authentication.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from strongroom.crypto.envelope import Envelope, Sealed
from strongroom.crypto.keys import DecryptionError, KeyProvider
from strongroom.representation import compact_json, parse_json

T = TypeVar("T")
KEY_CHECK = b"strongroom key check v1"
KEY_REFRESH_SECONDS = 1.0  # how soon a running server seals with a version added by `keys rotate`


@dataclass(frozen=True)
class Binding:
    """What a credential's sealed secret is bound to: its row's identity, the generation of the seal (bumped at
    every re-seal, so an older ciphertext of the same row no longer opens) and its public fields (so a changed
    `configId` is detected wherever the secret is used)."""

    credential_id: str
    owner_id: str
    credential_type: str
    generation: int
    public_data: str

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Binding:
        """From a credential row as a mapping of column names."""
        return cls(row["id"], row["owner_id"], row["credential_type"], row["seal_generation"], row["public_data"])

    def aad(self) -> bytes:
        """The associated data. Generation 0 is a seal made before generations existed (v1: id, owner, type);
        it opens only while `Barrier.upgrade` re-seals it."""
        if self.generation == 0:
            return f"strongroom/credential/v1|{self.credential_id}|{self.owner_id}|{self.credential_type}".encode()
        public = hashlib.sha256(self.public_data.encode()).hexdigest()
        return (
            f"strongroom/credential/v2|{self.credential_id}|{self.owner_id}|{self.credential_type}"
            f"|{self.generation}|{public}"
        ).encode()


@dataclass(frozen=True)
class RecordBinding:
    """What another record's sealed secret is bound to (an OAuth provider's client secret, a credential's token
    state): its kind, its id and the generation of the seal, bumped at every re-seal so that an older
    ciphertext of the same record no longer opens."""

    kind: str
    record_id: str
    generation: int

    def aad(self) -> bytes:
        """The associated data: kind, id and generation."""
        return f"strongroom/{self.kind}/v1|{self.record_id}|{self.generation}".encode()


def credential_aad(binding: Binding) -> bytes:
    """Associated data of a credential's secret (see `Binding.aad`)."""
    return binding.aad()


def key_check_aad(version: int) -> bytes:
    """Associated data of a master-key version's check value."""
    return f"strongroom/key-check/v1|{version}".encode()


class Barrier:
    """Seals and opens credential secrets under the key provider's master keys, adopting rotated versions."""

    def __init__(self, keys: KeyProvider) -> None:
        self.keys = keys
        self.envelope = Envelope(keys)
        self._refreshed_at = time.monotonic()
        self._refresh_lock = threading.Lock()

    @property
    def remote(self) -> bool:
        """Whether sealing and opening call a remote service (KMS), so must stay off the event loop."""
        return bool(getattr(self.keys, "remote", False))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run work that seals or opens on the event loop, or in a worker thread when keys are remote."""
        if self.remote:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return fn(*args)

    def seal(self, binding: Binding | RecordBinding, secret: Mapping[str, Any]) -> Sealed:
        """Seal a credential's secret fields under the active master key (generation 1 or later)."""
        if binding.generation < 1:
            raise ValueError("a new seal needs a generation of 1 or more")
        self._fresh_keys()
        plaintext = compact_json(secret).encode()
        return self.envelope.seal(plaintext, binding.aad())

    def open(self, binding: Binding | RecordBinding, sealed: Sealed, *, legacy: bool = False) -> dict[str, Any]:
        """The secret fields of a credential; DecryptionError if they were tampered with, moved or rolled back.
        A generation-0 (pre-generation) seal opens only with `legacy`, which the upgrade at start uses."""
        if binding.generation < 1 and not legacy:
            raise DecryptionError("a seal without a generation outside the upgrade")
        self._know_version(sealed.key_version)
        result: dict[str, Any] = parse_json(self.envelope.open(sealed, binding.aad()))
        return result

    def rewrap(self, binding: Binding, version: int, wrapped: bytes) -> tuple[int, bytes]:
        """A credential's data key re-wrapped under the active version (its ciphertext is unchanged)."""
        aad = binding.aad()
        self._know_version(version)
        return self.keys.wrap(self.keys.unwrap(version, wrapped, aad), aad)

    def rewrap_to(self, target: KeyProvider, binding: Binding, version: int, wrapped: bytes) -> tuple[int, bytes]:
        """A credential's data key unwrapped by these keys and wrapped by `target` (an archive's own key, or the
        keys of the store it is restored into); the ciphertext, bound to the same row, is unchanged."""
        aad = binding.aad()
        self._know_version(version)
        return target.wrap(self.keys.unwrap(version, wrapped, aad), aad)

    def check_value(self, version: int) -> tuple[int, bytes]:
        """A fresh check value for a master-key version (the version that wrapped it, and the value)."""
        return self.keys.wrap(KEY_CHECK, key_check_aad(version))

    def matches(self, version: int, check_value: bytes) -> bool:
        """Whether the loaded key of `version` is the one that made `check_value`."""
        try:
            return self.keys.unwrap(version, check_value, key_check_aad(version)) == KEY_CHECK
        except DecryptionError:
            return False

    def _fresh_keys(self) -> None:
        """Re-read the key source at most once per interval, so a running server adopts a rotated version."""
        now = time.monotonic()
        if now - self._refreshed_at < KEY_REFRESH_SECONDS:
            return
        with self._refresh_lock:
            if now - self._refreshed_at >= KEY_REFRESH_SECONDS:
                self.keys.refresh()
                self._refreshed_at = time.monotonic()

    def _know_version(self, version: int) -> None:
        """A version this process has not loaded (added by a rotation elsewhere) triggers one re-read."""
        if version not in self.keys.versions():
            with self._refresh_lock:
                self.keys.refresh()
                self._refreshed_at = time.monotonic()
