"""`/version/`: the API version DataRobot clients check (it also verifies the token)."""

from __future__ import annotations

from starlette.responses import Response

from strongroom import __version__
from strongroom.api.errors import JSONResponse
from strongroom.api.openapi import answers
from strongroom.api.pipeline import Call, Endpoint

API_VERSION = {"major": 2, "minor": 49, "versionString": "2.49.0", "releasedVersion": f"strongroom-{__version__}"}


async def version(call: Call) -> Response:
    return JSONResponse(API_VERSION)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/version/",
        None,
        version,
        doc={
            "summary": "API version (also verifies the token)",
            "responses": {
                "200": {
                    "description": "The API version",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Version"}}},
                },
                **answers(401, 429),
            },
        },
    ),
]
