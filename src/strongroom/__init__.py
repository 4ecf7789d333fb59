"""Strongroom: a credential store. `import strongroom as dr` gives the SDK with DataRobot's Credential surface."""

__version__ = "0.1.0"

from strongroom.client import (
    AppPlatformError,
    Client,
    ClientError,
    ConfigurationError,
    Credential,
    ServerError,
    StrongroomSDKError,
    get_client,
    set_client,
)

__all__ = [
    "AppPlatformError",
    "Client",
    "ClientError",
    "ConfigurationError",
    "Credential",
    "ServerError",
    "StrongroomSDKError",
    "__version__",
    "get_client",
    "set_client",
]
