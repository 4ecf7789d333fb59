"""Encrypted, versioned backups of a whole store, and their restore into an empty store on any backend.

An archive is MAGIC, a 2-byte format version, a 4-byte length and a JSON header (schema revision, tables
and row counts, how the archive key is protected), then chunks: a 4-byte length, then a nonce and the
AES-256-GCM sealing of zlib-compressed JSON lines, one table row each. Every chunk authenticates the
header's SHA-256, its own index and whether it is the last, so an altered header, reordered or missing
chunks, a cut-off end and trailing bytes are all detected. Rows are taken generically from the SQLAlchemy
metadata, so columns added by later migrations travel without changes here; credentials stay sealed by
the master key and tokens stay hashed, the archive key only adds a layer around them.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import secrets
import socket
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import Column, Connection, Table, TypeDecorator, func, select, text
from sqlalchemy.exc import DBAPIError

from strongroom import __version__
from strongroom.config import Settings
from strongroom.crypto import DecryptionError, KeyProvider, Keyring, Sealed, load_keyring
from strongroom.crypto.barrier import Barrier, Binding, RecordBinding
from strongroom.errors import MasterKeyError, ServiceUnavailable, StrongroomError
from strongroom.store import Database
from strongroom.store.db import disk_full, full_disk, sqlite_path, unavailable
from strongroom.store.models import (
    AuditHead,
    Base,
    Credential,
    CredentialCount,
    KeyVersion,
    OAuthProvider,
    OAuthTokenState,
    utcnow,
)
from strongroom.store.repositories import KeyRepository
from strongroom.store.repositories.credentials import index_all_names
from strongroom.store.repositories.keys import BACKUP_HEARTBEAT
from strongroom.store.repositories.sharing import rederive_all

MAGIC = b"STRONGROOM-BACKUP\n"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 20  # plaintext per chunk before compression (a chunk ends after the row that crosses it)
# Not archived: counts and access rows are rebuilt from the credentials, roles and memberships; backup records
# describe the source's own archives.
DERIVED = frozenset({"credential_counts", "credential_access", "backups"})
# Rows every store has from its first start (the audit chains' genesis heads, store facts); an empty target's are
# replaced by the archive's.
REPLACED = ("audit_heads", "store_state")
SCRYPT = {"n": 2**17, "r": 8, "p": 1}  # OWASP's scrypt guidance: 128 MiB and about half a second per derivation
# The only scrypt costs a restore derives with (the header is not authenticated before the key is derived, so
# its parameters must not choose the memory spent): the current set, and the 32 MiB one of earlier versions.
KNOWN_SCRYPT = frozenset({(2**17, 8, 1), (2**15, 8, 1)})
ARCHIVE_KEY_VERSION = 0  # the `key_version` of a credential whose data key is wrapped by the archive key
_SEALED_TABLES = frozenset({"credentials", "oauth_providers", "oauth_token_states"})
MIN_PASSPHRASE = 10
_PREFIX = struct.Struct(">HI")  # format version, header length
_CHUNK = struct.Struct(">I")
_NONCE = 12
_MAX_HEADER = 1 << 20
_MAX_CHUNK = 256 << 20  # refuse absurd lengths before allocating (a single row is at most a few MiB)
_BATCH = 500


class ArchiveError(StrongroomError):
    """A backup cannot be written or an archive cannot be restored; the message says why and what to do."""


class Reporter(Protocol):
    """Progress of a long backup or restore (the CLI draws a bar; library callers may ignore it)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, rows: int) -> None: ...


class _Silent:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass


@dataclass(frozen=True)
class Header:
    """What an archive says about itself; authenticated by every chunk."""

    raw: bytes
    doc: dict[str, Any]

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(_PREFIX.pack(FORMAT_VERSION, len(self.raw)) + self.raw).digest()

    @property
    def key_mode(self) -> str:
        return str(self.doc["key"]["mode"])

    @property
    def self_contained(self) -> bool:
        """Whether the credentials' data keys are wrapped by the archive key (passphrase archives), so the
        archive restores without any master key of the source."""
        return self.doc.get("dataKeys") == "archive"

    @property
    def rows(self) -> dict[str, int]:
        return {name: int(t["rows"]) for name, t in self.doc["tables"].items()}


@dataclass(frozen=True)
class Summary:
    """Rows per table written or restored, and the archive's size."""

    rows: dict[str, int]
    size: int
    created_at: str


def archived_tables() -> list[Table]:
    """Every table of the schema in foreign-key order, except those rebuilt from others."""
    return [t for t in Base.metadata.sorted_tables if t.name not in DERIVED]


# ---- backup ---------------------------------------------------------------------------------------------


def backup(
    db: Database,
    keys: KeyProvider,
    path: Path,
    *,
    passphrase: str | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Summary:
    """Write a consistent snapshot of the store to `path` (0600, atomically: a failure leaves no file).

    With a passphrase the archive is self-contained: every data key is re-wrapped by the archive key, so it
    restores on a machine that never had this store's master key.
    """
    reporter = reporter or _Silent()
    if path.exists() and not overwrite:
        raise ArchiveError(f"{path} already exists; choose another file or pass --force to replace it")
    if passphrase is not None:
        check_passphrase(passphrase)
    archive_key = AESGCM.generate_key(bit_length=256)
    archive_id = secrets.token_hex(16)
    tables = archived_tables()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # A master-key archive holds the versions it may need from before its snapshot until it is recorded, so a
    # `keys retire` meanwhile is refused rather than leaving the archive unrestorable.
    claim = None if passphrase is not None else _Claim(db, keys, archive_id, path.resolve())
    placed = False
    try:
        with _snapshot(db) as conn:
            counts = {t.name: conn.scalar(select(func.count()).select_from(t)) or 0 for t in tables}
            doc = {
                "format": FORMAT_VERSION,
                "archiveId": archive_id,
                "createdAt": datetime.now().astimezone().isoformat(timespec="seconds"),
                "strongroomVersion": __version__,
                "schemaRevision": _revision(conn),
                "sourceBackend": "sqlite" if db.is_sqlite else "postgresql",
                "compression": "zlib",
                "tables": {t.name: {"columns": [c.name for c in t.columns], "rows": counts[t.name]} for t in tables},
                "key": _protect_key(archive_key, archive_id, keys, passphrase),
            }
            export = _Exporter(keys, archive_key) if passphrase is not None else None
            needs = set() if export else {doc["key"]["version"], *_sealed_versions(conn)}
            if export is not None:
                doc["dataKeys"] = "archive"
            header = Header(json.dumps(doc, separators=(",", ":")).encode(), doc)
            reporter.start("Backing up", sum(counts.values()))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC + _PREFIX.pack(FORMAT_VERSION, len(header.raw)) + header.raw)
                writer = _ChunkWriter(fh, AESGCM(archive_key), header.digest, chunk_bytes)
                for table in tables:
                    ordered = select(table).order_by(*table.primary_key.columns).execution_options(yield_per=_BATCH)
                    for batch in conn.execute(ordered).partitions():
                        for row in batch:
                            writer.add(_encode_row(table, export(table, row) if export else row))
                        reporter.advance(len(batch))
                        if claim is not None:
                            claim.alive()
                writer.close()
                fh.flush()
                os.fsync(fh.fileno())
        if claim is not None:
            claim.finish(needs)
        os.replace(tmp, path)
        placed = True
        _fsync_dir(path.parent)
    except OSError as exc:
        raise ArchiveError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
        if claim is not None and not placed:
            claim.release()
    return Summary(counts, path.stat().st_size, doc["createdAt"])


def _sealed_versions(conn: Connection) -> set[int]:
    """The master-key versions that wrap the data keys of the snapshot's sealed rows (credentials, OAuth providers'
    client secrets, credentials' OAuth token states): a restore opens every one of them."""
    columns = (Credential.key_version, OAuthProvider.key_version, OAuthTokenState.key_version)
    return {int(v) for column in columns for v in conn.scalars(select(column).distinct())}


class _Claim:
    """A master-key backup's row in `backups` while it is written: taken before the snapshot (every live version,
    the writer's host and pid), refreshed as rows are written, made the record of the versions the archive needs
    once it is complete, or removed if it never is."""

    def __init__(self, db: Database, keys: KeyProvider, archive_id: str, path: Path) -> None:
        self._repo, self._id, self._path = KeyRepository(db), archive_id, str(path)
        self._repo.claim_backup(archive_id, self._path, keys.versions(), socket.gethostname(), os.getpid(), utcnow())
        self._beat = time.monotonic()

    def alive(self) -> None:
        """A sign of life, at most once per BACKUP_HEARTBEAT; one that cannot be written (the database busy or
        away) is tried again with the next rows, and never fails the backup: `finish` checks what it must."""
        if time.monotonic() - self._beat >= BACKUP_HEARTBEAT.total_seconds():
            with suppress(StrongroomError):
                self._repo.backup_alive(self._id, utcnow())
                self._beat = time.monotonic()

    def finish(self, needs: set[int]) -> None:
        """Record what the complete archive needs; refused if one of those versions was retired meanwhile."""
        gone = self._repo.finish_backup(self._id, self._path, needs, utcnow())
        if gone:
            listed = ", ".join(str(v) for v in gone)
            raise ArchiveError(
                f"master key version {listed} was retired while this backup was being written (its hold on the "
                "versions was taken for that of a backup that had died), so the archive could not be restored; "
                "nothing was written. Run the backup again"
            )

    def release(self) -> None:
        """Remove the claim of a backup that failed; should that fail too, the claim lapses on its own."""
        with suppress(StrongroomError):
            self._repo.drop_backup(self._id)


def _sealed(table: Table, row: Mapping[str, Any]) -> tuple[str, Binding | RecordBinding]:
    """What the sealed secret of a row of `_SEALED_TABLES` is bound to, and a name for messages: credentials,
    OAuth providers' client secrets and credentials' OAuth token states are sealed under the master keys."""
    if table.name == "credentials":
        return f"credential {row['id']}", Binding.of(row)
    if table.name == "oauth_providers":
        return f"OAuth provider {row['id']}", RecordBinding("oauth-provider", row["id"], row["seal_generation"])
    if table.name == "oauth_token_states":
        name = f"the OAuth token state of credential {row['credential_id']}"
        return name, RecordBinding("oauth-token", row["credential_id"], row["seal_generation"])
    raise ValueError(f"table {table.name} holds no sealed secret")


def _sealed_key(table: Table, row: Mapping[str, Any]) -> tuple[str, str]:
    return table.name, str(row["credential_id"] if table.name == "oauth_token_states" else row["id"])


def _archive_keys(archive_key: bytes) -> Keyring:
    """The archive key as a one-version keyring, so the barrier can wrap data keys with it."""
    return Keyring({ARCHIVE_KEY_VERSION: archive_key}, ARCHIVE_KEY_VERSION, "the archive key")


class _Exporter:
    """Re-wraps each sealed row's data key (credentials, OAuth secrets) from the store's master keys to the
    archive key."""

    def __init__(self, keys: KeyProvider, archive_key: bytes) -> None:
        self._barrier = Barrier(keys)
        self._archive = _archive_keys(archive_key)

    def __call__(self, table: Table, row: Sequence[Any]) -> Sequence[Any]:
        if table.name not in _SEALED_TABLES:
            return row
        values = dict(zip(table.columns.keys(), row, strict=True))
        what, binding = _sealed(table, values)
        try:
            version, wrapped = self._barrier.rewrap_to(
                self._archive, binding, values["key_version"], bytes(values["wrapped_key"])
            )
        except (MasterKeyError, DecryptionError) as exc:
            raise ArchiveError(f"{what} cannot be opened for the archive: {exc.message}") from None
        values["key_version"], values["wrapped_key"] = version, wrapped
        return list(values.values())


@contextmanager
def _snapshot(db: Database) -> Iterator[Connection]:
    """A read-only transaction that sees one consistent state of every table while the server runs on.

    A database outage meanwhile leaves as ServiceUnavailable, the store's usual clean error.
    """
    try:
        with db.engine.connect() as conn:
            if not db.is_sqlite:
                conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin() as tx:  # SQLite in WAL mode: the first read fixes the snapshot
                yield conn
                tx.rollback()
    except DBAPIError as exc:
        error = unavailable(exc)
        if error is None:
            raise
        raise error from exc


def _revision(conn: Connection) -> str:
    return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


def _kind(column: Column[Any]) -> type:
    """The Python type a column holds: bytes and datetimes need an encoding in JSON."""
    kind = column.type.impl_instance if isinstance(column.type, TypeDecorator) else column.type
    try:
        return kind.python_type
    except NotImplementedError:
        return object


def _encode_row(table: Table, row: Sequence[Any]) -> bytes:
    values: list[Any] = []
    for column, value in zip(table.columns, row, strict=True):
        kind = _kind(column)
        if value is None:
            values.append(None)
        elif kind is bytes:
            values.append(base64.b64encode(value).decode())
        elif kind is datetime:
            values.append(value.isoformat())
        else:
            values.append(value)
    return json.dumps([table.name, values], separators=(",", ":")).encode() + b"\n"


class _ChunkWriter:
    """Buffers rows into chunks, seals each, and marks the last one as final."""

    def __init__(self, fh: IO[bytes], cipher: AESGCM, digest: bytes, chunk_bytes: int) -> None:
        self._fh, self._cipher, self._digest, self._limit = fh, cipher, digest, chunk_bytes
        self._buffer: list[bytes] = []
        self._size = 0
        self._index = 0

    def add(self, line: bytes) -> None:
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self._seal(final=False)

    def close(self) -> None:
        self._seal(final=True)  # possibly empty: its presence proves the archive was not cut short

    def _seal(self, *, final: bool) -> None:
        nonce = os.urandom(_NONCE)
        body = zlib.compress(b"".join(self._buffer), 6)
        sealed = nonce + self._cipher.encrypt(nonce, body, _chunk_aad(self._digest, self._index, final))
        self._fh.write(_CHUNK.pack(len(sealed)) + sealed)
        self._buffer, self._size, self._index = [], 0, self._index + 1


def _chunk_aad(digest: bytes, index: int, final: bool) -> bytes:
    return digest + struct.pack(">QB", index, final)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the archive key ------------------------------------------------------------------------------------


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise ArchiveError(f"passphrase: must be at least {MIN_PASSPHRASE} characters")


def _key_aad(archive_id: str) -> bytes:
    return f"strongroom/backup-key/v1|{archive_id}".encode()


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _protect_key(key: bytes, archive_id: str, keys: KeyProvider, passphrase: str | None) -> dict[str, Any]:
    """Wrap the archive key under the store's master key, or under a key derived from a passphrase."""
    aad = _key_aad(archive_id)
    if passphrase is None:
        version, wrapped = keys.wrap(key, aad)
        spec = {"mode": "master-key", "version": version, "wrapped": base64.b64encode(wrapped).decode()}
        return {**spec, "keyRef": keys.key_ref(version)}  # a KMS key id: how a KMS target finds that version
    salt = os.urandom(16)
    nonce = os.urandom(_NONCE)
    wrapped = nonce + AESGCM(_scrypt(passphrase, salt, **SCRYPT)).encrypt(nonce, key, aad)
    return {
        "mode": "passphrase",
        "kdf": "scrypt",
        "salt": base64.b64encode(salt).decode(),
        **SCRYPT,
        "wrapped": base64.b64encode(wrapped).decode(),
    }


def _archive_key(header: Header, keys: KeyProvider | None, passphrase: str | None) -> bytes:
    """Unwrap the archive key; a wrong passphrase or master key is told apart from a damaged chunk."""
    spec = header.doc["key"]
    aad = _key_aad(str(header.doc["archiveId"]))
    wrapped = base64.b64decode(spec["wrapped"])
    if spec["mode"] == "master-key":
        if passphrase is not None:
            raise ArchiveError("this archive is sealed with the store's master key, not a passphrase; omit it")
        version = int(spec["version"])
        if keys is None:
            raise ArchiveError("this archive is sealed with a master key; configure the store's master key")
        source = getattr(keys, "source", "the configured keys")
        if spec.get("keyRef") and keys.key_ref(version) != spec["keyRef"]:
            raise _needs_kms(version, spec["keyRef"])
        try:
            return keys.unwrap(version, wrapped, aad)
        except MasterKeyError:
            raise ArchiveError(
                f"the archive key is sealed with master key version {version}, which {source} does not have; "
                "restore needs the master key of the store that was backed up"
            ) from None
        except DecryptionError:
            raise ArchiveError(
                f"master key version {version} from {source} is not the key of the store that made this backup"
            ) from None
    if spec["mode"] != "passphrase" or spec.get("kdf") != "scrypt":
        raise ArchiveError(f"unsupported archive key protection {spec.get('mode')!r}")
    if passphrase is None:
        raise ArchiveError("this archive is protected by a passphrase; give it with --passphrase-file or the prompt")
    n, r, p = spec.get("n"), spec.get("r"), spec.get("p")
    if not all(type(v) is int for v in (n, r, p)) or (n, r, p) not in KNOWN_SCRYPT:  # Infinity, "x", 1e9 too
        known = " or ".join(f"n={n}, r={r}, p={p}" for n, r, p in sorted(KNOWN_SCRYPT))
        asked = ", ".join(f"{name}={str(value)[:20]}" for name, value in (("n", n), ("r", r), ("p", p)))
        raise ArchiveError(
            f"the archive header asks for unknown key-derivation costs (scrypt {asked}; "
            f"Strongroom writes {known}); the header is damaged or altered, refusing it"
        )
    kek = _scrypt(passphrase, base64.b64decode(spec["salt"]), n, r, p)
    try:
        return AESGCM(kek).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
    except InvalidTag:
        raise ArchiveError("wrong passphrase for this archive (or its header was altered)") from None


# ---- reading --------------------------------------------------------------------------------------------


def read_header(fh: IO[bytes]) -> Header:
    """Parse the unauthenticated prefix; the chunks prove later that it was not altered."""
    magic = fh.read(len(MAGIC))
    if magic != MAGIC:
        raise ArchiveError("not a Strongroom backup archive (unknown file signature)")
    prefix = fh.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise ArchiveError("the archive is truncated: its header is incomplete")
    version, length = _PREFIX.unpack(prefix)
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"unsupported archive format version {version}; this Strongroom reads version {FORMAT_VERSION}"
        )
    if length > _MAX_HEADER:
        raise ArchiveError("the archive header is implausibly large; the file is damaged")
    raw = fh.read(length)
    if len(raw) < length:
        raise ArchiveError("the archive is truncated: its header is incomplete")
    try:
        doc = json.loads(raw)
        tables = doc["tables"]
        if not isinstance(tables, dict) or not isinstance(doc["key"]["mode"], str) or doc["compression"] != "zlib":
            raise ValueError
        for spec in tables.values():
            int(spec["rows"]), list(spec["columns"])
        str(doc["schemaRevision"]), str(doc["archiveId"])
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        raise ArchiveError("the archive header is unreadable; the file is damaged or altered") from None
    return Header(raw, doc)


def header_of(path: Path) -> Header:
    """The header of the archive at `path` (to decide, for example, whether a passphrase is needed)."""
    with _open(path) as fh:
        return read_header(fh)


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror}") from None


def _chunks(fh: IO[bytes], header: Header, key: bytes) -> Iterator[bytes]:
    """Each chunk's plaintext, in order, each authenticated; then proof that nothing was cut or appended."""
    cipher = AESGCM(key)
    index = 0
    while True:
        prefix = fh.read(_CHUNK.size)
        if not prefix:
            raise ArchiveError(f"the archive is truncated: it ends after {index} chunk(s) without the final one")
        (length,) = _CHUNK.unpack(prefix) if len(prefix) == _CHUNK.size else (-1,)
        if not _NONCE + 16 <= length <= _MAX_CHUNK:
            raise ArchiveError(f"the archive is damaged or truncated at chunk {index}")
        sealed = fh.read(length)
        if len(sealed) < length:
            raise ArchiveError(f"the archive is truncated in chunk {index}")
        final = False
        try:
            body = cipher.decrypt(sealed[:_NONCE], sealed[_NONCE:], _chunk_aad(header.digest, index, False))
        except InvalidTag:
            try:
                body = cipher.decrypt(sealed[:_NONCE], sealed[_NONCE:], _chunk_aad(header.digest, index, True))
                final = True
            except InvalidTag:
                raise ArchiveError(
                    f"the archive has been altered or damaged: chunk {index} fails authentication"
                ) from None
        yield _inflate(body, index)
        index += 1
        if final:
            if fh.read(1):
                raise ArchiveError("the archive has unexpected data after its final chunk; refusing it")
            return


def _inflate(body: bytes, index: int) -> bytes:
    inflater = zlib.decompressobj()
    data = inflater.decompress(body, _MAX_CHUNK)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ArchiveError(f"chunk {index} does not decompress; the archive is damaged")
    return data


def _rows(fh: IO[bytes], header: Header, key: bytes) -> Iterator[tuple[Table, dict[str, Any]]]:
    """Every archived row, decoded into column values for this schema."""
    tables = {t.name: t for t in archived_tables()}
    for index, plain in enumerate(_chunks(fh, header, key)):
        for line in plain.splitlines():
            try:  # authenticated, so only a writer bug or the key holder could make this fail
                name, values = json.loads(line)
                table = tables[name]
                row = _decode_row(table, header.doc["tables"][name]["columns"], values)
            except (ValueError, KeyError, TypeError, OverflowError, RecursionError, binascii.Error):
                raise ArchiveError(f"chunk {index} holds a row this schema cannot read") from None
            yield table, row


def _decode_row(table: Table, columns: list[str], values: list[Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, value in zip(columns, values, strict=True):
        kind = _kind(table.columns[name])
        if value is None:
            row[name] = None
        elif kind is bytes:
            row[name] = base64.b64decode(value, validate=True)
        elif kind is datetime:
            row[name] = datetime.fromisoformat(value)
        else:
            row[name] = value
    return row


# ---- restore --------------------------------------------------------------------------------------------


def restore(
    settings: Settings, path: Path, *, passphrase: str | None = None, reporter: Reporter | None = None
) -> Summary:
    """Load an archive into the empty store `settings` names: verified in full first, written in one transaction.

    A self-contained (passphrase) archive needs no master key of the source: a target without keys gets a
    fresh master key, and every data key is re-wrapped under the target's active version. A refused or
    interrupted restore removes what it created (directories, the SQLite file, the key file, and the tables of a
    PostgreSQL database that was empty), so the target is left as it was found.
    """
    try:
        return _restore(settings, path, passphrase, reporter or _Silent())
    except OSError as exc:  # creating the directory, the SQLite file or the key file (SQLite's own are mapped)
        where = exc.filename or settings.data_dir
        if exc.errno == errno.ENOSPC:
            raise ArchiveError(full_disk(str(where))) from None
        raise ArchiveError(f"cannot restore into {where}: {(exc.strerror or type(exc).__name__).lower()}") from None


def _restore(settings: Settings, path: Path, passphrase: str | None, reporter: Reporter) -> Summary:
    refs: dict[int, str] = {}  # KMS key ids per version, as the archive records them
    self_contained = header_of(path).self_contained
    keys = None if self_contained else _target_keys(settings, refs)  # refuse before creating a store
    size = path.stat().st_size
    with _Created(settings) as created:
        db = Database.from_settings(settings)
        blank = None  # PostgreSQL: what an empty database held before the migration (None: not ours to clean)
        try:
            blank = db.blank_schema()
            db.migrate()
            with _open(path) as fh:
                header = read_header(fh)
                _check_schema(db, header)
                with db.read() as s:
                    _require_empty(s.connection())
                    recorded = s.connection().scalar(select(func.count()).select_from(KeyVersion.__table__)) or 0
                if keys is None:  # a store with recorded versions keeps its key: never a fresh one over them
                    keys = _target_keys(settings, refs, create=not recorded)
                if header.doc["key"].get("keyRef") and settings.kms_key_id:
                    refs[int(header.doc["key"]["version"])] = header.doc["key"]["keyRef"]
                    keys.refresh()
                key = _unwrap_archive_key(header, keys, passphrase)
                start = fh.tell()
                reporter.start("Verifying", sum(header.rows.values()))
                rewrapped = _verify(
                    _rows(fh, header, key),
                    header,
                    keys,
                    refs if settings.kms_key_id else None,
                    reporter,
                    archive=_archive_keys(key) if self_contained else None,
                )
                fh.seek(start)
                reporter.start("Restoring", sum(header.rows.values()))
                with db.write() as s:  # the file is re-authenticated as it is read; any failure rolls all back
                    conn = s.connection()
                    _require_empty(conn)
                    rows = _rows(fh, header, key)
                    if self_contained:  # the target's own key versions stay; the source's mean nothing here
                        rows = _adopted(rows, rewrapped)
                        _record_active(conn, keys)
                    else:
                        conn.execute(KeyVersion.__table__.delete())  # a first start's check row
                    for table in REPLACED:  # the empty target's own: the archive's take their place
                        conn.execute(Base.metadata.tables[table].delete())
                    _insert(conn, rows, reporter)
                    _recount(conn)
                    index_all_names(conn)
                created.keep()  # committed: from now on these files are the restored store
        except ServiceUnavailable as exc:
            if disk_full(exc.__cause__):  # the store's 503 names no path (API clients read it); a restore names it
                raise ArchiveError(full_disk(f"the database {db.where}")) from None
            raise
        finally:
            if blank is not None and not created.kept:
                with suppress(StrongroomError, DBAPIError):  # the refusal is the error to report, not a failed drop
                    db.drop_created(blank)
            db.dispose()
    return Summary(header.rows, size, str(header.doc.get("createdAt", "")))


class _Created:
    """What a restore is about to create locally, noted on entry; removed on exit unless `keep` was called.

    Only what did not exist on entry is removed: an existing store, key file or directory is never touched, and
    directories go only while empty.
    """

    def __init__(self, settings: Settings) -> None:
        files: list[Path] = []
        directories: list[Path] = []
        database = sqlite_path(settings.resolved_database_url)
        if database is not None and not os.path.lexists(database):
            # SQLite's companions only with a new file: an existing store's WAL may be in use by its server
            files += [database, *(database.with_name(database.name + end) for end in ("-wal", "-shm", "-journal"))]
            directories.append(database.parent)
        if not (settings.master_key or settings.kms_key_id):
            key_file = settings.resolved_key_file
            files += [key_file, key_file.with_name(key_file.name + ".lock")]
            directories.append(key_file.parent)
        self._files = [f for f in files if not os.path.lexists(f)]
        self._directories = sorted({d for top in directories for d in _missing(top)}, key=lambda d: -len(d.parts))
        self._keep = False

    def keep(self) -> None:
        """The restore committed: nothing is removed."""
        self._keep = True

    @property
    def kept(self) -> bool:
        """Whether the restore committed."""
        return self._keep

    def __enter__(self) -> _Created:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._keep:
            return
        for file in self._files:
            file.unlink(missing_ok=True)
        for directory in self._directories:  # deepest first
            with suppress(OSError):  # something else was put there meanwhile: it stays
                directory.rmdir()


def _missing(directory: Path) -> list[Path]:
    """`directory` and its ancestors that do not exist yet (all that creating it with its parents would make)."""
    missing = []
    while not os.path.lexists(directory) and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def verify_archive(
    settings: Settings, path: Path, *, passphrase: str | None = None, reporter: Reporter | None = None
) -> Summary:
    """Authenticate every chunk and decrypt every secret of an archive, writing nothing anywhere.

    A master-key archive needs the configured master key (as a restore would); a self-contained one only
    its passphrase.
    """
    reporter = reporter or _Silent()
    refs: dict[int, str] = {}
    self_contained = header_of(path).self_contained
    keys = None if self_contained else _target_keys(settings, refs)
    with _open(path) as fh:
        header = read_header(fh)
        if keys is not None and header.doc["key"].get("keyRef") and settings.kms_key_id:
            refs[int(header.doc["key"]["version"])] = header.doc["key"]["keyRef"]
            keys.refresh()
        key = _unwrap_archive_key(header, keys, passphrase)
        reporter.start("Verifying", sum(header.rows.values()))
        archive = _archive_keys(key)
        _verify(
            _rows(fh, header, key),
            header,
            keys or archive,
            refs if settings.kms_key_id else None,
            reporter,
            archive=archive if self_contained else None,
        )
    return Summary(header.rows, path.stat().st_size, str(header.doc.get("createdAt", "")))


def _unwrap_archive_key(header: Header, keys: KeyProvider | None, passphrase: str | None) -> bytes:
    try:
        return _archive_key(header, keys, passphrase)
    except (KeyError, ValueError, TypeError, binascii.Error):
        raise ArchiveError("the archive header is unreadable; the file is damaged or altered") from None


def _adopted(
    rows: Iterator[tuple[Table, dict[str, Any]]], rewrapped: dict[tuple[str, str], tuple[int, bytes]]
) -> Iterator[tuple[Table, dict[str, Any]]]:
    """The archive's rows for a target with its own keys: no source key versions, data keys re-wrapped."""
    for table, row in rows:
        if table.name == "key_versions":
            continue
        if table.name in _SEALED_TABLES:
            row["key_version"], row["wrapped_key"] = rewrapped[_sealed_key(table, row)]
        yield table, row


def _record_active(conn: Connection, keys: KeyProvider) -> None:
    """Record the target's active version with its check value, as a first start does, if it is not yet."""
    version = keys.active_version()
    table = KeyVersion.__table__
    if conn.scalar(select(func.count()).select_from(table).where(table.c.version == version)):
        return
    wrapped_under, check = Barrier(keys).check_value(version)
    if wrapped_under != version:
        raise ArchiveError(f"{keys.source} did not activate master key version {version}")
    conn.execute(
        table.insert().values(version=version, check_value=check, key_ref=keys.key_ref(version), created_at=utcnow())
    )


def _target_keys(settings: Settings, refs: dict[int, str], *, create: bool = False) -> KeyProvider:
    """The target's master key; a fresh one only when `create` (a self-contained archive into a new store).

    A master-key archive needs the source's key: its data keys are wrapped by it. With AWS KMS the versions'
    key ids come from the archive (`refs`, filled while it is read), as a server reads them from its database.
    """
    if settings.kms_key_id:
        from strongroom.crypto.kms import KmsKeyProvider, kms_client

        client = kms_client(endpoint_url=settings.kms_endpoint_url, region=settings.kms_region)
        return KmsKeyProvider(client, lambda: dict(refs), settings.kms_key_id)
    key_file = settings.resolved_key_file
    if not settings.master_key and not key_file.exists() and not create:
        raise ArchiveError(
            f"no master key at {key_file} and STRONGROOM_MASTER_KEY is not set; restore needs the master key "
            "of the store that was backed up (the archive holds data keys wrapped by it, not the key itself)"
        )
    return load_keyring(env_value=settings.master_key, key_file=key_file, create=create)


def _check_schema(db: Database, header: Header) -> None:
    with db.read() as s:
        target = _revision(s.connection())
    source = str(header.doc["schemaRevision"])
    if source != target:
        raise ArchiveError(
            f"the archive is at schema revision {source} but this store is at {target}; restore it with the "
            "Strongroom version that made it, then upgrade"
        )
    expected = {t.name: [c.name for c in t.columns] for t in archived_tables()}
    archived = {name: spec["columns"] for name, spec in header.doc["tables"].items()}
    if {k: sorted(v) for k, v in archived.items()} != {k: sorted(v) for k, v in expected.items()}:
        raise ArchiveError("the archive's tables do not match this store's schema at the same revision")


def _require_empty(conn: Connection) -> None:
    """Refuse to merge into existing data: ids, names and tokens would clash or silently mix."""
    found = {
        t.name: n
        for t in archived_tables()
        if t.name not in ("key_versions", *REPLACED) and (n := conn.scalar(select(func.count()).select_from(t)))
    }
    if conn.scalar(select(func.count()).select_from(AuditHead).where(AuditHead.seq > 0)):
        found["audit_log"] = found.get("audit_log", 0)
    if found:
        listed = ", ".join(f"{n} row(s) in {name}" for name, n in found.items())
        raise ArchiveError(f"the target store is not empty ({listed}); restore only into an empty store")


def _verify(
    rows: Iterator[tuple[Table, dict[str, Any]]],
    header: Header,
    keys: KeyProvider,
    kms_refs: dict[int, str] | None,
    reporter: Reporter,
    *,
    archive: KeyProvider | None = None,
) -> dict[tuple[str, str], tuple[int, bytes]]:
    """Authenticate every chunk, count rows, and prove every credential decrypts.

    Under the target's keys for a master-key archive; with `archive` (a self-contained archive's key) the
    credentials open with it, and their data keys come back re-wrapped under `keys`' active version, by id.
    """
    barrier = Barrier(archive or keys)
    source = getattr(keys, "source", "the configured keys")
    seen = dict.fromkeys(header.rows, 0)
    versions: list[Mapping[str, Any]] = []
    rewrapped: dict[tuple[str, str], tuple[int, bytes]] = {}
    for table, row in rows:
        seen[table.name] += 1
        if table.name == "key_versions":  # they come first: the credentials need them
            versions.append(row)
        else:
            if versions and archive is None:
                _check_key_versions(keys, versions, kms_refs, source)
            versions = []
            if table.name in _SEALED_TABLES:
                if archive is None:
                    _check_credential(barrier, table, row, source)
                else:
                    rewrapped[_sealed_key(table, row)] = _open_self_contained(barrier, keys, table, row)
        reporter.advance(1)
    if archive is None:
        _check_key_versions(keys, versions, kms_refs, source)
    if seen != header.rows:
        raise ArchiveError("the archive's rows do not match its header's counts; the archive is damaged")
    return rewrapped


def _open_self_contained(
    barrier: Barrier, target: KeyProvider, table: Table, row: Mapping[str, Any]
) -> tuple[int, bytes]:
    """Open a row (credential, OAuth secret) sealed for a self-contained archive; its data key re-wrapped under
    `target`."""
    what, binding = _sealed(table, row)
    try:
        barrier.open(binding, Sealed(row["key_version"], row["wrapped_key"], row["ciphertext"]))
        return barrier.rewrap_to(target, binding, row["key_version"], row["wrapped_key"])
    except (MasterKeyError, DecryptionError):
        raise ArchiveError(f"{what} does not decrypt with the archive key; the archive is damaged") from None


def _needs_kms(version: int, key_ref: str) -> ArchiveError:
    return ArchiveError(
        f"master key version {version} of the archive is the AWS KMS key {key_ref}; set STRONGROOM_KMS_KEY_ID "
        "(and the KMS endpoint or region) to restore it"
    )


def _check_key_versions(
    keys: KeyProvider, rows: list[Mapping[str, Any]], kms_refs: dict[int, str] | None, source: str
) -> None:
    """Give a KMS target the archive's key ids, then check every version as a server would at start."""
    live = {row["version"]: row.get("key_ref") for row in rows if row.get("retired_at") is None}
    if kms_refs is not None:
        kms_refs.update({version: ref for version, ref in live.items() if ref})
        keys.refresh()
    else:
        for version, ref in live.items():
            if ref:
                raise _needs_kms(version, ref)
    for row in rows:
        _check_key_version(keys, row, source)


def _check_key_version(keys: KeyProvider, row: Mapping[str, Any], source: str) -> None:
    """A version the target has must be the very key the archive's check value was made with (as at start)."""
    version = row["version"]
    if version not in keys.versions():
        return  # credentials that need it are refused by name; an unused old version may be absent
    if not Barrier(keys).matches(version, row["check_value"]):
        raise ArchiveError(f"master key version {version} from {source} is not the key of the store that was backed up")


def _check_credential(barrier: Barrier, table: Table, row: Mapping[str, Any], source: str) -> None:
    """A sealed row (credential, OAuth secret) of a master-key archive opens under the target's keys."""
    what, binding = _sealed(table, row)
    version = row["key_version"]
    sealed = Sealed(version, row["wrapped_key"], row["ciphertext"])
    try:
        barrier.open(binding, sealed)
    except MasterKeyError:
        raise ArchiveError(
            f"{what} is sealed with master key version {version}, which {source} does not have; "
            "the archive holds data keys wrapped by the source store's master keys, not the keys themselves"
        ) from None
    except DecryptionError:
        raise ArchiveError(
            f"{what} does not decrypt under master key version {version} from {source}: "
            "it is not the master key of the store that was backed up"
        ) from None


def _recount(conn: Connection) -> None:
    """The derived per-owner counts and access rows, from the restored rows, in the same transaction."""
    totals = select(Credential.owner_id, Credential.credential_type, func.count()).group_by(
        Credential.owner_id, Credential.credential_type
    )
    conn.execute(CredentialCount.__table__.delete())
    conn.execute(CredentialCount.__table__.insert().from_select(["owner_id", "credential_type", "n"], totals))
    rederive_all(conn)


def _insert(conn: Connection, rows: Iterator[tuple[Table, dict[str, Any]]], reporter: Reporter) -> None:
    """Insert in batches per table; rows arrive in foreign-key order."""
    table: Table | None = None
    batch: list[dict[str, Any]] = []
    for row_table, row in rows:
        if row_table is not table or len(batch) >= _BATCH:
            if table is not None and batch:
                conn.execute(table.insert(), batch)
                reporter.advance(len(batch))
            table, batch = row_table, []
        batch.append(row)
    if table is not None and batch:
        conn.execute(table.insert(), batch)
        reporter.advance(len(batch))
