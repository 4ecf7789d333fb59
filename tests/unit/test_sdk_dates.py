"""The SDK writes dates back as the server wrote them (RFC 3339, UTC, microseconds, Z), whichever object holds
them: the CLI's remote output (the SDK's `as_dict`) then matches its local output."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from strongroom.client.accounts import ApiKey, User
from strongroom.client.credential import Credential
from strongroom.client.dates import wire_date
from strongroom.client.oauth import OAuthProvider
from strongroom.representation import iso

WHEN = ["2026-12-06T10:00:00.000000Z", "2026-12-06T10:00:00.123456Z"]


@pytest.mark.parametrize("when", WHEN)
def test_as_dict_gives_back_the_servers_dates(when: str) -> None:
    user = User.from_server({"id": "u1", "username": "ann", "createdAt": when, "isAdmin": False, "disabled": False})
    key = ApiKey.from_server(
        {"id": "k1", "name": "ci", "prefix": "sr_", "scopes": ["read"], "createdAt": when, "expiresAt": when,
         "lastUsedAt": None, "revoked": False}
    )  # fmt: skip
    provider = OAuthProvider.from_server(
        {"id": "p1", "name": "idp", "tokenUrl": "https://idp/token", "clientId": "c", "createdAt": when,
         "tokenEndpointAuthMethod": "client_secret_basic"}
    )  # fmt: skip
    credential = Credential.from_server_data(
        {"credentialId": "c1", "name": "db", "credentialType": "basic", "creationDate": when, "user": "u"}
    )
    assert user.as_dict()["createdAt"] == when
    assert key.as_dict()["createdAt"] == when and key.as_dict()["expiresAt"] == when
    assert key.as_dict()["lastUsedAt"] is None
    assert provider.as_dict()["createdAt"] == when
    assert credential.as_dict()["creationDate"] == when


def test_the_sdk_and_the_server_write_a_moment_alike() -> None:
    moment = datetime(2026, 12, 6, 10, 0, 0)
    assert wire_date(moment) == iso(moment) == "2026-12-06T10:00:00.000000Z"  # naive is UTC, on both sides
    paris = datetime(2026, 12, 6, 11, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert wire_date(paris) == "2026-12-06T10:00:00.000000Z"
