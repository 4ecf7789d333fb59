"""S3 checks: list one key of `s3://bucket/prefix` with an s3 credential's keys to prove they work, and say why
they do not (bad access key, signature mismatch, bad session token, bucket missing, access denied, wrong
region, endpoint unreachable, timed out) without any secret.

The endpoint's host goes through the SSRF guard (`Connector.address`) before any packet. A plain-http endpoint
is then reached at the address that was checked (path-style, the original host in the signed `Host` header),
so a second DNS answer cannot redirect it; an https endpoint keeps its name, which its certificate must match.
Other S3 work (batch intake and output) gets the same guarded client from `client` and its reasons from
`explain`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from ipaddress import ip_address
from typing import Any
from urllib.parse import SplitResult, urlsplit

from strongroom.errors import InvalidInput
from strongroom.services.connections import ConnectionFailed, Connector

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
_CODE = re.compile(r"[A-Za-z.]{1,64}")
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Location:
    """What to list: the bucket, the key prefix, the endpoint (None: AWS) and the signing region."""

    bucket: str
    prefix: str
    endpoint_url: str | None
    region: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def endpoint(self) -> str:
        """The endpoint to call: the given one, or AWS's regional S3 endpoint."""
        return self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"


@dataclass(frozen=True, repr=False)
class Keys:
    """AWS keys to sign with (never in a repr)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None

    def __repr__(self) -> str:
        return "Keys(***)"


def location(body: Mapping[str, Any]) -> Location:
    """The `url`, `endpointUrl` and `region` of a test body (422 naming the field that is wrong)."""
    url = body.get("url")
    parts = _split(url)
    if parts is None or parts.scheme != "s3" or not _BUCKET.fullmatch(parts.netloc) or parts.query or parts.fragment:
        msg = "must look like s3://bucket/prefix (a bucket name of 3 to 63 lower-case letters, digits, . or -)"
        raise InvalidInput(f"url: {msg}", {"url": msg})
    endpoint = body.get("endpointUrl")
    if endpoint is not None:
        given = _split(endpoint)
        try:
            port_ok = given is not None and (given.port is None or 0 < given.port < 65536)
        except ValueError:
            port_ok = False
        if given is None or given.scheme not in ("http", "https") or not given.hostname or not port_ok:
            msg = "must be an http(s) URL such as https://s3.example.com:9000"
            raise InvalidInput(f"endpointUrl: {msg}", {"endpointUrl": msg})
        if given.username or given.password or given.query or given.fragment or given.path not in ("", "/"):
            msg = "must be scheme, host and port only"
            raise InvalidInput(f"endpointUrl: {msg}", {"endpointUrl": msg})
        endpoint = f"{given.scheme}://{given.netloc}"
    region = body.get("region", DEFAULT_REGION)
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        msg = "must be an AWS region name such as us-east-1"
        raise InvalidInput(f"region: {msg}", {"region": msg})
    return Location(parts.netloc, parts.path.lstrip("/"), endpoint, region)


def _split(url: Any) -> SplitResult | None:
    """The parts of a URL string of at most 2048 characters, or None for anything else (not a string, not
    UTF-8 text, an unbalanced bracket)."""
    if not isinstance(url, str) or len(url) > 2048:
        return None
    try:
        url.encode()
        return urlsplit(url)
    except (ValueError, UnicodeError):
        return None


def keys(kind: str, fields: Mapping[str, Any], field: str) -> Keys:
    """The signing keys of an s3 credential's fields (422 naming `field` for another type or a configId)."""
    if kind != "s3":
        msg = f"an S3 check needs an s3 credential, not {kind}; test database credentials on a data store"
        raise InvalidInput(f"{field}: {msg}", {field: msg})
    if not fields.get("awsAccessKeyId") or not fields.get("awsSecretAccessKey"):
        msg = "this s3 credential names a configId, not keys; it cannot be checked here"
        raise InvalidInput(f"{field}: {msg}", {field: msg})
    token = fields.get("awsSessionToken")
    return Keys(str(fields["awsAccessKeyId"]), str(fields["awsSecretAccessKey"]), str(token) if token else None)


def list_one(connector: Connector, where: Location, signing: Keys) -> str:
    """List at most one key under the location (ListObjectsV2, MaxKeys=1); the success message, or
    ConnectionFailed saying why (a Forbidden when the guard refuses the endpoint's host)."""
    s3 = client(connector, where, signing)
    try:
        listed = s3.list_objects_v2(Bucket=where.bucket, Prefix=where.prefix, MaxKeys=1)
    except Exception as exc:  # every failure becomes a reason; the library's text may quote the request
        raise explain(exc, where) from None
    finally:
        s3.close()
    seen = int(listed.get("KeyCount", len(listed.get("Contents", []))))
    return f"Connection successful: {where.url} at {where.endpoint} can be listed ({seen} key{'s' * (seen != 1)} seen)"


def client(connector: Connector, where: Location, signing: Keys) -> Any:
    """A boto3 S3 client of the location's endpoint signing with `signing`, under the connector's timeouts and
    without retries; the endpoint's host passed the SSRF guard first (a Forbidden otherwise). Close it after
    use, and turn its errors into reasons with `explain`."""
    from botocore.config import Config

    endpoint = urlsplit(where.endpoint)
    host, https = str(endpoint.hostname), endpoint.scheme == "https"
    port = endpoint.port or (443 if https else 80)
    try:
        address = connector.address(host, port)
    except ConnectionFailed:
        raise ConnectionFailed(
            f"endpoint unreachable: the host of endpointUrl {where.endpoint} does not resolve",
            {"endpointUrl": "does not resolve"},
        ) from None
    config: dict[str, Any] = {
        "connect_timeout": connector.connect_timeout,
        "read_timeout": connector.statement_timeout,
        "retries": {"mode": "standard", "total_max_attempts": 1},
    }
    endpoint_url = where.endpoint
    if not https:
        shown = f"[{address}]" if ip_address(address).version == 6 else address
        endpoint_url = f"http://{shown}:{port}"
        config["s3"] = {"addressing_style": "path"}
    with _SESSION_LOCK:  # a session is not thread-safe; its clients are, and its loaded models are reused
        s3 = _session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=where.region,
            aws_access_key_id=signing.access_key_id,
            aws_secret_access_key=signing.secret_access_key,
            aws_session_token=signing.session_token,
            config=Config(**config),
        )
    if not https:
        named = endpoint.netloc.rsplit("@", 1)[-1]
        s3.meta.events.register("before-sign.s3", lambda request, **_: request.headers.__setitem__("Host", named))
    return s3


_SESSION_LOCK = threading.Lock()


def warm_up() -> None:
    """Load botocore's S3 model into the process's session now (a client made and closed, no request sent)."""
    from botocore import UNSIGNED
    from botocore.config import Config

    with _SESSION_LOCK:
        _session().client("s3", region_name="us-east-1", config=Config(signature_version=UNSIGNED)).close()


@cache
def _session() -> Any:
    """The process's boto3 session (credentials are given per client, never taken from it)."""
    import boto3

    return boto3.session.Session()


def explain(exc: BaseException, where: Location) -> ConnectionFailed:
    """Which of the known reasons an S3 failure is; only the error code (when well formed) is passed on."""
    from botocore import exceptions as boto

    place, url = where.endpoint, where.url
    if isinstance(exc, boto.ConnectTimeoutError | boto.ReadTimeoutError):
        return ConnectionFailed(f"timed out: endpointUrl {place} did not answer in time", {"endpointUrl": "timed out"})
    if isinstance(exc, boto.SSLError):
        return ConnectionFailed(
            f"endpoint unreachable: TLS with endpointUrl {place} failed", {"endpointUrl": "TLS failed"}
        )
    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectionClosedError | boto.HTTPClientError):
        return ConnectionFailed(
            f"endpoint unreachable: nothing accepts connections at endpointUrl {place}", {"endpointUrl": "unreachable"}
        )
    if not isinstance(exc, boto.ClientError):
        return ConnectionFailed(f"S3 check of url {url} at {place} failed ({type(exc).__name__})", {"url": "failed"})
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    code = code if _CODE.fullmatch(code) else "unknown"
    if code in ("InvalidAccessKeyId", "InvalidClientTokenId", "UnrecognizedClientException"):
        return ConnectionFailed(
            f"bad access key: {place} does not know this awsAccessKeyId", {"awsAccessKeyId": "unknown"}
        )
    if code == "SignatureDoesNotMatch":
        return ConnectionFailed(
            f"signature mismatch: the awsSecretAccessKey is not the access key's ({place} computed another signature)",
            {"awsSecretAccessKey": "does not match the access key id"},
        )
    if code in ("InvalidToken", "ExpiredToken", "TokenRefreshRequired"):
        return ConnectionFailed(
            f"bad session token: {place} rejected the awsSessionToken (wrong or expired)",
            {"awsSessionToken": "rejected"},
        )
    if code == "NoSuchBucket":
        return ConnectionFailed(
            f"bucket missing: {place} has no bucket {where.bucket!r} (url {url})", {"url": "no such bucket"}
        )
    if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem"):
        return ConnectionFailed(f"access denied: the key may not list url {url} at {place}", {"url": "access denied"})
    if code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException"):
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        actual = headers.get("x-amz-bucket-region", "")
        hint = f" ({actual})" if _REGION.fullmatch(actual) else ""
        return ConnectionFailed(
            f"wrong region: bucket {where.bucket!r} is not in region {where.region}{hint}; give its region",
            {"region": "wrong region"},
        )
    return ConnectionFailed(f"S3 refused to list url {url} at {place} ({code})", {"url": "refused"})


__all__ = ["DEFAULT_REGION", "Keys", "Location", "client", "explain", "keys", "list_one", "location"]
