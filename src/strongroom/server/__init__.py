"""The HTTP API: a thin ASGI layer that parses, calls the service and serialises."""

from strongroom.server.app import create_app

__all__ = ["create_app"]
