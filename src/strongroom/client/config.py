"""Where the SDK finds its endpoint and token: keyword arguments, then the environment, then a YAML file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from strongroom.client.errors import ConfigurationError

ENDPOINT_ENV = "STRONGROOM_ENDPOINT"
TOKEN_ENV = "STRONGROOM_API_TOKEN"  # noqa: S105 - the variable's name, not a token
CONFIG_FILE_ENV = "STRONGROOM_CONFIG_FILE"
DEFAULT_CONFIG_FILE = Path("~/.config/strongroom/config.yaml")


@dataclass(frozen=True)
class ClientConfig:
    """A resolved endpoint and token; the token is excluded from repr so it cannot leak into logs."""

    endpoint: str
    token: str

    def __repr__(self) -> str:
        return f"ClientConfig(endpoint={self.endpoint!r})"


def _read_yaml(path: Path) -> dict[str, Any]:
    """Load the config file; its content is never quoted in errors because it holds the token."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigurationError(f"config file {path} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {path} must hold a mapping with keys 'endpoint' and 'token'")
    for key in ("endpoint", "token"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise ConfigurationError(f"config file {path}: {key!r} must be a string")
    return data


def _config_file(config_path: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """The file to read and whether the user named it (a named file must exist; the default may not)."""
    if config_path is not None:
        return Path(config_path).expanduser(), True
    if os.environ.get(CONFIG_FILE_ENV):
        return Path(os.environ[CONFIG_FILE_ENV]).expanduser(), True
    return DEFAULT_CONFIG_FILE.expanduser(), False


def redact_endpoint(endpoint: str) -> str:
    """The endpoint as messages and reprs show it: no userinfo password, no query values, no fragment."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:
        return "<the configured endpoint, not a valid URL>"
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}{':***' if colon else ''}{at}{host}"
    pieces = [piece for piece in parts.query.split("&") if piece]
    query = "&".join(f"{piece.partition('=')[0]}=***" if "=" in piece else "***" for piece in pieces)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def normalize_endpoint(endpoint: str) -> str:
    """Strip the trailing slash and insist on an absolute http(s) URL, so relative joins are predictable."""
    endpoint = endpoint.strip().rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"endpoint {redact_endpoint(endpoint)!r} must be an http(s) URL ending in /api/v2, e.g. http://127.0.0.1:8484/api/v2"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"endpoint {redact_endpoint(endpoint)!r} must not have a query string or fragment")
    return endpoint


def resolve(
    endpoint: str | None = None,
    token: str | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> ClientConfig:
    """Resolve each setting from the first source that has it, failing with a message that lists every source."""
    endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or None
    token = token or os.environ.get(TOKEN_ENV) or None
    path, named = _config_file(config_path)
    if named or ((endpoint is None or token is None) and path.is_file()):
        data = _read_yaml(path)
        endpoint = endpoint or data.get("endpoint") or None
        token = token or data.get("token") or None
    missing = [what for what, value in (("endpoint", endpoint), ("token", token)) if not value]
    if missing or endpoint is None or token is None:
        raise ConfigurationError(
            f"no {' or '.join(missing)} configured: pass Client(endpoint=..., token=...), set {ENDPOINT_ENV} and "
            f"{TOKEN_ENV}, or write them as 'endpoint' and 'token' in {path}",
            missing=tuple(missing),
            config_file=str(path),
        )
    token = token.strip()
    if not token or any(ch in token for ch in "\r\n\x00"):
        raise ConfigurationError("the API token is empty or contains line breaks")
    if not all(" " <= ch < "\x7f" for ch in token):
        raise ConfigurationError(
            "the API token contains a character that cannot be sent in an HTTP header (only printable ASCII is "
            "allowed); it is not shown"
        )
    return ClientConfig(endpoint=normalize_endpoint(endpoint), token=token)
