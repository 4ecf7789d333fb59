"""What an S3 check accepts (services/s3.py): the url, endpointUrl and region of its body, each refused with a
422 naming the field; and the keys of an s3 credential, never in a repr."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.errors import InvalidInput
from strongroom.services import s3


def test_a_url_an_endpoint_and_a_region_are_parsed() -> None:
    where = s3.location(
        {"url": "s3://my.bucket-1/in/2026/", "endpointUrl": "http://minio:9000/", "region": "eu-west-2"}
    )
    assert where == s3.Location("my.bucket-1", "in/2026/", "http://minio:9000", "eu-west-2")
    assert where.url == "s3://my.bucket-1/in/2026/" and where.endpoint == "http://minio:9000"
    aws = s3.location({"url": "s3://bucket"})
    assert aws.endpoint == "https://s3.us-east-1.amazonaws.com" and aws.prefix == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "url"),
        ({"url": 3}, "url"),
        ({"url": "https://bucket/x"}, "url"),
        ({"url": "s3://B/x"}, "url"),
        ({"url": "s3://bucket[/x"}, "url"),
        ({"url": "s3://bucket/\udc00"}, "url"),
        ({"url": "s3://bucket/x?y=1"}, "url"),
        ({"url": "s3://bucket", "endpointUrl": "ftp://h"}, "endpointUrl"),
        ({"url": "s3://bucket", "endpointUrl": "http://[h"}, "endpointUrl"),
        ({"url": "s3://bucket", "endpointUrl": "http://h:70000"}, "endpointUrl"),
        ({"url": "s3://bucket", "endpointUrl": "http://user:pw@h"}, "endpointUrl"),
        ({"url": "s3://bucket", "endpointUrl": "http://h/path"}, "endpointUrl"),
        ({"url": "s3://bucket", "region": "moon"}, "region"),
    ],
)
def test_bad_bodies_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        s3.location(body)
    assert field in refused.value.errors and field in refused.value.message
    assert "pw" not in refused.value.message


def test_keys_come_from_s3_credentials_only_and_hide_in_reprs() -> None:
    signing = s3.keys("s3", {"awsAccessKeyId": "AKIA1", "awsSecretAccessKey": "sekrit", "awsSessionToken": "tok"}, "c")
    assert signing.session_token == "tok" and "sekrit" not in repr(signing) and "tok" not in repr(signing)
    for kind, fields in (("basic", {"user": "u", "password": "p"}), ("s3", {"configId": "x"})):
        with pytest.raises(InvalidInput) as refused:
            s3.keys(kind, fields, "credentialId")
        assert "credentialId" in refused.value.errors
