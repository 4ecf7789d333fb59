"""Server settings from the environment (STRONGROOM_*): everything has a working default."""

from __future__ import annotations

import os
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """XDG data home, so a first start needs no configuration at all."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "strongroom"


_DATABASES = "STRONGROOM_DATABASE_URL must be sqlite:///path or postgresql+psycopg://user@host:port/database"
_SECRET_QUERY = ("password", "sslpassword")  # libpq connection parameters that hold a secret


def mask_password(url: str) -> str:
    """The URL with any password replaced by ***, including libpq's `password=` and `sslpassword=` parameters."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads: show nothing of it rather than risk a secret
        return "***"
    hidden = {key: "***" for key in parsed.query if key.lower() in _SECRET_QUERY}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")


class Settings(BaseSettings):
    """Where data and keys live and how the server listens."""

    # A refused value is never quoted back (a database URL may hold a password).
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore", hide_input_in_errors=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None  # default: SQLite in data_dir
    master_key: str | None = Field(default=None, repr=False)  # keyring JSON or base64 key; else the key file
    master_key_file: Path | None = None  # default: data_dir/master.key
    kms_key_id: str | None = None  # set: master keys live in AWS KMS; this key protects a new store
    kms_endpoint_url: str | None = None  # a KMS-compatible endpoint instead of AWS's
    kms_region: str | None = None  # default: AWS_REGION / AWS_DEFAULT_REGION
    host: str = "127.0.0.1"
    port: int = 8484
    workers: int = 1  # server processes; use PostgreSQL when running more than one
    max_body_bytes: int = 1_048_576
    auth_failure_limit: int = 20  # failed authentications per client address and window before 429; 0: off
    auth_failure_window: float = 60  # seconds
    sqlite_synchronous: str = "FULL"  # FULL: an acknowledged write survives power loss, not only a crash
    db_timeout: float = 30  # seconds a statement may wait: PostgreSQL statement_timeout, SQLite busy_timeout
    db_connect_timeout: int = 3  # seconds to reach PostgreSQL before answering 503 (libpq's minimum is 2)
    db_pool_size: int = 10  # PostgreSQL: connections each of the store's two pools keeps open
    db_pool_overflow: int = 20  # PostgreSQL: connections each pool may open beyond that under load
    log_level: str = "info"
    last_used_flush: float = 30  # seconds between writes of tokens' last use (each at most once a minute)
    access_log: bool = True  # one line per request with its X-Request-Id (Strongroom's own; uvicorn's is off)
    # The HTTP boundary (api/serve.py): what one connection may cost before it is cut off.
    max_header_bytes: int = 32_768  # request line plus all header lines; over it: 431 and the connection closes
    max_headers: int = 100  # header lines per request; over it: 431
    header_timeout: float = 10  # seconds from a connection (or a request's first byte) to its complete headers
    body_timeout: float = 30  # seconds to receive a whole request body once authenticated; over it: 408
    keepalive_timeout: float = 5  # seconds an idle keep-alive connection is kept open
    limit_concurrency: int = 1000  # open connections or requests in flight per process beyond which new ones get 503
    trusted_proxies: str = ""  # comma-separated addresses or networks whose X-Forwarded-For is believed; none
    public_url: str | None = None  # e.g. https://vault.example.com: base of `next`/`previous` links and redirects
    store_threads: int | None = None  # threads running store calls; default 16 on PostgreSQL, 40 on SQLite
    # Outbound connections to data stores (tests, browsing): timeouts and where the server may connect.
    connect_timeout: float = 5  # seconds to reach a data store and log in
    statement_timeout: float = 10  # seconds a statement on a data store may run
    connect_allow: str = ""  # comma-separated hosts or networks; set: only these (and refused ones stay refused)
    connect_deny: str = ""  # comma-separated hosts or networks never connected to
    # OAuth access tokens (POST credentials/{id}/accessToken/): refreshed when they expire within this many seconds.
    oauth_refresh_margin: float = 60
    # seconds a provider that was down (unreachable, timed out, 5xx) for a grant is not called again for that grant
    oauth_failure_backoff: float = 5
    # Batch jobs (services/jobs.py): the embedded runner and its limits.
    job_threads: int = 2  # jobs run at once by the server's embedded runner (each on its own thread)
    job_max_concurrent: int = 4  # upper bound of a job's numConcurrent (chunks of one job at once)
    job_chunk_rows: int = 10_000  # rows per chunk when a job gives no chunkSize
    job_statement_timeout: float = 3600  # seconds a job's statement on a data store may run
    job_upload_max_bytes: int = 5 * 1024**3  # the largest localFile intake a job accepts (all its parts together)
    job_upload_expiry: float = 86400  # seconds a job waits for its upload to be finished before it FAILS
    job_queue: str = "auto"  # auto: procrastinate workers on PostgreSQL, the embedded runner on SQLite; or embedded
    worker_heartbeat: float = 10  # seconds between a `strongroom worker`'s heartbeats
    worker_stalled_after: float = 30  # seconds without a heartbeat after which a worker's tasks are run again
    worker_poll_interval: float = 5  # seconds between a worker's looks for tasks no notification announced (retries)
    job_orphan_after: float = 300  # seconds a RUNNING job may go without any live worker before it FAILS
    job_s3_part_bytes: int = 8 * 1024**2  # parts of an s3 output's multipart upload (S3's minimum, 5 MiB, at least)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        """SQLite or PostgreSQL through psycopg 3; `postgres://` and `postgresql://` mean the latter."""
        if not value:
            return None
        from sqlalchemy.engine import make_url

        try:
            url = make_url(value)
            port = url.port  # a non-numeric port fails here
        except Exception:
            raise ValueError(_DATABASES) from None
        if url.drivername in ("postgres", "postgresql"):
            return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        if url.drivername not in ("sqlite", "postgresql+psycopg") or (port is not None and not 0 < port < 65536):
            raise ValueError(_DATABASES)
        return value

    @field_validator("sqlite_synchronous")
    @classmethod
    def _synchronous_level(cls, value: str) -> str:
        """One of SQLite's `synchronous` levels."""
        if value.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("STRONGROOM_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA")
        return value.upper()

    @field_validator("public_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        """An http(s) URL with a host and nothing after the path; stored without a trailing slash."""
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("STRONGROOM_PUBLIC_URL must be an http(s) URL such as https://vault.example.com")
        return value.rstrip("/")

    @cached_property
    def proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """`trusted_proxies` parsed; a malformed entry fails at start, not per request."""
        return tuple(ip_network(item.strip(), strict=False) for item in self.trusted_proxies.split(",") if item.strip())

    def __repr_args__(self) -> Any:
        """Every field as usual, but a database URL's password masked: settings get logged and printed."""
        for name, value in super().__repr_args__():
            yield name, (mask_password(value) if name == "database_url" and value else value)

    @property
    def resolved_store_threads(self) -> int:
        """SQLite writers mostly wait on a group commit, so more of them fill each commit. On PostgreSQL the
        number also caps the event loop's own connections (`store/pgloop.py`): at 32 client connections 4, 8
        and 16 served GET, list and create alike, 32 were slower (bench/, this 2-core machine)."""
        if self.store_threads:
            return self.store_threads
        return 40 if self.resolved_database_url.startswith("sqlite") else 16

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'strongroom.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"
