"""The SDK never repeats a secret: not the endpoint's password or query, not a token or body it cannot encode, not
a GCP key it cannot parse; neither in a message nor in anything reachable from the exception it raises."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from strongroom.client import client as client_module
from strongroom.client.client import Client
from strongroom.client.credential import Credential
from strongroom.client.errors import ConfigurationError, StrongroomSDKError

SECRET = "hunter2"


def _reachable(exc: BaseException) -> Iterator[Any]:
    """Everything an exception holds: its args and attributes, and those of its cause and context, recursively."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseException):
            todo.extend([*item.args, item.__cause__, item.__context__, *vars(item).values()])
            todo.extend(getattr(item, name, None) for name in ("object", "doc", "request"))
        elif isinstance(item, httpx.Request):
            todo.extend([str(item.url), *item.headers.values(), item.content])
        elif isinstance(item, dict | list | tuple):
            todo.extend(item.values() if isinstance(item, dict) else item)


def assert_clean(exc: BaseException, secret: str) -> None:
    """Neither the message, the repr nor anything reachable from `exc` holds `secret`."""
    assert secret not in str(exc) and secret not in repr(exc)
    for item in _reachable(exc):
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        assert secret not in text, f"{type(item).__name__} reachable from {type(exc).__name__} holds the secret"


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[httpx.Request], httpx.Response]], None]:
    """Route every Client's requests to a handler instead of the network."""

    def install(handler: Callable[[httpx.Request], httpx.Response]) -> None:
        real = httpx.Client
        monkeypatch.setattr(
            client_module.httpx, "Client", functools.partial(real, transport=httpx.MockTransport(handler))
        )

    return install


def version_or(response: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    """A server that answers `GET version/` and `response` to anything else."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/version/"):
            return httpx.Response(200, json={"versionString": "2.0"})
        return response

    return handler


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("http://admin:hunter2@127.0.0.1:1/api/v2", "http://admin:***@127.0.0.1:1/api/v2"),
        ("http://127.0.0.1:1/api/v2?token=hunter2&x", "http://127.0.0.1:1/api/v2?token=***&***"),
        ("http://admin@127.0.0.1:1/api/v2#hunter2", "http://admin@127.0.0.1:1/api/v2"),
    ],
)
def test_redacted_endpoint_keeps_the_place_not_the_secret(endpoint: str, shown: str) -> None:
    from strongroom.client.config import redact_endpoint

    assert redact_endpoint(endpoint) == shown


def test_unreachable_endpoint_names_no_password() -> None:
    with pytest.raises(StrongroomSDKError) as caught:
        Client(endpoint=f"http://admin:{SECRET}@127.0.0.1:1/api/v2", token="sr_tok", config_path="/dev/null")
    assert "cannot reach http://admin:***@127.0.0.1:1/api/v2" in str(caught.value)
    assert_clean(caught.value, SECRET)
    assert_clean(caught.value, "sr_tok")


def test_rejected_token_names_no_password(answer: Callable[..., None]) -> None:
    answer(lambda request: httpx.Response(401, json={"message": "invalid token"}))
    with pytest.raises(StrongroomSDKError) as caught:
        Client(endpoint=f"http://admin:{SECRET}@127.0.0.1:1/api/v2", token="sr_tok", config_path="/dev/null")
    assert "Unable to authenticate to http://admin:***@127.0.0.1:1/api/v2" in str(caught.value)
    assert_clean(caught.value, SECRET)


def test_client_repr_names_no_password(answer: Callable[..., None]) -> None:
    answer(version_or(httpx.Response(404)))
    with Client(endpoint=f"http://admin:{SECRET}@h/api/v2", token="sr_tok", config_path="/dev/null") as client:
        assert SECRET not in repr(client) and "admin:***@h" in repr(client)


def test_endpoint_with_a_query_is_refused_without_quoting_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Client(endpoint=f"http://127.0.0.1:1/api/v2?token={SECRET}", token="sr_tok", config_path="/dev/null")
    assert "query string" in str(caught.value)
    assert_clean(caught.value, SECRET)


@pytest.mark.parametrize("token", ["sr_tökén-hunter2", "sr_\udcffhunter2", "sr_\u2028hunter2"])
def test_unsendable_token_is_refused_up_front(token: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Client(endpoint="http://127.0.0.1:1/api/v2", token=token, config_path="/dev/null")
    assert "API token" in str(caught.value)
    assert_clean(caught.value, SECRET)


def test_unencodable_body_names_the_field_not_the_body(answer: Callable[..., None]) -> None:
    answer(version_or(httpx.Response(201, json={})))
    with Client(endpoint="http://h/api/v2", token="sr_tok", config_path="/dev/null") as client:
        with pytest.raises(StrongroomSDKError) as caught:
            client.post("credentials/", json={"name": "c", "user": "u", "password": f"S3CRET-{SECRET}-\ud800"})
        assert "field 'password'" in str(caught.value)
        assert_clean(caught.value, SECRET)
        with pytest.raises(StrongroomSDKError) as nested:
            client.post("credentials/", json={"gcpKey": {"private_key": f"{SECRET}\udcff"}})
        assert "field 'gcpKey.private_key'" in str(nested.value)
        assert_clean(nested.value, SECRET)


def test_unparsable_gcp_key_is_not_reachable_from_the_error(answer: Callable[..., None]) -> None:
    answer(version_or(httpx.Response(201, json={})))
    with (
        Client(endpoint="http://h/api/v2", token="sr_tok", config_path="/dev/null"),
        pytest.raises(ValueError, match="Could not parse gcp_key") as caught,
    ):
        Credential.create_gcp(name="g", gcp_key='{"private_key": "' + SECRET + '"')
    assert caught.value.__context__ is None
    assert_clean(caught.value, SECRET)


def test_the_fixture_sees_a_secret_held_in_context() -> None:
    try:
        try:
            json.loads("{" + SECRET)
        except ValueError:
            raise ValueError("parse failed") from None
    except ValueError as exc:
        with pytest.raises(AssertionError):
            assert_clean(exc, SECRET)
