"""The bench's own launcher: one `strongroom serve` child process, a throwaway PostgreSQL database, and a
signature-checking S3 server (moto in server mode) that the tests use too.

Deliberately separate from the test suite's helpers (`bench/` imports nothing from `tests/`): the bench needs
only to start a server pinned where it is told, wait until it answers, and stop it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PG_ADMIN_URL = os.environ.get("STRONGROOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_unreachable_reason() -> str | None:
    """Why the PostgreSQL bench cannot run here, or None when it can."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True):
            return None
    except Exception as exc:  # any failure means: skip that backend, and say why
        return f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}); set STRONGROOM_TEST_PG_URL"


@dataclass
class PgDatabase:
    """A throwaway database on the PostgreSQL server, created by `create` and dropped by `drop`."""

    name: str = field(default_factory=lambda: "strongroom_tmp_" + secrets.token_hex(4))

    @property
    def url(self) -> str:
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{self.name}"

    def create(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@dataclass
class Server:
    """A `strongroom serve` child with its own data directory, log file and port, started under `launcher`
    (e.g. `["taskset", "-c", "1"]`)."""

    data_dir: Path
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    launcher: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"server-{self.data_dir.name}.log"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRONGROOM_", "DATAROBOT_"))}
        env.update({"STRONGROOM_DATA_DIR": str(self.data_dir), "STRONGROOM_PORT": str(self.port)})
        if self.database_url:
            env["STRONGROOM_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait for `/healthz`; raise with the log if it exits or does not answer."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.launcher, sys.executable, "-m", "strongroom", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None


# ---- a real S3-compatible server that checks signatures (moto in server mode, authentication on) -------------


@dataclass(frozen=True)
class S3Peer:
    """Where an S3-compatible server is and a key that may use every bucket there (a missing bucket is
    NoSuchBucket); `temporary` is the same access as STS session credentials (with `session_token`), `denied`
    a valid key of a user without any permission (AccessDenied)."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    session_token: str | None = None
    temporary: S3Peer | None = None
    denied: S3Peer | None = None

    @property
    def url(self) -> str:
        """The bucket as an `s3://` URL."""
        return f"s3://{self.bucket}"

    def client(self) -> Any:
        """A boto3 S3 client signing with this peer's key (and session token, if any)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
        )


S3_POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


@contextmanager
def s3_server() -> Iterator[S3Peer]:
    """A moto S3 server on a free loopback port in a subprocess that checks every request's signature once set
    up: an IAM user with an access key allowed on all of S3 and a created empty bucket (and STS session
    credentials of a role with the same rights, and a user with none); stopped afterwards. A wrong secret key
    gets SignatureDoesNotMatch, an unknown key InvalidAccessKeyId, a wrong session token InvalidToken."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # No request is checked until the set-up below is done; then /moto-api/reset-auth switches checking on.
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "1000000", "MOTO_ALLOW_NONEXISTENT_REGION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the moto S3 server did not start") from None
                time.sleep(0.1)
        region, bucket = "us-east-1", f"bucket-{secrets.token_hex(4)}"
        setup = {"endpoint_url": endpoint, "region_name": region, "aws_access_key_id": "AKIASETUP0000000000",
                 "aws_secret_access_key": "setup"}  # fmt: skip
        iam, sts = boto3.client("iam", **setup), boto3.client("sts", **setup)
        iam.create_user(UserName="alice")
        iam.put_user_policy(UserName="alice", PolicyName="bucket", PolicyDocument=S3_POLICY)
        key = iam.create_access_key(UserName="alice")["AccessKey"]
        iam.create_user(UserName="mallory")
        denied_key = iam.create_access_key(UserName="mallory")["AccessKey"]
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                          "Action": "sts:AssumeRole"}]}  # fmt: skip
        role = iam.create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        iam.put_role_policy(RoleName="reader", PolicyName="bucket", PolicyDocument=S3_POLICY)
        temp = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="tests")["Credentials"]
        boto3.client("s3", **setup).create_bucket(Bucket=bucket)
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0", timeout=5).raise_for_status()
        base = {"endpoint_url": endpoint, "bucket": bucket, "region": region}
        yield S3Peer(
            **base,
            access_key_id=key["AccessKeyId"],
            secret_access_key=key["SecretAccessKey"],
            temporary=S3Peer(
                **base,
                access_key_id=temp["AccessKeyId"],
                secret_access_key=temp["SecretAccessKey"],
                session_token=temp["SessionToken"],
            ),
            denied=S3Peer(
                **base, access_key_id=denied_key["AccessKeyId"], secret_access_key=denied_key["SecretAccessKey"]
            ),
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
