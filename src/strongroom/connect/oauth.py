"""`strongroom.connect.oauth(credential_id)`: an `httpx.Client` whose requests carry the credential's access
token as `Authorization: Bearer …`, fetched from the server and fetched again shortly before it expires (the
server refreshes it at the provider, once, however many clients ask)."""

from __future__ import annotations

import threading
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from strongroom.client.oauth import AccessToken

if TYPE_CHECKING:
    from strongroom.client.client import Client

DEFAULT_MARGIN = 30.0  # seconds before `expiresAt` at which the token is fetched again


class StrongroomBearer(httpx.Auth):
    """Adds the credential's bearer token to each request, fetching it again when it expires within `margin`
    seconds (or when its expiry is unknown); safe to share between threads."""

    def __init__(self, credential_id: str, *, client: Client | None = None, margin: float = DEFAULT_MARGIN) -> None:
        self.credential_id = credential_id
        self.client = client
        self.margin = timedelta(seconds=margin)
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StrongroomBearer({self.credential_id!r})"

    def token(self) -> AccessToken:
        """The access token to send: the one held while it stays valid beyond the margin, else a fresh one."""
        with self._lock:
            held = self._token
            if held is None or held.expires_at is None or held.expires_at - datetime.now(UTC) <= self.margin:
                held = self._token = AccessToken.fetch(self.credential_id, self.client)
            return held

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the request with `Authorization: <tokenType> <accessToken>`."""
        held = self.token()
        request.headers["Authorization"] = f"{held.token_type} {held.access_token}"
        yield request


def oauth(
    credential_id: str, *, client: Client | None = None, margin: float = DEFAULT_MARGIN, **kwargs: Any
) -> httpx.Client:
    """An `httpx.Client` (keyword arguments passed on, e.g. `base_url`, `timeout`) that authenticates each request
    with the oauth credential's access token, through the SDK's configured client (or `client`)."""
    return httpx.Client(auth=StrongroomBearer(credential_id, client=client, margin=margin), **kwargs)
