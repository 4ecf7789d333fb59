"""The HTTP client: one connection pool, the auth header, the version handshake and error mapping."""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from strongroom.client.config import redact_endpoint, resolve
from strongroom.client.errors import ClientError, ServerError, StrongroomSDKError

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=6.05)  # the datarobot client's connect/read timeouts

T = TypeVar("T")

_default: Client | None = None
_default_lock = threading.Lock()


@cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR as the process started),
    built once: httpx otherwise builds one and loads the bundle for every client."""
    return httpx.create_ssl_context()


class Client:
    """A connection to a Strongroom (or DataRobot-compatible) API; constructing one makes it the default.

    Settings come from the keyword arguments, then STRONGROOM_ENDPOINT / STRONGROOM_API_TOKEN, then a YAML
    file (`config_path`, STRONGROOM_CONFIG_FILE or ~/.config/strongroom/config.yaml, keys `endpoint` and
    `token`). The token is checked at once with `GET version/`, so a bad one fails here with ClientError.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        config_path: str | os.PathLike[str] | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        from strongroom import __version__  # imported here: the package imports this module first

        config = resolve(endpoint, token, config_path)
        self.endpoint = config.endpoint
        self._base_path = urlsplit(self.endpoint).path.rstrip("/") + "/"
        self._http = httpx.Client(
            base_url=self.endpoint + "/",
            headers={
                "Authorization": f"Bearer {config.token}",
                "Accept": "application/json",
                "User-Agent": f"strongroom-python/{__version__}",
            },
            timeout=timeout,
            follow_redirects=False,  # a redirect could carry the token elsewhere; report it instead
            verify=tls_context(),
        )
        try:
            self.server_version = self._handshake()
        except BaseException:
            self._http.close()
            raise
        set_client(self)

    def __repr__(self) -> str:
        return f"Client(endpoint={self.shown_endpoint!r})"

    @property
    def shown_endpoint(self) -> str:
        """The endpoint as messages show it: without a userinfo password or query values."""
        return redact_endpoint(self.endpoint)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool and stop being the default, so later calls fail clearly."""
        global _default
        self._http.close()
        with _default_lock:
            if _default is self:
                _default = None

    @property
    def closed(self) -> bool:
        """Whether close() was called, so get_client() can replace a closed default."""
        return self._http.is_closed

    def _handshake(self) -> str | None:
        """Check the endpoint and token with `GET version/`, rewording failures into something actionable."""
        try:
            response = self.get("version/")
        except ClientError as exc:
            if exc.status_code == 401:
                message = f"Unable to authenticate to {self.shown_endpoint}: the API token was rejected ({exc.message})"
            else:
                message = (
                    f"{self.shown_endpoint} did not answer GET version/ ({exc.status_code}: {exc.message}); the "
                    "endpoint must be the API root, e.g. http://127.0.0.1:8484/api/v2"
                )
            raise ClientError(message, exc.status_code, exc.json) from None
        body = _json_object(response)
        if body is None or "versionString" not in body:
            raise StrongroomSDKError(
                f"{self.shown_endpoint} answered GET version/ without a versionString; is it a Strongroom API root?"
            )
        version = body["versionString"]
        return version if isinstance(version, str) else None

    def request(
        self, method: str, url: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> httpx.Response:
        """Send a request relative to the endpoint; absolute URLs are refused so the token stays on this host."""
        _inside(url)
        field = _unencodable(json)
        if field is not None:
            raise StrongroomSDKError(f"{field} contains a character that cannot be encoded as UTF-8; it is not shown")
        response = self._transport(method, url, lambda: self._http.request(method, url, params=params, json=json))
        _raise_for_status(response)
        return response

    def send(self, method: str, url: str, *, content: Any, headers: dict[str, str]) -> httpx.Response:
        """Send a raw body (bytes or an iterator of bytes, streamed) relative to the endpoint."""
        _inside(url)
        response = self._transport(
            method, url, lambda: self._http.request(method, url, content=content, headers=headers)
        )
        _raise_for_status(response)
        return response

    def stream_to(self, method: str, url: str, sink: Any) -> None:
        """Stream a response body relative to the endpoint into `sink` (a binary file)."""
        _inside(url)

        def copy() -> None:
            with self._http.stream(method, url) as response:
                if response.status_code >= 300:
                    response.read()
                    _raise_for_status(response)
                for piece in response.iter_bytes():
                    sink.write(piece)

        self._transport(method, url, copy)

    def _transport(self, method: str, url: str, call: Callable[[], T]) -> T:
        """Run an httpx call, turning its failures into SDK errors raised outside the handler.

        Raising after the `except` block leaves no `__context__`, so nothing reachable from the error holds the
        httpx exception (whose request carries the token) or a UnicodeEncodeError (whose `.object` is the text).
        """
        problem: str
        try:
            return call()
        except httpx.TimeoutException:
            problem = f"{method} {self.shown_endpoint}/{url} timed out"
        except httpx.TransportError as exc:
            problem = f"cannot reach {self.shown_endpoint}: {str(exc).replace(self.endpoint, self.shown_endpoint)}"
        except UnicodeEncodeError:
            problem = f"{method} {url}: the request holds a character that cannot be encoded; it is not shown"
        raise StrongroomSDKError(problem)

    def get(self, url: str, params: dict[str, Any] | None = None) -> httpx.Response:
        """GET relative to the endpoint (datarobot RESTClientObject-style helper)."""
        return self.request("GET", url, params=params)

    def post(self, url: str, json: Any = None) -> httpx.Response:
        """POST a JSON body relative to the endpoint."""
        return self.request("POST", url, json=json)

    def patch(self, url: str, json: Any = None) -> httpx.Response:
        """PATCH relative to the endpoint; json=None sends no body at all."""
        return self.request("PATCH", url, json=json)

    def delete(self, url: str) -> httpx.Response:
        """DELETE relative to the endpoint."""
        return self.request("DELETE", url)

    def relative(self, url: str) -> str:
        """Turn a server-given absolute link (a `next` page) into a path under this endpoint.

        Only the path below the API root is kept, so the link works behind a proxy that rewrote the host, and
        a link to any other path is refused rather than followed with our token.
        """
        parts = urlsplit(url)
        if not parts.path.startswith(self._base_path):
            raise StrongroomSDKError(f"the server returned a link outside the endpoint: {url!r}")
        rest = parts.path[len(self._base_path) :]
        return f"{rest}?{parts.query}" if parts.query else rest

    def paginate(self, url: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Yield every item of a `{data, next}` listing, following `next` until it is null."""
        page: str | None = url
        while page is not None:
            body = _json_object(self.get(page, params=params))
            if body is None or not isinstance(body.get("data"), list) or "next" not in body:
                raise StrongroomSDKError(f"GET {page} did not return a {{data, next}} listing")
            yield from body["data"]
            link = body["next"]
            page = self.relative(link) if isinstance(link, str) and link else None
            params = None  # the next link carries its own query string


def _inside(url: str) -> None:
    """Refuse an absolute URL, so the token stays on this host."""
    if urlsplit(url).scheme or url.startswith("/"):
        raise StrongroomSDKError(f"refusing a URL outside the endpoint: {url!r}")


def _unencodable(value: Any, path: str = "") -> str | None:
    """Which part of a JSON body holds a string UTF-8 cannot encode (a lone surrogate), or None when none does."""
    where = f"field {path!r}" if path else "the request body"
    if isinstance(value, str):
        return None if _encodes(value) else where
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and not _encodes(key):
                return f"a key in {where}"
            found = _unencodable(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _unencodable(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (the check keeps no exception, which would hold the text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _raise_for_status(response: httpx.Response) -> None:
    """Map 3xx/4xx/5xx answers to typed errors carrying the server's message (never the request)."""
    status = response.status_code
    if status < 300:
        return
    body = _json_object(response) or {}
    server_message = body.get("message")
    message = server_message if isinstance(server_message, str) and server_message else None
    fallback = f"{status} {response.reason_phrase}".strip()
    if status < 400:
        location = response.headers.get("location", "")
        raise StrongroomSDKError(f"the server redirected ({fallback}) to {location!r}; use that URL as the endpoint")
    if status < 500:
        raise ClientError(message or fallback, status, body)
    request_id = response.headers.get("x-request-id")
    suffix = f" (request id {request_id})" if request_id else ""
    raise ServerError(f"{message or fallback}{suffix}", status)


def set_client(client: Client | None) -> Client | None:
    """Make `client` the process-wide default used by Credential; returns the previous default."""
    global _default
    with _default_lock:
        previous, _default = _default, client
    return previous


def get_client() -> Client:
    """The default client, created from the environment or config file on first use (as datarobot does)."""
    with _default_lock:
        current = _default
    if current is not None and not current.closed:
        return current
    return Client()
