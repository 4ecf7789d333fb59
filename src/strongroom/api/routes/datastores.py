"""`/externalDataDrivers/`, `/externalDataStores/` (CRUD, sharedRoles, test and browsing), credential
associations, S3 checks (`/credentials/{id}/test/`, `/credentials/test/`) and `/credentials/{id}/reveal/`:
using a credential by id (DataRobot's shapes)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from strongroom import credential_types
from strongroom.api.errors import JSONResponse
from strongroom.api.openapi import answers, credential_id_parameter, filter_text, json_body
from strongroom.api.paging import paged, unpaged, window
from strongroom.api.pipeline import Call, Endpoint
from strongroom.api.routes.sharing import UPDATE_ROLES


async def list_drivers(call: Call) -> Response:
    unpaged(call)
    return JSONResponse({"data": call.services.datastores.drivers(call.principal)})


async def list_stores(call: Call) -> Response:
    unpaged(call)
    query, stores, who = call.request.query_params, call.services.datastores, call.principal
    found = await call.read(lambda: stores.list(who, query.get("type"), query.get("name")))
    return JSONResponse({"data": found})


async def create_store(call: Call) -> Response:
    body = await call.body()
    stores, who = call.services.datastores, call.principal
    return JSONResponse(await call.write(lambda: stores.create(who, body)), status_code=201)


async def get_store(call: Call) -> Response:
    store_id, stores, who = call.path("dataStoreId"), call.services.datastores, call.principal
    return JSONResponse(await call.read(lambda: stores.get(who, store_id)))


async def update_store(call: Call) -> Response:
    body = await call.body()
    store_id, stores, who = call.path("dataStoreId"), call.services.datastores, call.principal
    return JSONResponse(await call.write(lambda: stores.update(who, store_id, body)))


async def delete_store(call: Call) -> Response:
    store_id, stores, who = call.path("dataStoreId"), call.services.datastores, call.principal
    await call.write(lambda: stores.delete(who, store_id))
    return Response(status_code=204)


async def store_roles(call: Call) -> Response:
    offset, limit = window(call)
    store_id, stores, who = call.path("dataStoreId"), call.services.datastores, call.principal
    entries = await call.read(lambda: stores.access_list(who, store_id))
    data = entries[offset : offset + limit]
    return paged(call, data, len(data), len(entries), offset, limit)


async def update_store_roles(call: Call) -> Response:
    body = await call.body()
    store_id, stores, who = call.path("dataStoreId"), call.services.datastores, call.principal
    await call.write(lambda: stores.update_roles(who, store_id, body))
    return Response(status_code=204)


def _use(operation: str) -> Any:
    """A handler that runs a connecting operation (`test`, `schemas`, ...) in the worker pool."""

    async def handler(call: Call) -> Response:
        body = await call.body(empty_message="request body is empty") if _has_body(call) else {}
        store_id, stores, who = call.path("dataStoreId"), call.services.datastores, call.principal
        method = getattr(stores, operation)
        return JSONResponse(await call.write(lambda: method(who, store_id, body)))

    handler.__name__ = f"store_{operation}"
    return handler


def _has_body(call: Call) -> bool:
    headers = call.request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


async def associate(call: Call) -> Response:
    body = await call.body() if _has_body(call) else {}
    credential_id, key = call.path("credentialId"), call.path("association")
    stores, who = call.services.datastores, call.principal
    created = await call.write(lambda: stores.associate(who, credential_id, key, body))
    return JSONResponse(
        {"credentialId": credential_id, "isDefault": bool(body.get("isDefault"))}, 201 if created else 200
    )


async def store_associations(call: Call) -> Response:
    key, stores, who = call.path("association"), call.services.datastores, call.principal
    data = await call.read(lambda: stores.associations_of_store(who, key))
    return paged(call, data, len(data), len(data), 0, max(len(data), 1))


async def credential_associations(call: Call) -> Response:
    credential_id, stores, who = call.path("credentialId"), call.services.datastores, call.principal
    data = await call.read(lambda: stores.associations_of_credential(who, credential_id))
    return paged(call, data, len(data), len(data), 0, max(len(data), 1))


async def test_credential(call: Call) -> Response:
    body = await call.body()
    credential_id, stores, who = call.path("credentialId"), call.services.datastores, call.principal
    return JSONResponse(await call.write(lambda: stores.test_credential(who, credential_id, body)))


async def test_credential_data(call: Call) -> Response:
    body = await call.body()
    stores, who = call.services.datastores, call.principal
    return JSONResponse(await call.write(lambda: stores.test_credential_data(who, body)))


async def reveal(call: Call) -> Response:
    credential_id, credentials, who = call.path("credentialId"), call.services.credentials, call.principal
    found = await call.write(lambda: credentials.reveal(who, credential_id))
    return JSONResponse(found)  # every answer carries Cache-Control: no-store (api/boundary.py)


def _path(name: str, doc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": doc, "schema": {"type": "string"}}


def _ok(title: str) -> dict[str, Any]:
    return {
        "description": title,
        "content": {"application/json": {"schema": {"type": "object", "title": title}}},
    }


_STORE_ID = _path("dataStoreId", "The data store's id")
_ASSOCIATION = _path("association", "dataconnection:<data store id>")
_PARAMS = {
    "type": "object",
    "title": "Data store params",
    "description": "Where to connect, never a secret: a password in jdbcUrl or fields is refused (use a credential)",
    "additionalProperties": False,
    "properties": {
        "driverId": {"type": "string"},
        "connectorId": {"type": "string", "description": "Sent by some clients; not used"},
        "jdbcUrl": {"type": "string", "maxLength": 2048},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "title": "Field",
                "required": ["id", "name", "value"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "value": {"type": "string"}},
            },
        },
    },
}
_STORE_BODY = {
    "type": "object",
    "title": "New data store",
    "required": ["type", "canonicalName", "params"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "enum": ["jdbc"]},
        "canonicalName": {
            "type": "string",
            "minLength": 1,
            "maxLength": credential_types.NAME_MAX,
            "pattern": credential_types.NAME_PATTERN,
        },
        "params": _PARAMS,
    },
}
_LOGIN = {
    "type": "object",
    "title": "Credentials to connect with (none: your default credential for the store)",
    "properties": {
        "credentialId": {"type": "string"},
        "user": {"type": "string"},
        "password": {"type": "string", "format": "password"},
        "credentialData": {"type": "object"},
        "schema": {"type": "string"},
        "table": {"type": "string"},
        "sql": {"type": "string"},
        "maxRows": {"type": "integer", "minimum": 1, "maximum": 10000},
    },
}
_S3_CHECK = {
    "url": {"type": "string", "pattern": "^s3://", "description": "s3://bucket/prefix"},
    "endpointUrl": {
        "type": "string",
        "pattern": "^https?://",
        "maxLength": 2048,
        "description": "an S3-compatible endpoint (default: AWS)",
    },
    "region": {
        "type": "string",
        "pattern": "^[a-z]{2}(-[a-z]+)+-[0-9]$",
        "description": "the signing region (default us-east-1)",
    },
}
_S3_BODY = {"type": "object", "title": "S3 check", "required": ["url"], "properties": _S3_CHECK}
_S3_DATA_BODY = {
    "type": "object",
    "title": "S3 check with credential data",
    "required": ["url", "credentialData"],
    "properties": {**_S3_CHECK, "credentialData": {"type": "object"}},
}
_ONE = "/externalDataStores/{dataStoreId}/"
_USES = {
    "test": ("test", "Connect to the store and run SELECT 1: {message}"),
    "schemas": ("schemas", "The store's schemas: {catalog, catalogs, schemas}"),
    "tables": ("tables", "The tables and views of a schema: {catalog, tables}"),
    "preview": ("preview", "The first maxRows rows of a table: {columns, records}"),
    "previewQuery": ("preview_query", "The first maxRows rows of a read-only query: {columns, records}"),
}
ENDPOINTS = [
    Endpoint(
        "GET",
        "/externalDataDrivers/",
        "read",
        list_drivers,
        doc={
            "summary": "The drivers data stores can use",
            "responses": {"200": _ok("Drivers"), **answers(401, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        "/externalDataStores/",
        "read",
        list_stores,
        doc={
            "summary": "Data stores the caller has a role on",
            "parameters": [
                {"name": "type", "in": "query", "schema": {"type": "string"}},
                {"name": "name", "in": "query", "schema": filter_text()},
            ],
            "responses": {"200": _ok("Data stores"), **answers(401, 403, 422, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/externalDataStores/",
        "write",
        create_store,
        action="dataStore.create",
        doc={
            "summary": "Create a data store (it holds no secret; the caller is its OWNER)",
            "requestBody": json_body(_STORE_BODY),
            "responses": {"201": _ok("Data store"), **answers(400, 401, 403, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        _ONE,
        "read",
        get_store,
        doc={
            "summary": "One data store",
            "parameters": [_STORE_ID],
            "responses": {"200": _ok("Data store"), **answers(401, 403, 404, 429)},
        },
    ),
    Endpoint(
        "PATCH",
        _ONE,
        "write",
        update_store,
        action="dataStore.update",
        doc={
            "summary": "Change a data store's canonicalName or params (EDITOR or OWNER)",
            "parameters": [_STORE_ID],
            "requestBody": json_body(
                {
                    "type": "object",
                    "title": "Data store change",
                    "additionalProperties": False,
                    "properties": {k: v for k, v in _STORE_BODY["properties"].items() if k != "type"},
                }
            ),
            "responses": {"200": _ok("Data store"), **answers(400, 401, 403, 404, 412, 422, 429)},
        },
    ),
    Endpoint(
        "DELETE",
        _ONE,
        "write",
        delete_store,
        action="dataStore.delete",
        doc={
            "summary": "Delete a data store (OWNER)",
            "parameters": [_STORE_ID],
            "responses": {"204": {"description": "Deleted"}, **answers(400, 401, 403, 404, 412, 429)},
        },
    ),
    Endpoint(
        "GET",
        _ONE + "sharedRoles/",
        "read",
        store_roles,
        doc={
            "summary": "Who holds which role on the data store (its owner first)",
            "parameters": [_STORE_ID],
            "responses": {"200": _ok("Shared roles"), **answers(401, 403, 404, 422, 429)},
        },
    ),
    Endpoint(
        "PATCH",
        _ONE + "sharedRoles/",
        "write",
        update_store_roles,
        action="dataStore.share",
        doc={
            "summary": "Give users or groups a role on the data store, or take it away (OWNER)",
            "parameters": [_STORE_ID],
            "requestBody": json_body(UPDATE_ROLES),
            "responses": {"204": {"description": "Applied"}, **answers(400, 401, 403, 404, 409, 422, 429)},
        },
    ),
    *(
        Endpoint(
            "POST",
            f"{_ONE}{name}/",
            "use",
            _use(operation),
            doc={
                "summary": summary,
                "parameters": [_STORE_ID],
                "requestBody": {**json_body(_LOGIN), "required": False},
                "responses": {"200": _ok(name), **answers(400, 401, 403, 404, 422, 429)},
            },
        )
        for name, (operation, summary) in _USES.items()
    ),
    Endpoint(
        "PUT",
        "/credentials/{credentialId}/associations/{association}/",
        "write",
        associate,
        action="credential.associate",
        doc={
            "summary": "Link a credential to a data store for the caller ({isDefault: true}: their default there)",
            "parameters": [credential_id_parameter(), _ASSOCIATION],
            "requestBody": json_body(
                {"type": "object", "title": "Association", "properties": {"isDefault": {"type": "boolean"}}}
            ),
            "responses": {"200": _ok("Updated"), "201": _ok("Linked"), **answers(400, 401, 403, 404, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        "/credentials/associations/{association}/",
        "read",
        store_associations,
        doc={
            "summary": "The caller's credentials linked to a data store, the default first",
            "parameters": [_ASSOCIATION],
            "responses": {"200": _ok("Associations"), **answers(401, 403, 404, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        "/credentials/{credentialId}/associations/",
        "read",
        credential_associations,
        doc={
            "summary": "What the caller linked a credential to",
            "parameters": [credential_id_parameter()],
            "responses": {"200": _ok("Associations"), **answers(401, 403, 404, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/credentials/{credentialId}/test/",
        "use",
        test_credential,
        doc={
            "summary": "Prove an s3 credential works: list one key of url (any role; audited as a use)",
            "parameters": [credential_id_parameter()],
            "requestBody": json_body(_S3_BODY),
            "responses": {"200": _ok("Check passed"), **answers(400, 401, 403, 404, 422, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/credentials/test/",
        "use",
        test_credential_data,
        doc={
            "summary": "Prove s3 credentialData works: list one key of url (used once, never stored)",
            "requestBody": json_body(_S3_DATA_BODY),
            "responses": {"200": _ok("Check passed"), **answers(400, 401, 403, 422, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/credentials/{credentialId}/reveal/",
        "use",
        reveal,
        action="credential.reveal",
        doc={
            "summary": "The credential's secret fields, for code that runs elsewhere (EDITOR or OWNER; audited)",
            "parameters": [credential_id_parameter()],
            "responses": {"200": _ok("Credential with secrets"), **answers(401, 403, 404, 429)},
        },
    ),
]
