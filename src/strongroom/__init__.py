"""Strongroom: a credential store. `import strongroom as dr` gives the SDK with DataRobot's Credential surface.

The SDK's names are imported on first use, so `import strongroom` (and the CLI) start without the HTTP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from strongroom.client import (
        AccessToken,
        ApiKey,
        AppPlatformError,
        AuditRecord,
        BatchJob,
        Client,
        ClientError,
        ConfigurationError,
        Credential,
        Deployment,
        Group,
        JobFailedError,
        OAuthProvider,
        ServerError,
        SharingRole,
        StrongroomSDKError,
        User,
        get_client,
        set_client,
    )

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
    "__version__",
    "get_client",
    "set_client",
]


def __getattr__(name: str) -> Any:
    """Import an SDK name from `strongroom.client` the first time it is used."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import strongroom.client

    value = getattr(strongroom.client, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
