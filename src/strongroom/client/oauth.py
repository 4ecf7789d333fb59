"""`OAuthProvider` (administrators: `/oauthProviders/`) and `AccessToken` (`POST credentials/{id}/accessToken/`):
OAuth access tokens that the server refreshes at the credential's provider when they are about to expire."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from strongroom.client.client import get_client
from strongroom.client.dates import parse_date, wire_date
from strongroom.client.errors import StrongroomSDKError

if TYPE_CHECKING:
    from strongroom.client.client import Client


@dataclass(frozen=True)
class OAuthProvider:
    """An OAuth authorization server that refreshes `oauth` credentials: its token endpoint and the client the
    server refreshes as (the client secret is sent once, when created, and never returned)."""

    provider_id: str
    name: str
    token_url: str
    client_id: str
    token_endpoint_auth_method: str
    created_at: datetime | None

    @classmethod
    def from_server(cls, data: dict[str, Any]) -> OAuthProvider:
        """Build from the server's JSON."""
        return cls(
            data["id"],
            data["name"],
            data["tokenUrl"],
            data["clientId"],
            data["tokenEndpointAuthMethod"],
            parse_date(data.get("createdAt")),
        )

    def as_dict(self) -> dict[str, Any]:
        """The provider in its wire (camelCase) shape."""
        return {
            "id": self.provider_id,
            "name": self.name,
            "tokenUrl": self.token_url,
            "clientId": self.client_id,
            "tokenEndpointAuthMethod": self.token_endpoint_auth_method,
            "createdAt": wire_date(self.created_at),
        }

    @classmethod
    def list(cls) -> list[OAuthProvider]:
        """Every provider, across all pages (administrators)."""
        return [cls.from_server(item) for item in get_client().paginate("oauthProviders/")]

    @classmethod
    def create(
        cls,
        name: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        token_endpoint_auth_method: str = "client_secret_basic",  # noqa: S107 (a method name, not a secret)
    ) -> OAuthProvider:
        """Add a provider (administrators); `token_endpoint_auth_method` is client_secret_basic or _post."""
        body = {
            "name": name,
            "tokenUrl": token_url,
            "clientId": client_id,
            "clientSecret": client_secret,
            "tokenEndpointAuthMethod": token_endpoint_auth_method,
        }
        return cls.from_server(get_client().post("oauthProviders/", json=body).json())

    @classmethod
    def delete(cls, provider_id: str) -> None:
        """Delete a provider (administrators; refused while oauth credentials name it)."""
        get_client().delete(f"oauthProviders/{quote(str(provider_id), safe='')}/")


@dataclass(frozen=True)
class AccessToken:
    """A valid access token of an `oauth` credential and when it expires (None: unknown). Its repr hides the
    token, so it is safe to print or log."""

    access_token: str = field(repr=False)
    expires_at: datetime | None
    token_type: str

    @classmethod
    def fetch(cls, credential_id: str, client: Client | None = None) -> AccessToken:
        """Ask the server for the credential's access token (refreshed there first when it expires soon)."""
        http = client or get_client()
        data = http.post(f"credentials/{quote(str(credential_id), safe='')}/accessToken/").json()
        token = data.get("accessToken") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise StrongroomSDKError("the server answered accessToken/ without an access token")
        return cls(token, parse_date(data.get("expiresAt")), str(data.get("tokenType") or "Bearer"))
