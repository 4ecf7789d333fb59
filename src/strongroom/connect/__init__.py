"""Connect helpers: clients for outside systems made from credentials stored in Strongroom, fetched through the
API under the caller's token (`strongroom.connect.oauth(credential_id)`). They import the SDK, never the server."""

from __future__ import annotations

from strongroom.connect.oauth import oauth

__all__ = ["oauth"]
