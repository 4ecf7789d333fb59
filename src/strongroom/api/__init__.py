"""HTTP: the request pipeline, routes per resource, errors, OpenAPI; `create_app` builds the ASGI app."""

from strongroom.api.app import create_app

__all__ = ["create_app"]
