"""Typed SDK errors, shaped like datarobot's so `except dr.ClientError` code ports unchanged.

Messages come from the server's `message` (which never carries a secret) or from the SDK itself; no request
body, header or token is ever put into one.
"""

from __future__ import annotations

from typing import Any


class StrongroomSDKError(Exception):
    """Base of every error the SDK raises, so callers can catch one type."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


AppPlatformError = StrongroomSDKError  # the name datarobot uses for the same base class


class ConfigurationError(StrongroomSDKError):
    """No endpoint or token could be found, or the configuration file is unreadable.

    `missing` names the settings no source had ("endpoint", "token"), so a caller such as the CLI can say how
    its own users give them; it is empty when the problem is something else.
    """

    def __init__(self, message: str, missing: tuple[str, ...] = (), config_file: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing
        self.config_file = config_file


class ClientError(StrongroomSDKError):
    """The server answered 4xx: the request must change before it can succeed."""

    def __init__(self, message: str, status_code: int, json: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.json: dict[str, Any] = json if json is not None else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code})"


class ServerError(StrongroomSDKError):
    """The server answered 5xx: not the caller's fault; retrying later may help."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code})"
