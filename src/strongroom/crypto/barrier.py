"""The barrier: the one place where secrets are sealed and opened, and where associated data is decided.

Everything outside it (the store, backups, the API) handles only `Sealed` values. Associated data binds a
ciphertext to the row it belongs to, so a sealed secret copied onto another row fails authentication.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from strongroom.crypto.envelope import Envelope, Sealed
from strongroom.crypto.keys import DecryptionError, KeyProvider

T = TypeVar("T")
KEY_CHECK = b"strongroom key check v1"
KEY_REFRESH_SECONDS = 1.0  # how soon a running server seals with a version added by `keys rotate`


def credential_aad(credential_id: str, owner_id: str, credential_type: str) -> bytes:
    """Associated data of a credential's secret: its id, owner and type."""
    return f"strongroom/credential/v1|{credential_id}|{owner_id}|{credential_type}".encode()


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

    def seal(self, credential_id: str, owner_id: str, credential_type: str, secret: Mapping[str, Any]) -> Sealed:
        """Seal a credential's secret fields under the active master key."""
        self._fresh_keys()
        plaintext = json.dumps(secret, separators=(",", ":")).encode()
        return self.envelope.seal(plaintext, credential_aad(credential_id, owner_id, credential_type))

    def open(self, credential_id: str, owner_id: str, credential_type: str, sealed: Sealed) -> dict[str, Any]:
        """The secret fields of a credential; DecryptionError if they were tampered with or moved."""
        self._know_version(sealed.key_version)
        plaintext = self.envelope.open(sealed, credential_aad(credential_id, owner_id, credential_type))
        result: dict[str, Any] = json.loads(plaintext)
        return result

    def rewrap(
        self, credential_id: str, owner_id: str, credential_type: str, version: int, wrapped: bytes
    ) -> tuple[int, bytes]:
        """A credential's data key re-wrapped under the active version (its ciphertext is unchanged)."""
        aad = credential_aad(credential_id, owner_id, credential_type)
        self._know_version(version)
        return self.keys.wrap(self.keys.unwrap(version, wrapped, aad), aad)

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
