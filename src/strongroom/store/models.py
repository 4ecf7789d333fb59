"""Tables. Secrets live only in `credentials.ciphertext`; everything else is queryable metadata."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false

_SEQUENCE = itertools.count(int.from_bytes(os.urandom(3), "big") >> 1)  # wraps past 2**24 after 8M ids at least


_ID = re.compile(r"[0-9a-f]{24}")


def is_id(value: str) -> bool:
    """Whether `value` has the form of an id `new_id` makes (24 lowercase hex digits)."""
    return _ID.fullmatch(value) is not None


def new_id() -> str:
    """24 lowercase hex characters like a MongoDB ObjectId: 4 bytes of time, a 3-byte counter of this process,
    5 random bytes. Ids of one process sort by creation even within a second, so new rows land on an index's
    last pages (random ids within a second touched a page per row); the random part keeps them unguessable."""
    return (
        int(time.time()).to_bytes(4, "big").hex()
        + (next(_SEQUENCE) & 0xFFFFFF).to_bytes(3, "big").hex()
        + os.urandom(5).hex()
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite has no time zones) and always returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        """SQLite: the text SQLAlchemy's DATETIME stores (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC), in one step."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # set: every token fails
    # May see credentials beyond their own (a direct share or a group membership); False: owner-only lists.
    shared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiToken(Base):
    """An API token, stored only as its SHA-256: tokens are 256-bit random, so no slow hash is needed."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(255), default="read write use admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # to the minute


class Credential(Base):
    __tablename__ = "credentials"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_credentials_owner_name"),
        Index("ix_credentials_owner_created", "owner_id", "created_at", "id"),
        Index("ix_credentials_owner_type_created", "owner_id", "credential_type", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    credential_type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    public_data: Mapped[str] = mapped_column(Text, default="{}")  # JSON of the type's public fields
    # The credential as the API shows it (JSON text), rendered at every write so reads send it untouched.
    wire: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_version: Mapped[int] = mapped_column(Integer, index=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    revision: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every change
    # Bumped at every re-seal and bound into the seal's associated data (crypto/barrier.py); 0: a seal made
    # before generations existed, re-sealed at the next start.
    seal_generation: Mapped[int] = mapped_column(Integer, default=1, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


COUNT_SHARDS = 32  # PostgreSQL count shards per owner and type (a total sums at most this many rows each)


class CredentialCount(Base):
    """Credentials per owner and type, changed in the same transaction as every create and delete, so a
    list page's `totalCount` is a short index range instead of a scan of the owner's credentials.

    A count is the sum over its shards. On PostgreSQL each connection adds to the shard of its backend
    process id, so concurrent creates of one owner and type do not wait for each other's commit to update
    a single row; SQLite writes one at a time and uses shard 0 (docs/performance.md: count shards).
    """

    __tablename__ = "credential_counts"

    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    credential_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, default=0, server_default="0")
    n: Mapped[int] = mapped_column(Integer, default=0)


class KeyVersion(Base):
    """One row per master-key version ever used, with a check value to detect a wrong key at start."""

    __tablename__ = "key_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    check_value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    key_ref: Mapped[str | None] = mapped_column(String(2048), nullable=True)  # the KMS key id; None: local key
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # no data uses it any more


class StoreState(Base):
    """Facts about the store as a whole, by name (such as when its pre-generation seals were upgraded)."""

    __tablename__ = "store_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Backup(Base):
    """A master-key backup written from this store, and the key versions it needs to restore, so retiring one of
    them can name the archives it would make unrestorable. Self-contained (passphrase) backups need none.

    A backup holds its row from before its snapshot (`state` "running": every version it may need, its writer's
    host and pid, `heartbeat_at` refreshed as it writes) until it is done, so no retirement meanwhile breaks it."""

    __tablename__ = "backups"

    archive_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    key_versions: Mapped[str] = mapped_column(String(255))  # space-separated, e.g. "1 2"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)  # when done; while running, the start
    state: Mapped[str] = mapped_column(String(8), default="done", server_default="done")  # "running" or "done"
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the writer's, while running
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Group(Base):
    """A named set of users; sharing with a group gives each member the role."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_user", "user_id", "group_id"),)

    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class CredentialRole(Base):
    """A role on a credential given to a user or a group, beside its owner (`credentials.owner_id`), who always
    holds OWNER. `role` is a rank: 3 OWNER, 2 EDITOR, 1 CONSUMER (the highest of a caller's rows counts)."""

    __tablename__ = "credential_roles"
    __table_args__ = (Index("ix_credential_roles_recipient", "recipient_type", "recipient_id", "credential_id"),)

    credential_id: Mapped[str] = mapped_column(ForeignKey("credentials.id", ondelete="CASCADE"), primary_key=True)
    recipient_type: Mapped[str] = mapped_column(String(8), primary_key=True)  # "user" or "group"
    recipient_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    role: Mapped[int] = mapped_column(Integer)
    can_share: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CredentialAccess(Base):
    """What a user holds on a credential they do not own, derived from `credential_roles` and `group_members`
    (rewritten by the sharing repository in the transaction that changes either): the highest of their roles,
    whether any of their rows may share, and the credential's creation time, so that a shared list pages through
    an index and a role is one key lookup."""

    __tablename__ = "credential_access"
    __table_args__ = (Index("ix_credential_access_page", "user_id", "created_at", "credential_id", "role"),)

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    credential_id: Mapped[str] = mapped_column(ForeignKey("credentials.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[int] = mapped_column(Integer)
    can_share: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


AUDIT_SHARDS = 32  # independent hash chains: concurrent writers on PostgreSQL extend different ones


class AuditRecord(Base):
    """One audited event. `content` is the canonical JSON of the whole record (the columns beside it are copies
    for filtering); `hash` = SHA-256 of the previous record's hash in the same shard followed by `content`."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at", "shard", "seq"),
        Index("ix_audit_log_credential", "credential_id", "at"),
        Index("ix_audit_log_owner", "owner_id", "at"),
    )

    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str | None] = mapped_column(String(255), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    credential_id: Mapped[str | None] = mapped_column(String(24), nullable=True)
    owner_id: Mapped[str | None] = mapped_column(String(24), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The last record of each audit chain (seq 0 and a hash of zeros before the first)."""

    __tablename__ = "audit_heads"

    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class DataStore(Base):
    """An external database the server connects to (DataRobot's `externalDataStores`): where, never a secret.
    Its creator (`owner_id`) always holds OWNER; `data_store_roles` adds roles for other users and groups."""

    __tablename__ = "data_stores"
    __table_args__ = (Index("ix_data_stores_owner", "owner_id", "canonical_name"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    store_type: Mapped[str] = mapped_column(String(32))
    canonical_name: Mapped[str] = mapped_column(String(255))
    driver_id: Mapped[str | None] = mapped_column(String(24), nullable=True)
    jdbc_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    fields: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {id, name, value}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DataStoreRole(Base):
    """A role on a data store given to a user or a group: the same ranks as `credential_roles`."""

    __tablename__ = "data_store_roles"
    __table_args__ = (Index("ix_data_store_roles_recipient", "recipient_type", "recipient_id", "data_store_id"),)

    data_store_id: Mapped[str] = mapped_column(ForeignKey("data_stores.id", ondelete="CASCADE"), primary_key=True)
    recipient_type: Mapped[str] = mapped_column(String(8), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    role: Mapped[int] = mapped_column(Integer)
    can_share: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CredentialAssociation(Base):
    """A user's link between a credential and an object that uses it (`dataconnection:<store id>`); at most one
    default per user and object."""

    __tablename__ = "credential_associations"
    __table_args__ = (Index("ix_credential_associations_object", "object_type", "object_id", "user_id"),)

    credential_id: Mapped[str] = mapped_column(ForeignKey("credentials.id", ondelete="CASCADE"), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    is_default: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OAuthProvider(Base):
    """An OAuth 2.0 authorization server that refreshes `oauth` credentials (admin-managed): where its token
    endpoint is, the client Strongroom authenticates as, and that client's secret, sealed (`key_version`,
    `wrapped_key`, `ciphertext`, bound to the row by crypto/barrier.py's `RecordBinding`)."""

    __tablename__ = "oauth_providers"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    token_url: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str] = mapped_column(String(1024))
    auth_method: Mapped[str] = mapped_column(String(32))  # client_secret_basic or client_secret_post
    key_version: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    seal_generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OAuthTokenState(Base):
    """An `oauth` credential's current access and refresh tokens, sealed, once it has been refreshed; derived
    from the credential's own secret at seal generation `source_generation` (a replaced secret starts over).
    `reauth_at` set: the provider rejected the refresh token (`reauth_error` is its error code, never a token),
    and no refresh is tried until the credential's secret is replaced."""

    __tablename__ = "oauth_token_states"

    credential_id: Mapped[str] = mapped_column(ForeignKey("credentials.id", ondelete="CASCADE"), primary_key=True)
    source_generation: Mapped[int] = mapped_column(Integer)
    seal_generation: Mapped[int] = mapped_column(Integer)  # bumped at every write, bound into the seal
    key_version: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    token_type: Mapped[str] = mapped_column(String(64))
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reauth_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reauth_error: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Deployment(Base):
    """A scoring function an administrator registered (`package.module:function`); the built-in `passthrough`
    deployment is not stored."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    label: Mapped[str] = mapped_column(String(255), unique=True)
    entry_point: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BatchJob(Base):
    """A batch job (DataRobot's `batchPredictions`): its validated spec (ids only, never a secret), its status and
    counters; the work itself is in `batch_job_chunks`."""

    __tablename__ = "batch_jobs"
    __table_args__ = (Index("ix_batch_jobs_owner", "owner_id", "created_at"), Index("ix_batch_jobs_status", "status"))

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_id: Mapped[str] = mapped_column(String(24))
    deployment_id: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[str] = mapped_column(Text)  # the jobSpec as JSON: ids and settings, never a secret
    status_details: Mapped[str] = mapped_column(Text, default="")
    intake_ready: Mapped[bool] = mapped_column(Boolean, default=False)  # localFile: the upload is complete
    expected_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)  # for percentageCompleted
    total_chunks: Mapped[int | None] = mapped_column(Integer, nullable=True)  # known once the intake is read
    scored_rows: Mapped[int] = mapped_column(Integer, default=0)
    failed_rows: Mapped[int] = mapped_column(Integer, default=0)
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # runs of the producer (queued)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BatchJobChunk(Base):
    """One chunk of a job: read -> scored -> written under its number, which orders (and deduplicates) output."""

    __tablename__ = "batch_job_chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # RUNNING, DONE, FAILED
    rows: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
