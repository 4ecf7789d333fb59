"""The S3 peer the tests use checks signatures: the right key lists the bucket, and a wrong secret, an unknown
key, a wrong session token or a key without permission fail as they would against AWS."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import botocore.exceptions
import pytest

from tests.support import S3Peer, s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Peer]:
    with s3_server() as peer:
        yield peer


def _error_code(peer: S3Peer) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        peer.client().list_objects_v2(Bucket=peer.bucket, MaxKeys=1)
    return str(caught.value.response["Error"]["Code"])


def test_the_right_key_and_the_session_credentials_list_the_bucket(s3: S3Peer) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key="in/one.csv", Body=b"a,b\n")
    assert s3.temporary is not None and s3.temporary.session_token
    listed = s3.temporary.client().list_objects_v2(Bucket=s3.bucket, MaxKeys=1)
    assert [o["Key"] for o in listed["Contents"]] == ["in/one.csv"]


def test_a_wrong_secret_key_fails_the_signature_check(s3: S3Peer) -> None:
    assert _error_code(dataclasses.replace(s3, secret_access_key=s3.secret_access_key[:-1] + "x")) == (
        "SignatureDoesNotMatch"
    )


def test_an_unknown_key_a_wrong_token_a_user_without_rights_and_a_missing_bucket_fail(s3: S3Peer) -> None:
    assert s3.temporary is not None and s3.denied is not None
    assert _error_code(dataclasses.replace(s3, access_key_id="AKIA0000000000UNKNOWN")) == "InvalidAccessKeyId"
    assert _error_code(dataclasses.replace(s3.temporary, session_token="not-the-token")) == "InvalidToken"
    assert _error_code(s3.denied) == "AccessDenied"
    assert _error_code(dataclasses.replace(s3, bucket="no-such-bucket")) == "NoSuchBucket"


def test_an_s3_check_goes_to_the_address_the_guard_checked(s3: S3Peer) -> None:
    """services/s3.py connects to the address the SSRF guard resolved and checked, not to a second DNS answer:
    a name only the guard's resolver knows is reached, and the signature (over the name) still holds."""
    from strongroom.config import Settings
    from strongroom.services import s3 as checks
    from strongroom.services.connections import Connector

    asked: list[str] = []
    connector = Connector(Settings(), resolve=lambda host, port: asked.append(host) or ["127.0.0.1"])
    port = s3.endpoint_url.rsplit(":", 1)[1]
    where = checks.location({"url": f"{s3.url}/", "endpointUrl": f"http://only-the-guards-resolver-knows-me:{port}"})
    signing = checks.Keys(s3.access_key_id, s3.secret_access_key, None)
    assert checks.list_one(connector, where, signing).startswith("Connection successful")
    assert asked == ["only-the-guards-resolver-knows-me"]
    wrong = checks.Keys(s3.access_key_id, "x" + s3.secret_access_key, None)
    with pytest.raises(checks.ConnectionFailed, match="signature mismatch"):
        checks.list_one(connector, where, wrong)
