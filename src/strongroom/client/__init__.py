"""The Strongroom SDK: `Client` for the connection, `Credential` with the datarobot.Credential surface."""

from strongroom.client.client import Client, get_client, set_client
from strongroom.client.credential import Credential
from strongroom.client.errors import (
    AppPlatformError,
    ClientError,
    ConfigurationError,
    ServerError,
    StrongroomSDKError,
)

__all__ = [
    "AppPlatformError",
    "Client",
    "ClientError",
    "ConfigurationError",
    "Credential",
    "ServerError",
    "StrongroomSDKError",
    "get_client",
    "set_client",
]
