"""Abuse: repeated bad tokens are slowed with 429 + Retry-After, bodies are size-limited (422, never 413), and
no response or log line ever carries a secret or a token.

The servers here run with a small failure limit and window and a small body limit. Each test connects from
its own loopback address (127.0.0.x, all routed to `lo` on Linux), so each is a separate client to the
limiter, exactly as separate hosts would be.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import BACKENDS, Server, assert_error, backend_database, create_basic, http_client, log_with, unique

LIMIT, WINDOW, BODY_LIMIT = 5, 2, 4096


@pytest.fixture(scope="module", params=BACKENDS)
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server allowing LIMIT failed authentications per client per WINDOW seconds, and BODY_LIMIT bytes."""
    env = {
        "STRONGROOM_AUTH_FAILURE_LIMIT": str(LIMIT),
        "STRONGROOM_AUTH_FAILURE_WINDOW": str(WINDOW),
        "STRONGROOM_MAX_BODY_BYTES": str(BODY_LIMIT),
    }
    with backend_database(request.param) as url:
        srv = Server(data_dir=tmp_path_factory.mktemp("abuse") / request.param, database_url=url, extra_env=env)
        srv.start()
        yield srv
        srv.stop()


class Recorder:
    """Clients bound to one source address; every response (status, headers, body) is kept for a leak scan."""

    def __init__(self, server: Server, address: str) -> None:
        self.server = server
        self.address = address
        self.responses: list[httpx.Response] = []
        self._clients: list[httpx.Client] = []

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = http_client(
            base_url=self.server.api,
            headers=headers,
            timeout=30,
            transport=httpx.HTTPTransport(local_address=self.address),
            event_hooks={"response": [self._record]},
        )
        self._clients.append(c)
        return c

    def _record(self, resp: httpx.Response) -> None:
        resp.read()
        self.responses.append(resp)

    def wire_bytes(self) -> bytes:
        """Everything the client received: status lines, headers and bodies."""
        parts = []
        for r in self.responses:
            parts.append(f"{r.status_code} {r.reason_phrase}\n".encode())
            parts.extend(f"{k}: {v}\n".encode() for k, v in r.headers.multi_items())
            parts.append(r.content)
        return b"\n".join(parts)

    def close(self) -> None:
        for c in self._clients:
            c.close()


@pytest.fixture
def recorder(limited: Server, request: pytest.FixtureRequest) -> Iterator[Recorder]:
    """A recorder on a loopback address of its own (127.0.0.2 upwards), so each test is a fresh client."""
    address = f"127.0.0.{2 + ADDRESSES.index(request.node.originalname)}"
    rec = Recorder(limited, address)
    yield rec
    rec.close()


ADDRESSES = [
    "test_bad_tokens_get_429_with_retry_after_then_recover",
    "test_valid_tokens_never_count_and_limits_are_per_client",
    "test_body_limit_is_422_with_the_limit",
    "test_no_secret_or_token_in_any_response_or_log_line",
]


def bad_token() -> str:
    """Shaped like a real token, so the server looks it up."""
    return "sr_" + secrets.token_urlsafe(32)


def fail_until_429(rec: Recorder, attempts: int = 200) -> tuple[int, httpx.Response, float]:
    """Send fresh bad tokens until one is answered 429: (401s before it, the 429, seconds the burst took)."""
    started = time.monotonic()
    for n in range(attempts):
        resp = rec.client(bad_token()).get("version/")
        if resp.status_code == 429:
            return n, resp, time.monotonic() - started
        assert_error(resp, 401)
    raise AssertionError(f"no 429 after {attempts} bad tokens")


def test_bad_tokens_get_429_with_retry_after_then_recover(recorder: Recorder) -> None:
    """LIMIT bad tokens are 401; then 429 with Retry-After while a valid token keeps working; after the window
    a bad token is a plain 401 again."""
    good = recorder.server.new_user("abused")
    unauthorized, limited, burst = fail_until_429(recorder)
    assert unauthorized >= LIMIT  # never limited before LIMIT failures
    if burst < WINDOW:  # all of them fell inside one window: the very next one is limited
        assert unauthorized == LIMIT
    body = assert_error(limited, 429)
    assert "too many failed authentications" in body["message"]
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW
    assert "www-authenticate" not in limited.headers

    with recorder.client(good) as api:  # the same address, a valid token: never limited
        assert api.get("version/").status_code == 200
        cid = create_basic(api)["credentialId"]
        assert api.patch(f"credentials/{cid}/", json={"description": "still works"}).status_code == 200
        assert api.delete(f"credentials/{cid}/").status_code == 204

    deadline = time.monotonic() + 60  # poll: a bad token from this address becomes a plain 401 again
    while (resp := recorder.client(bad_token()).get("version/")).status_code == 429:
        assert time.monotonic() < deadline, "still limited a minute after the window"
        time.sleep(int(resp.headers["retry-after"]))
    assert_error(resp, 401)
    log = recorder.server.log_path.read_text()
    assert f"client {recorder.address}: over {LIMIT} failed authentications" in log
    print(f"{unauthorized} x 401 in {burst:.2f}s, then 429 with Retry-After {retry_after}")


def test_valid_tokens_never_count_and_limits_are_per_client(recorder: Recorder, limited: Server) -> None:
    """Many valid requests add nothing to the failure count; one client's 429 leaves other addresses alone."""
    good = limited.new_user("busy")
    with recorder.client(good) as api:
        for _ in range(3 * LIMIT):
            assert api.get("version/").status_code == 200
    unauthorized, limited_resp, _ = fail_until_429(recorder)
    assert unauthorized >= LIMIT
    assert_error(limited_resp, 429)
    neighbour = Recorder(limited, "127.0.0.250")
    try:
        assert_error(neighbour.client(bad_token()).get("version/"), 401)
    finally:
        neighbour.close()


def _padded(size: int, **fields: str) -> bytes:
    raw = orjson.dumps(fields)
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def test_body_limit_is_422_with_the_limit(recorder: Recorder, limited: Server) -> None:
    """The configured limit holds for POST and PATCH, declared or chunked; the 422 states it (never 413)."""
    with recorder.client(limited.new_user("big")) as api:
        assert (
            api.post("credentials/", content=_padded(BODY_LIMIT, name=unique(), user="u", password="p")).status_code
            == 201
        )
        over = _padded(BODY_LIMIT + 1, name=unique(), user="u", password="p")
        body = assert_error(api.post("credentials/", content=over), 422)
        assert f"exceeds the limit of {BODY_LIMIT} bytes" in body["message"]
        cid = create_basic(api, description="before")["credentialId"]
        body = assert_error(api.patch(f"credentials/{cid}/", content=_padded(BODY_LIMIT + 1, description="x")), 422)
        assert str(BODY_LIMIT) in body["message"]

        def chunks() -> Iterator[bytes]:
            yield b'{"description": "'
            for _ in range(4):
                yield b"x" * BODY_LIMIT
            yield b'"}'

        chunked = api.patch(f"credentials/{cid}/", content=chunks(), headers={"Content-Type": "application/json"})
        assert "content-length" not in chunked.request.headers
        assert str(BODY_LIMIT) in assert_error(chunked, 422)["message"]
        assert api.get(f"credentials/{cid}/").json()["description"] == "before"
        assert api.get("credentials/").json()["totalCount"] == 2


def test_no_secret_or_token_in_any_response_or_log_line(recorder: Recorder, limited: Server, tmp_path: Path) -> None:
    """Secrets (accepted, rejected, oversized, stale) and tokens (valid, bad, limited) appear in no status
    line, header, body or server log line."""
    good = limited.new_user("scan")
    planted = [f"canary-{secrets.token_hex(10)}" for _ in range(6)]
    bad = [bad_token() for _ in range(LIMIT + 3)]
    with recorder.client(good) as api:
        cid = create_basic(api, user=planted[0], password=planted[1])["credentialId"]
        tag = api.get(f"credentials/{cid}/").headers["etag"]
        assert (
            api.patch(f"credentials/{cid}/", json={"password": planted[2]}, headers={"If-Match": tag}).status_code
            == 200
        )
        assert_error(api.patch(f"credentials/{cid}/", json={"password": planted[3]}, headers={"If-Match": tag}), 412)
        assert_error(api.post("credentials/", json={"name": unique(), "user": "u", "password": [planted[4]]}), 422)
        oversized = _padded(BODY_LIMIT + 1, name=unique(), user="u", password=planted[5])
        assert_error(api.post("credentials/", content=oversized), 422)
    codes = [recorder.client(token).get("credentials/").status_code for token in bad]
    codes.append(recorder.client(bad[0]).post("credentials/", content=oversized).status_code)
    assert 401 in codes and 429 in codes, codes
    wire = recorder.wire_bytes()
    log = log_with(limited, b" 429 ")
    assert b"credentials/" in log and b"429" in log  # the access log is captured, and it saw the 429s
    for value in [*planted, good, *bad]:
        in_wire, in_log = value.encode() in wire, value.encode() in log  # booleans: a failure must not print it
        assert not in_wire, f"{value[:12]}… in a response"
        assert not in_log, f"{value[:12]}… in the server log"
    print(f"scanned {len(recorder.responses)} responses ({sorted(set(r.status_code for r in recorder.responses))})")
