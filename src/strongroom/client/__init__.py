"""The Strongroom SDK: `Client` for the connection, `Credential` with the datarobot.Credential surface.

Names are imported on first use, so the errors (and the CLI's help) load without the HTTP stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strongroom.client.accounts import ApiKey, Group, User
    from strongroom.client.audit import AuditRecord
    from strongroom.client.client import Client, get_client, set_client
    from strongroom.client.credential import Credential, SharingRole
    from strongroom.client.errors import (
        AppPlatformError,
        ClientError,
        ConfigurationError,
        ServerError,
        StrongroomSDKError,
    )
    from strongroom.client.jobs import BatchJob, Deployment, JobFailedError
    from strongroom.client.oauth import AccessToken, OAuthProvider

_HOMES = {
    "ApiKey": "accounts",
    "Group": "accounts",
    "User": "accounts",
    "Client": "client",
    "get_client": "client",
    "set_client": "client",
    "Credential": "credential",
    "SharingRole": "credential",
    "AuditRecord": "audit",
    "BatchJob": "jobs",
    "Deployment": "jobs",
    "JobFailedError": "jobs",
    "AccessToken": "oauth",
    "OAuthProvider": "oauth",
    "AppPlatformError": "errors",
    "ClientError": "errors",
    "ConfigurationError": "errors",
    "ServerError": "errors",
    "StrongroomSDKError": "errors",
}

__all__ = [
    "AccessToken",
    "ApiKey",
    "AppPlatformError",
    "AuditRecord",
    "BatchJob",
    "Client",
    "ClientError",
    "ConfigurationError",
    "Credential",
    "Deployment",
    "Group",
    "JobFailedError",
    "OAuthProvider",
    "ServerError",
    "SharingRole",
    "StrongroomSDKError",
    "User",
    "get_client",
    "set_client",
]


def __getattr__(name: str) -> Any:
    """Import an SDK name from its module the first time it is used."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"strongroom.client.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
