"""Connect helpers: a ready SQLAlchemy engine, boto3 S3 client or OAuth-authenticated httpx client from a data
store or credential id.

They fetch what they need through the API under the caller's token (`Client`, default: `get_client()`): the
data store, the caller's default credential for it, and the credential's secret by `reveal`, which needs the
`use` scope and the OWNER or EDITOR role (a CONSUMER gets a 403 ClientError saying so). SQLAlchemy, the
database drivers and boto3 are imported only when used; without them the helper names the extra to install.

    from strongroom import connect
    engine = connect.sql(data_store_id)               # pip install 'strongroom[connect-sql]'
    s3 = connect.s3(credential_id, endpoint_url=url)  # pip install 'strongroom[connect-s3]'
    api = connect.oauth(credential_id, base_url=url)  # bearer token refreshed before it expires (connect/oauth.py)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from strongroom.client.client import Client, get_client
from strongroom.client.errors import ClientError, StrongroomSDKError
from strongroom.connect.oauth import oauth
from strongroom.errors import InvalidInput
from strongroom.jdbc import target, url_parts

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SQL_EXTRA = "pip install 'strongroom[connect-sql]'"
S3_EXTRA = "pip install 'strongroom[connect-s3]'"


def sql(
    data_store_id: str, credential_id: str | None = None, client: Client | None = None, **engine_options: Any
) -> Engine:
    """A SQLAlchemy engine for the data store, logged in with `credential_id` (default: the caller's default
    credential for the store); `engine_options` go to `sqlalchemy.create_engine`."""
    api = client or get_client()
    store = _json(api.get(f"externalDataStores/{_segment(data_store_id)}/"))
    params = store.get("params") or {}
    try:
        where = target(params.get("driverId"), params.get("jdbcUrl"), params.get("fields") or [])
    except InvalidInput as exc:
        raise StrongroomSDKError(f"data store {data_store_id} cannot be connected to: {exc.message}") from None
    if credential_id is None:
        credential_id = _default_credential(api, data_store_id)
    secret = _reveal(api, credential_id, "basic", "connect.sql")
    try:
        import sqlalchemy as sa

        url = sa.engine.URL.create(
            username=str(secret.get("user", "")), password=str(secret.get("password", "")), **url_parts(where)
        )
        return sa.create_engine(url, hide_parameters=True, **engine_options)
    except ImportError as exc:
        raise StrongroomSDKError(
            f"connect.sql needs SQLAlchemy and the {where.driver.canonical_name} driver ({exc.name or exc} is "
            f"missing): {SQL_EXTRA}"
        ) from None


def s3(
    credential_id: str,
    endpoint_url: str | None = None,
    client: Client | None = None,
    region_name: str | None = None,
    **client_options: Any,
) -> Any:
    """A boto3 S3 client signing with the s3 credential's keys (and session token, if it has one), at
    `endpoint_url` (default: AWS); `client_options` go to `boto3.client`."""
    api = client or get_client()
    secret = _reveal(api, credential_id, "s3", "connect.s3")
    if not secret.get("awsAccessKeyId") or not secret.get("awsSecretAccessKey"):
        raise StrongroomSDKError(f"credential {credential_id} names a configId, not AWS keys: connect.s3 needs keys")
    try:
        import boto3
    except ImportError:
        raise StrongroomSDKError(f"connect.s3 needs boto3: {S3_EXTRA}") from None
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region_name,
        aws_access_key_id=secret["awsAccessKeyId"],
        aws_secret_access_key=secret["awsSecretAccessKey"],
        aws_session_token=secret.get("awsSessionToken") or None,
        **client_options,
    )


def _default_credential(api: Client, data_store_id: str) -> str:
    """The id of the caller's default credential for the store, or an error saying to pass one."""
    found = _json(
        api.get(f"credentials/associations/dataconnection:{_segment(data_store_id)}/", params={"orderBy": "-isDefault"})
    )
    for link in found.get("data") or []:
        if link.get("isDefault") and isinstance(link.get("credentialId"), str):
            return str(link["credentialId"])
    raise StrongroomSDKError(
        f"you have no default credential for data store {data_store_id}: pass credential_id, or make one the "
        "default (PUT credentials/{id}/associations/dataconnection:{storeId}/ with isDefault)"
    )


def _reveal(api: Client, credential_id: str, kind: str, helper: str) -> dict[str, Any]:
    """The credential's fields, secret ones included, checked to be of `kind`; a refusal says why."""
    try:
        secret = _json(api.post(f"credentials/{_segment(credential_id)}/reveal/"))
    except ClientError as exc:
        if exc.status_code != 403:
            raise
        raise ClientError(
            f"{helper} needs credential {credential_id}'s secret, which only its OWNER or an EDITOR may reveal "
            f"(with a token of the use scope): {exc.message}",
            exc.status_code,
            exc.json,
        ) from None
    found = secret.get("credentialType")
    if found != kind:
        raise StrongroomSDKError(f"{helper} needs a credential of type {kind}; {credential_id} is of type {found}")
    return secret


def _json(response: Any) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise StrongroomSDKError(f"{response.request.method} {response.request.url.path} did not answer an object")
    return body


def _segment(value: str) -> str:
    """An id as one path segment (so it cannot step into another path)."""
    return quote(str(value), safe="")


__all__ = ["oauth", "s3", "sql"]
