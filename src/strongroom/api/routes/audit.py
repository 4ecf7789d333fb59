"""`/auditLog/`: the audit trail, filtered and paginated like the other lists (admins see all records; anyone
else the records about the credentials they own)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from strongroom.api.openapi import answers, filter_text
from strongroom.api.paging import paged, window
from strongroom.api.pipeline import Call, Endpoint
from strongroom.errors import InvalidInput
from strongroom.services.audit import parse_moment

_FILTERS = ("credentialId", "actor", "action")
_FILTER_MAX = 255
_MOMENT = "An ISO 8601 date or time (UTC unless it says otherwise), or a span before now: 90s, 30m, 12h, 1d, 2w"
_RECORD = {
    "type": "object",
    "title": "Audit record",
    "required": ["time", "action", "outcome", "status", "actor", "address", "requestId", "target", "detail"],
    "properties": {
        "time": {"type": "string", "format": "date-time"},
        "action": {"type": "string"},
        "outcome": {"type": "string", "enum": ["success", "denied", "failed"]},
        "status": {"type": "integer"},
        "actor": {"type": ["object", "null"]},
        "address": {"type": ["string", "null"]},
        "requestId": {"type": ["string", "null"]},
        "target": {"type": ["object", "null"]},
        "detail": {"type": "object"},
    },
}
_MOMENT_SCHEMA = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^[0-9]{1,4}[smhdw]$", "description": "a span before now, such as 1d"},
        {"type": "string", "maxLength": 0, "description": "empty: no bound"},
    ]
}


def _query(name: str, doc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": doc, "schema": schema}


async def audit_log(call: Call) -> Response:
    offset, limit = window(call)
    query = call.request.query_params
    filters: dict[str, Any] = {}
    for name, key in zip(_FILTERS, ("credential_id", "actor", "action"), strict=True):
        value = query.get(name)
        if value:
            if len(value) > _FILTER_MAX:
                raise InvalidInput(f"{name}: at most {_FILTER_MAX} characters", {name: "too long"})
            if "\x00" in value:  # no record holds one (PostgreSQL text cannot)
                raise InvalidInput(f"{name}: must not contain NUL", {name: "must not contain NUL"})
            filters[key] = value
    for name in ("since", "until"):
        value = query.get(name)
        if value:
            filters[name] = parse_moment(value, name)
    audit, who = call.services.audit, call.principal
    records, total = await call.read(lambda: audit.list(who, offset=offset, limit=limit, **filters))
    return paged(call, records, len(records), total, offset, limit)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/auditLog/",
        "read",
        audit_log,
        doc={
            "summary": "Audit records, oldest first (administrators: all; others: about the credentials they own)",
            "parameters": [
                _query("credentialId", "Only records about this credential", filter_text(_FILTER_MAX)),
                _query("actor", "Only records of this username", filter_text(_FILTER_MAX)),
                _query("action", "Only this action, e.g. credential.update or auth.failed", filter_text(_FILTER_MAX)),
                _query("since", f"Records at or after this moment. {_MOMENT}", _MOMENT_SCHEMA),
                _query("until", f"Records before this moment. {_MOMENT}", _MOMENT_SCHEMA),
                _query(
                    "offset", "Records to skip", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 0}
                ),
                _query("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
            ],
            "responses": {
                "200": {
                    "description": "A page of audit records",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "title": "Audit records",
                                "properties": {"data": {"type": "array", "items": _RECORD}},
                            }
                        }
                    },
                },
                **answers(401, 403, 422, 429),
            },
        },
    ),
]
