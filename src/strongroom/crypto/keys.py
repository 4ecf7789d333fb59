"""Master keys: a small provider interface and the built-in keyring (a 0600 file, or an environment variable).

Another KMS (AWS KMS, Vault transit, GCP KMS, Azure Key Vault) plugs in by implementing `KeyProvider`:
`wrap` encrypts a data key under the active master-key version, `unwrap` decrypts one under a named version.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import MasterKeyError

KEYRING_FORMAT = "strongroom-keyring-1"
_NONCE = 12


class DecryptionError(Exception):
    """A ciphertext did not authenticate: wrong key, wrong record, or tampering."""


class KeyProvider(Protocol):
    """Wraps and unwraps data keys; implementations never expose master-key material."""

    def active_version(self) -> int: ...

    def versions(self) -> frozenset[int]: ...

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]: ...

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes: ...


class Keyring:
    """Versioned AES-256 master keys held in memory; wraps data keys with AES-256-GCM."""

    def __init__(self, keys: dict[int, bytes], active: int, source: str) -> None:
        if active not in keys:
            raise MasterKeyError(f"{source}: active master key version {active} is not in the keyring")
        for version, key in keys.items():
            if len(key) != 32:
                raise MasterKeyError(f"{source}: master key version {version} is not 32 bytes")
        self._ciphers = {version: AESGCM(key) for version, key in keys.items()}
        self._active = active
        self.source = source

    def __repr__(self) -> str:
        return f"Keyring(source={self.source!r}, versions={sorted(self._ciphers)}, active={self._active})"

    def active_version(self) -> int:
        return self._active

    def versions(self) -> frozenset[int]:
        return frozenset(self._ciphers)

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]:
        nonce = os.urandom(_NONCE)
        return self._active, nonce + self._ciphers[self._active].encrypt(nonce, data_key, aad)

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes:
        cipher = self._ciphers.get(version)
        if cipher is None:
            raise MasterKeyError(f"master key version {version} is not available from {self.source}")
        try:
            return cipher.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
        except InvalidTag:
            raise DecryptionError("data key failed authentication") from None


def _parse(text: str, source: str) -> Keyring:
    """Parse a keyring document, or a bare base64 key (taken as version 1)."""
    text = text.strip()
    try:
        if text.startswith("{"):
            doc = json.loads(text)
            if doc.get("format") != KEYRING_FORMAT:
                raise MasterKeyError(f"{source}: not a {KEYRING_FORMAT} document")
            keys = {int(v): base64.b64decode(k, validate=True) for v, k in doc["keys"].items()}
            return Keyring(keys, int(doc["active"]), source)
        return Keyring({1: base64.b64decode(text, validate=True)}, 1, source)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise MasterKeyError(f"{source}: unreadable master key (expected a keyring or base64 of 32 bytes)") from None


def serialise(keys: dict[int, bytes], active: int) -> str:
    """The keyring file format: JSON with base64 keys per version and the active version."""
    doc = {
        "format": KEYRING_FORMAT,
        "active": active,
        "keys": {str(v): base64.b64encode(k).decode() for v, k in sorted(keys.items())},
    }
    return json.dumps(doc, indent=2) + "\n"


def write_key_file(path: Path, content: str) -> None:
    """Write a key file atomically with 0600 permissions (never briefly readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_key_file(path: Path, *, create: bool) -> Keyring:
    """Read the keyring file, creating a fresh one when allowed; refuse a world-readable file."""
    source = f"key file {path}"
    if not path.exists():
        if not create:
            raise MasterKeyError(f"{source} is missing, but the database holds secrets sealed by it")
        write_key_file(path, serialise({1: AESGCM.generate_key(bit_length=256)}, 1))
    mode = path.stat().st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise MasterKeyError(f"{source} is accessible to other users (mode {oct(mode & 0o777)}); run chmod 600")
    return _parse(path.read_text(), source)


def load_key_provider(*, env_value: str | None, key_file: Path, create: bool) -> Keyring:
    """Pick the master-key source: STRONGROOM_MASTER_KEY when set, else the key file."""
    if env_value:
        return _parse(env_value, "STRONGROOM_MASTER_KEY")
    return load_key_file(key_file, create=create)
