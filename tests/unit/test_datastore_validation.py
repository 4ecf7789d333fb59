"""Validation of data store bodies through the data store service: ports, canonical names, secrets, NUL, unknown
fields and echoed values, each answered as the API would (`response_for`), never a 500. The HTTP-only parts
(If-Match, query parameters) are proven in `tests/e2e/test_datastores.py`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from strongroom.api import http
from strongroom.api.errors import response_for
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import InvalidInput, StrongroomError
from strongroom.jdbc import target
from strongroom.services.accounts import Principal
from strongroom.services.connections import Connector, explain
from strongroom.services.oauth import lifetime_of
from tests.support import assert_error, unique

PG = "5d0000000000000000000001"
LONG = "h" * 5000


def _answer(method: str, status: int, fn: Callable[[], Any]) -> httpx.Response:
    """`fn`'s result as the API would send it: `status` with its JSON, or the domain error's answer."""
    request = httpx.Request(method, "http://in-process/api/v2/externalDataStores/")
    try:
        content = fn()
    except StrongroomError as exc:
        rendered = response_for(exc)
        return httpx.Response(
            rendered.status_code, headers=list(rendered.headers.items()), content=rendered.body, request=request
        )
    return httpx.Response(status, json=content, request=request)


def _body(params: dict[str, Any] | None = None, name: str | None = None, **extra: Any) -> dict[str, Any]:
    params = params if params is not None else {"driverId": PG, "jdbcUrl": "jdbc:postgresql://db.example.test/x"}
    return {"type": "jdbc", "canonicalName": name if name is not None else unique("store"), "params": params, **extra}


def _fields(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"driverId": PG, "fields": [{"id": f"f{i}", "name": n, "value": v} for i, (n, v) in enumerate(pairs)]}


class Stores:
    """The data store use cases as one principal, answered as HTTP responses."""

    def __init__(self, services: Services, who: Principal) -> None:
        self.stores, self.who = services.datastores, who

    def create(self, body: dict[str, Any]) -> httpx.Response:
        return _answer("POST", 201, lambda: self.stores.create(self.who, body))

    def update(self, store_id: str, body: dict[str, Any]) -> httpx.Response:
        return _answer("PATCH", 200, lambda: self.stores.update(self.who, store_id, body))

    def created(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.create(body or _body())
        assert resp.status_code == 201, resp.text
        found: dict[str, Any] = resp.json()
        return found

    def names(self) -> list[str]:
        return [s["canonicalName"] for s in self.stores.list(self.who)]


@pytest.fixture
def stores(services: Services, who: Principal) -> Stores:
    return Stores(services, who)


# ---- ports: ASCII digits, 1 to 65535 (str.isdigit let "¹" through to an int() that raised: a 500) ------------

BAD_PORTS = {"superscript": "¹", "Arabic-Indic": "٥٤٣٢", "5000 digits": "9" * 5000, "zero": "0", "65536": "65536"}


@pytest.mark.parametrize("port", BAD_PORTS.values(), ids=BAD_PORTS.keys())
def test_a_bad_port_field_is_422_on_create_and_update(stores: Stores, port: str) -> None:
    params = _fields(("host", "h"), ("port", port))
    assert_error(stores.create(_body(params)), 422, "params")
    store = stores.created()
    assert_error(stores.update(store["id"], {"params": params}), 422, "params")


@pytest.mark.parametrize("port", ["¹", "٥٤٣٢", "0", "99999"], ids=["superscript", "Arabic-Indic", "zero", "99999"])
def test_a_bad_port_in_a_jdbc_url_is_422(port: str) -> None:
    with pytest.raises(InvalidInput):
        target(PG, f"jdbc:postgresql://h:{port}/x", [])


def test_good_ports_are_kept() -> None:
    assert target(PG, None, [{"name": "host", "value": "h"}, {"name": "port", "value": "6543"}]).port == 6543
    assert target(PG, "jdbc:postgresql://h:15432/x", []).port == 15432
    assert target(PG, "jdbc:postgresql://h/x", []).port == 5432


def test_a_content_length_in_other_digits_is_no_500() -> None:
    """`read_body` compared a superscript Content-Length with int(): ValueError."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    for declared in ("¹", "9" * 5000):
        scope = {"type": "http", "method": "POST", "headers": [(b"content-length", declared.encode("latin-1"))]}
        request = Request(scope, receive)
        assert asyncio.run(http.read_body(request, 1024)) in (b"{}", None)


def test_an_oauth_lifetime_in_other_digits_is_ignored() -> None:
    assert lifetime_of("3600") == 3600 and lifetime_of(3600) == 3600
    assert lifetime_of("¹") is None and lifetime_of("٣٦٠٠") is None and lifetime_of("9" * 5000) is None
    assert lifetime_of(True) is None and lifetime_of(-1) is None


# ---- canonical names follow a credential's name rules ------------------------------------------------------

BAD_NAMES = {
    "bidi override": "bidi\u202eevil",
    "zero-width space": "zw\u200bsp",
    "BEL": "ctl\u0007bell",
    "newline": "nl\nline",
    "NUL": "a\x00b",
    "BOM": "\ufeffbom",
    "blank": "  ",
    "256 chars": "x" * 256,
    "number": 5,
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_canonical_name_is_422_on_create_and_update(stores: Stores, name: Any) -> None:
    before = stores.names()
    body = assert_error(stores.create(_body(name=name)), 422, "canonicalName")
    assert len(body["message"]) < 200
    store = stores.created()
    assert_error(stores.update(store["id"], {"canonicalName": name}), 422, "canonicalName")
    assert stores.names() == [*before, store["canonicalName"]]


def test_canonical_names_are_nfc_and_the_name_filter_too(services: Services, who: Principal) -> None:
    stores = Stores(services, who)
    decomposed, composed = "cafe\u0301", "caf\u00e9"
    assert stores.created(_body(name=decomposed))["canonicalName"] == composed
    for spelling in (composed, decomposed):
        assert [s["canonicalName"] for s in services.datastores.list(who, name=spelling)] == [composed]
    store = stores.created()
    assert stores.update(store["id"], {"canonicalName": decomposed}).json()["canonicalName"] == composed


@pytest.mark.parametrize("name", ["a\x00b", "n" * 5000], ids=["NUL", "5000 chars"])
def test_a_bad_name_filter_is_422(services: Services, who: Principal, name: str) -> None:
    assert_error(_answer("GET", 200, lambda: services.datastores.list(who, name=name)), 422, "name")


# ---- a data store holds no secret -----------------------------------------------------------------------

CANARY = "S3CRET-CANARY-123"
SECRET_URLS = {
    "userinfo": f"jdbc:postgresql://u:{CANARY}@h/x",
    "user only": "jdbc:postgresql://u@h/x",
    "query password": f"jdbc:postgresql://h/x?password={CANARY}",
    "second query parameter": f"jdbc:mysql://h/x?user=u&Password={CANARY}",
    "sslpassword": f"jdbc:postgresql://h/x?sslmode=require&sslpassword={CANARY}",
    "encoded name": f"jdbc:postgresql://h/x?pass%77ord={CANARY}",
    "semicolon property": f"jdbc:postgresql://h/x;pwd={CANARY}",
    "MySQL host form": f"jdbc:mysql://(host=h,user=u,password={CANARY})/x",
    "key store password": f"jdbc:mysql://h/x?clientCertificateKeyStorePassword={CANARY}",
    "token": f"jdbc:postgresql://h/x?access_token={CANARY}",
}


@pytest.mark.parametrize("url", SECRET_URLS.values(), ids=SECRET_URLS.keys())
def test_a_password_in_the_jdbc_url_is_422(stores: Stores, url: str) -> None:
    body = assert_error(stores.create(_body({"driverId": PG if "postgresql" in url else None, "jdbcUrl": url})), 422)
    assert "params.jdbcUrl" in body["message"] and "credential" in body["message"] and CANARY not in str(body)
    store = stores.created()
    assert_error(stores.update(store["id"], {"params": {"jdbcUrl": url}}), 422, "params.jdbcUrl")


SECRET_FIELDS = ["password", "PASSWORD", "pwd", "db_password", "secret", "api-key", "key", "token", "passphrase"]


@pytest.mark.parametrize("name", SECRET_FIELDS)
def test_a_password_like_field_is_422(stores: Stores, name: str) -> None:
    body = assert_error(stores.create(_body(_fields(("host", "h"), (name, CANARY)))), 422, "params.fields[1].name")
    assert "credential" in body["message"] and CANARY not in str(body)
    fields = [{"id": "host", "name": "host", "value": "h"}, {"id": name, "name": "x", "value": CANARY}]
    hidden = {"driverId": PG, "fields": fields}
    assert_error(stores.create(_body(hidden)), 422, "params.fields[1].id")


@pytest.mark.parametrize(
    "url",
    [
        "jdbc:mysql://h:3306/tokens?allowPublicKeyRetrieval=true&useSSL=false",
        "jdbc:postgresql://h/password_reset?sslmode=require&ApplicationName=x",
        "jdbc:postgresql://[::1]:5432/x?user=reader",
    ],
)
def test_ordinary_properties_are_kept(stores: Stores, url: str) -> None:
    assert stores.created(_body({"jdbcUrl": url}))["params"]["jdbcUrl"] == url


@pytest.mark.parametrize(
    "params,field",
    [
        ({"driverId": PG, "jdbcUrl": "jdbc:postgresql://h/x\x00"}, "params.jdbcUrl"),
        ({"driverId": "5d00\x00", "jdbcUrl": "jdbc:postgresql://h/x"}, "params.driverId"),
        (_fields(("host", "h"), ("database", "d\x00b")), "params.fields[1].value"),
        (_fields(("host", "h"), ("data\x00base", "d")), "params.fields[1].name"),
    ],
    ids=["jdbcUrl", "driverId", "field value", "field name"],
)
def test_a_nul_in_any_param_is_422(stores: Stores, params: dict[str, Any], field: str) -> None:
    assert_error(stores.create(_body(params)), 422, field)


# ---- only the fields the datarobot client sends ----------------------------------------------------------


def test_unknown_fields_are_422_naming_them(stores: Stores) -> None:
    assert_error(stores.create(_body(extra=1)), 422, "extra")
    params = {"driverId": PG, "jdbcUrl": "jdbc:postgresql://h/x", "jdbcURL": "y"}
    assert_error(stores.create(_body(params)), 422, "params.jdbcURL")
    store = stores.created()
    assert_error(stores.update(store["id"], {"params": params}), 422, "params.jdbcURL")
    body = assert_error(stores.create(_body(**{"k" * 10_000: 1})), 422, "(unprintable)")
    assert len(body["message"]) < 200
    body = assert_error(stores.update(store["id"], {"k" * 10_000: 1}), 422, "(unprintable)")
    assert len(body["message"]) < 200


def test_every_field_the_client_sends_is_accepted(stores: Stores) -> None:
    params = {"driverId": PG, "connectorId": None, "jdbcUrl": "jdbc:postgresql://h/x", "fields": None}
    assert stores.created(_body(params))["params"]["jdbcUrl"] == "jdbc:postgresql://h/x"


@pytest.mark.parametrize("operation", ["test", "schemas", "tables"])
def test_unknown_fields_of_a_test_or_browse_are_422(services: Services, who: Principal, operation: str) -> None:
    store = Stores(services, who).created()
    method = getattr(services.datastores, operation)
    body = {"user": "u", "password": "p", "useKerberos": None, "extra": 1}
    assert_error(_answer("POST", 200, lambda: method(who, store["id"], body)), 422, "extra")


# ---- echoed values are short ------------------------------------------------------------------------------


def test_a_long_host_or_database_is_clipped_in_messages() -> None:
    connector = Connector(Settings(), resolve=lambda host, port: [])
    with pytest.raises(StrongroomError) as raised:
        connector.address(LONG, 5432)
    assert len(raised.value.message) < 200 and "…" in raised.value.message
    where = target(PG, f"jdbc:postgresql://{LONG[:2000]}/{'d' * 40}", [])
    message = explain(Exception('database "d" does not exist'), where).message
    assert len(message) < 300 and "…" in message
