"""Master keys: a small provider interface and the built-in keyrings (a private file, or an environment variable).

Another KMS (AWS KMS is in kms.py; Vault transit, GCP KMS, Azure Key Vault) plugs in by implementing
`KeyProvider`: `wrap` encrypts a data key under the active master-key version, `unwrap` decrypts one under a
named version, `refresh` re-reads the source so a running server sees a version added by a rotation,
`add_version` creates and activates a version, `remove_version` forgets a retired one.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import MasterKeyError, StrongroomError

KEYRING_FORMAT = "strongroom-keyring-1"
log = logging.getLogger("strongroom.keys")
_NONCE = 12


class DecryptionError(StrongroomError):
    """A ciphertext did not authenticate: wrong key, wrong record, or tampering (a 500: the store is at fault)."""

    status_code = 500

    def __init__(self, detail: str = "stored secret failed authentication") -> None:
        super().__init__("the stored secret of this credential failed its integrity check")
        self.detail = detail


class KeyProvider(Protocol):
    """Wraps and unwraps data keys; implementations never expose master-key material."""

    source: str  # where the keys live, for messages ("key file /path", "AWS KMS"): never key material
    remote: bool  # wrap/unwrap/refresh call a network service (so they must not run on the event loop)

    def active_version(self) -> int: ...

    def versions(self) -> frozenset[int]: ...

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]: ...

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes: ...

    def refresh(self) -> None:
        """Re-read the source (cheaply when unchanged), so versions added elsewhere become usable."""

    def add_version(self, version: int, key_ref: str | None) -> str | None:
        """Create master-key `version`, make it active, and return what to record for it (a KMS key id)."""

    def remove_version(self, version: int) -> None:
        """Forget a retired version (no data uses it any more)."""

    def key_ref(self, version: int) -> str | None:
        """What the database records for a version besides its check value: a KMS key id, None for local keys."""


class Keyring:
    """Versioned AES-256 master keys held in memory; wraps data keys with AES-256-GCM."""

    remote = False

    def __init__(self, keys: dict[int, bytes], active: int, source: str) -> None:
        self.source = source
        self._load(keys, active)

    def _load(self, keys: dict[int, bytes], active: int) -> None:
        if active not in keys:
            raise MasterKeyError(f"{self.source}: active master key version {active} is not in the keyring")
        for version, key in keys.items():
            if len(key) != 32:
                raise MasterKeyError(f"{self.source}: master key version {version} is not 32 bytes")
        # One tuple, swapped whole: a request thread never sees a new active version without its key.
        self._state = ({version: AESGCM(key) for version, key in keys.items()}, active)

    def __repr__(self) -> str:
        ciphers, active = self._state
        return f"{type(self).__name__}(source={self.source!r}, versions={sorted(ciphers)}, active={active})"

    def active_version(self) -> int:
        return self._state[1]

    def versions(self) -> frozenset[int]:
        return frozenset(self._state[0])

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]:
        ciphers, active = self._state
        nonce = os.urandom(_NONCE)
        return active, nonce + ciphers[active].encrypt(nonce, data_key, aad)

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes:
        cipher = self._state[0].get(version)
        if cipher is None:
            raise MasterKeyError(f"master key version {version} is missing from {self.source}")
        try:
            return cipher.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
        except InvalidTag:
            raise DecryptionError("data key failed authentication") from None

    def refresh(self) -> None:
        """An environment variable cannot change under a running process: nothing to re-read."""

    def key_ref(self, version: int) -> str | None:
        return None

    def add_version(self, version: int, key_ref: str | None) -> str | None:
        raise MasterKeyError(
            f"the master keys come from {self.source}, which Strongroom cannot rewrite: add version {version} "
            "to that keyring yourself (make it active), restart the servers, then run `strongroom keys rotate`"
        )

    def remove_version(self, version: int) -> None:
        """Nothing to rewrite; the operator may drop the version from the variable."""


class FileKeyring(Keyring):
    """The keyring file: re-read when it changes on disk, rewritten atomically (0600) by a rotation."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = _stamp(path)
        super().__init__(*_parse(text, f"key file {path}"), f"key file {path}")

    def refresh(self) -> None:
        """Adopt the file's keys if it changed; a file gone or unusable meanwhile keeps the keys already loaded
        (logged), so requests go on being served instead of failing one by one."""
        try:
            if _stamp(self.path) == self._stamp:
                return
            with self._lock:
                keyring = load_key_file(self.path, create=False)
                self._state, self._stamp = keyring._state, keyring._stamp
        except (OSError, MasterKeyError) as exc:
            message = exc.message if isinstance(exc, MasterKeyError) else f"{type(exc).__name__} on {self.path}"
            log.warning("keeping the master keys already loaded: %s", message)

    def add_version(self, version: int, key_ref: str | None) -> str | None:
        def add(keys: dict[int, bytes], active: int) -> tuple[dict[int, bytes], int]:
            if version in keys:  # two rotations at once: never two different keys under one number
                raise MasterKeyError(
                    f"{self.source} already holds master key version {version} (another rotation?); "
                    "run `strongroom keys rotate` again to finish it"
                )
            return {**keys, version: AESGCM.generate_key(bit_length=256)}, version

        self._rewrite(add)
        return None

    def remove_version(self, version: int) -> None:
        self._rewrite(lambda keys, active: ({v: k for v, k in keys.items() if v != version}, active))

    def _rewrite(self, change: Callable[[dict[int, bytes], int], tuple[dict[int, bytes], int]]) -> None:
        """Read, change and atomically replace the file under an exclusive lock, so a concurrent rotation
        or retirement in another process is never overwritten."""
        with key_file_lock(self.path), self._lock:
            keys, active = change(*_parse(read_key_file(self.path), self.source))
            write_key_file(self.path, serialise(keys, active))
            self._load(keys, active)
            self._stamp = _stamp(self.path)


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when the file is replaced: inode, size and modification time."""
    st = path.lstat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _parse(text: str, source: str) -> tuple[dict[int, bytes], int]:
    """Parse a keyring document, or a bare base64 key (taken as version 1), into keys and active version."""
    text = text.strip()
    try:
        if text.startswith("{"):
            doc = json.loads(text)
            if doc.get("format") != KEYRING_FORMAT:
                raise MasterKeyError(f"{source}: not a {KEYRING_FORMAT} document")
            keys = {int(v): base64.b64decode(k, validate=True) for v, k in doc["keys"].items()}
            active = int(doc["active"])
            if active not in keys:
                raise MasterKeyError(f"{source}: the keyring has no key of its active version {active}")
            return keys, active
        return {1: base64.b64decode(text, validate=True)}, 1
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise MasterKeyError(f"{source}: unreadable master key (expected a keyring or base64 of 32 bytes)") from None


def serialise(keys: dict[int, bytes], active: int) -> str:
    """The keyring file format: JSON with base64 keys per version and the active version."""
    doc = {
        "format": KEYRING_FORMAT,
        "active": active,
        "keys": {str(v): base64.b64encode(k).decode() for v, k in sorted(keys.items())},
    }
    return json.dumps(doc, indent=2) + "\n"


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextmanager
def key_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the key file, so creations and rewrites in several processes take turns."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_key_file(path: Path, content: str) -> None:
    """Write a key file atomically with 0600 permissions: a fresh temporary file (O_EXCL) then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content.encode())
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # os.write names no file (a full disk): say which one could not be written
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> str:
    """The key file's text, refused unless it is a regular file (no symlink), ours, and private (no 0o077 bit)."""
    source = f"key file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MasterKeyError(f"{source} is a symbolic link; point the setting at the file itself") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MasterKeyError(f"{source} is not a regular file")
        if st.st_uid != os.geteuid():
            raise MasterKeyError(
                f"{source} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}); "
                "it must belong to the user running Strongroom"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise MasterKeyError(f"{source} is accessible to other users (mode {mode:04o}); run chmod 600 {path}")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode()
    except UnicodeDecodeError:
        raise MasterKeyError(f"{source}: unreadable master key (not text)") from None


def load_key_file(path: Path, *, create: bool) -> FileKeyring:
    """Read the keyring file, creating a fresh one when allowed (one key however many processes start at once)."""
    if create and not os.path.lexists(path):
        with key_file_lock(path):
            if not os.path.lexists(path):  # another process may have created it while this one waited
                write_key_file(path, serialise({1: AESGCM.generate_key(bit_length=256)}, 1))
    elif not os.path.lexists(path):
        raise MasterKeyError(f"key file {path} is missing, but the database holds secrets sealed by it")
    return FileKeyring(path, read_key_file(path))


def load_keyring(*, env_value: str | None, key_file: Path, create: bool) -> Keyring:
    """The built-in sources: STRONGROOM_MASTER_KEY when set, else the key file."""
    if env_value:
        source = "STRONGROOM_MASTER_KEY"
        return Keyring(*_parse(env_value, source), source)
    return load_key_file(key_file, create=create)
