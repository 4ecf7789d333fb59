"""`/credentials/{id}/sharedRoles/` (DataRobot's sharing shape) and `/groups/` (administrators)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from strongroom import credential_types
from strongroom.api.errors import JSONResponse
from strongroom.api.http import required_string
from strongroom.api.openapi import answers, credential_id_parameter, json_body
from strongroom.api.paging import paged, window
from strongroom.api.pipeline import Call, Endpoint

_ROLE = {"type": "string", "enum": ["OWNER", "EDITOR", "CONSUMER"]}
_ENTRY = {
    "type": "object",
    "title": "Shared role",
    "required": ["id", "name", "role", "shareRecipientType", "canShare"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "role": _ROLE,
        "shareRecipientType": {"type": "string", "enum": ["user", "group"]},
        "canShare": {"type": "boolean"},
    },
}
_KEY = {  # a recipient's username, id or name (`sharing.parse_role_changes`)
    "type": "string",
    "minLength": 1,
    "maxLength": credential_types.NAME_MAX,
    "pattern": credential_types.NO_CONTROL_PATTERN,
}
UPDATE_ROLES = {  # credentials' and data stores' sharedRoles PATCH: one body, validated by one parser
    "type": "object",
    "title": "Role changes",
    "additionalProperties": False,
    "required": ["operation", "roles"],
    "properties": {
        "operation": {"type": "string", "enum": ["updateRoles"]},
        "roles": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "title": "Role change",
                "additionalProperties": False,
                "required": ["role"],
                "properties": {
                    "shareRecipientType": {"type": "string", "enum": ["user", "group"], "default": "user"},
                    "username": _KEY,
                    "id": _KEY,
                    "name": _KEY,
                    "role": {"type": "string", "enum": ["OWNER", "EDITOR", "CONSUMER", "NO_ROLE"]},
                    "canShare": {"type": "boolean"},
                },
            },
        },
    },
}
_GROUP = {
    "type": "object",
    "title": "Group",
    "required": ["id", "name", "members"],
    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "members": {"type": "array"}},
}


async def shared_roles(call: Call) -> Response:
    offset, limit = window(call)
    credential_id, sharing, who = call.path("credentialId"), call.services.sharing, call.principal
    entries = await call.read(lambda: sharing.access_list(who, credential_id))
    data = entries[offset : offset + limit]
    return paged(call, data, len(data), len(entries), offset, limit)


async def update_shared_roles(call: Call) -> Response:
    body = await call.body()
    credential_id, sharing, who = call.path("credentialId"), call.services.sharing, call.principal
    await call.write(lambda: sharing.update_roles(who, credential_id, body))
    return Response(status_code=204)


async def list_groups(call: Call) -> Response:
    sharing, who = call.services.sharing, call.principal
    groups = await call.read(lambda: sharing.list_groups(who))
    return JSONResponse({"count": len(groups), "data": groups})


async def create_group(call: Call) -> Response:
    body = await call.body()
    sharing, who = call.services.sharing, call.principal
    group = await call.write(lambda: sharing.create_group(who, required_string(body, "name")))
    return JSONResponse({"id": group.id, "name": group.name, "members": []}, status_code=201)


async def add_member(call: Call) -> Response:
    body = await call.body()
    sharing, who, group = call.services.sharing, call.principal, call.path("groupId")
    await call.write(lambda: sharing.add_member(who, group, required_string(body, "username")))
    return Response(status_code=204)


async def remove_member(call: Call) -> Response:
    sharing, who, group, username = call.services.sharing, call.principal, call.path("groupId"), call.path("username")
    await call.write(lambda: sharing.remove_member(who, group, username))
    return Response(status_code=204)


async def delete_group(call: Call) -> Response:
    sharing, who, group = call.services.sharing, call.principal, call.path("groupId")
    await call.write(lambda: sharing.delete_group(who, group))
    return Response(status_code=204)


def _path(name: str, doc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": doc, "schema": {"type": "string"}}


_ROLES_PATH = "/credentials/{credentialId}/sharedRoles/"
_GROUP_ID = _path("groupId", "The group's id or name")
ENDPOINTS = [
    Endpoint(
        "GET",
        _ROLES_PATH,
        "read",
        shared_roles,
        doc={
            "summary": "Who holds which role on the credential (its owner first)",
            "parameters": [credential_id_parameter()],
            "responses": {
                "200": {
                    "description": "A page of roles",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "title": "Shared roles",
                                "properties": {"data": {"type": "array", "items": _ENTRY}},
                            }
                        }
                    },
                },
                **answers(401, 403, 404, 422, 429),
            },
        },
    ),
    Endpoint(
        "PATCH",
        _ROLES_PATH,
        "write",
        update_shared_roles,
        action="credential.share",
        doc={
            "summary": "Give users or groups a role on the credential, or take it away (NO_ROLE)",
            "parameters": [credential_id_parameter()],
            "requestBody": json_body(UPDATE_ROLES),
            "responses": {"204": {"description": "Applied"}, **answers(400, 401, 403, 404, 409, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        "/groups/",
        "admin",
        list_groups,
        doc={
            "summary": "Every group and its members (administrators)",
            "responses": {
                "200": {
                    "description": "Groups",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "title": "Groups",
                                "properties": {"data": {"type": "array", "items": _GROUP}},
                            }
                        }
                    },
                },
                **answers(401, 403, 429),
            },
        },
    ),
    Endpoint(
        "POST",
        "/groups/",
        "admin",
        create_group,
        action="group.create",
        doc={
            "summary": "Create a group (administrators)",
            "requestBody": json_body(
                {
                    "type": "object",
                    "title": "New group",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                }
            ),
            "responses": {
                "201": {"description": "Created", "content": {"application/json": {"schema": _GROUP}}},
                **answers(400, 401, 403, 409, 422, 429),
            },
        },
    ),
    Endpoint(
        "POST",
        "/groups/{groupId}/members/",
        "admin",
        add_member,
        action="group.add_member",
        doc={
            "summary": "Add a user to a group (administrators)",
            "parameters": [_GROUP_ID],
            "requestBody": json_body(
                {
                    "type": "object",
                    "title": "New member",
                    "required": ["username"],
                    "properties": {"username": {"type": "string"}},
                }
            ),
            "responses": {"204": {"description": "Added"}, **answers(400, 401, 403, 404, 422, 429)},
        },
    ),
    Endpoint(
        "DELETE",
        "/groups/{groupId}/members/{username}/",
        "admin",
        remove_member,
        action="group.remove_member",
        doc={
            "summary": "Remove a user from a group: their access through it ends at once (administrators)",
            "parameters": [_GROUP_ID, _path("username", "The member's username")],
            "responses": {"204": {"description": "Removed"}, **answers(401, 403, 404, 429)},
        },
    ),
    Endpoint(
        "DELETE",
        "/groups/{groupId}/",
        "admin",
        delete_group,
        action="group.delete",
        doc={
            "summary": "Delete a group and every role given to it (administrators)",
            "parameters": [_GROUP_ID],
            "responses": {"204": {"description": "Deleted"}, **answers(401, 403, 404, 429)},
        },
    ),
]
