"""The HTTP boundary: header limits and deadlines, authentication before the body, trusted proxies only, names,
capped errors, no reflected Host, security headers, packaged docs, duplicate keys, a growing Retry-After and
titled schemas. Servers run as users run them (`python -m strongroom serve`), on SQLite; each test that counts
failed authentications connects from a loopback address of its own (127.0.0.x), as a separate host would.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strongroom.api.boundary import forwarded_client
from strongroom.api.ratelimit import AuthFailureLimiter
from tests.support import Server, http_client, log_with

LIMIT = 5
PUBLIC_URL = "https://vault.example.com"
PROXY = "127.0.0.9"


def _start(tmp: Path, **env: str) -> Server:
    base = {
        "STRONGROOM_AUTH_FAILURE_LIMIT": str(LIMIT),
        "STRONGROOM_AUTH_FAILURE_WINDOW": "60",
        "STRONGROOM_HEADER_TIMEOUT": "1",
        "STRONGROOM_BODY_TIMEOUT": "1",
        "STRONGROOM_KEEPALIVE_TIMEOUT": "1",
    }
    srv = Server(data_dir=tmp, extra_env={**base, **env})
    srv.start()
    return srv


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Default boundary settings except short deadlines and a small failure limit."""
    srv = _start(tmp_path_factory.mktemp("edge") / "sqlite")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Behind a trusted proxy at PROXY, published at PUBLIC_URL."""
    srv = _start(
        tmp_path_factory.mktemp("proxied") / "sqlite",
        STRONGROOM_TRUSTED_PROXIES=f"{PROXY}/32",
        STRONGROOM_PUBLIC_URL=PUBLIC_URL,
    )
    yield srv
    srv.stop()


def client(server: Server, token: str | None = None, source: str = "127.0.0.1") -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.HTTPTransport(local_address=source)
    return http_client(base_url=server.api, headers=headers, timeout=30, transport=transport)


def error(resp: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """A JSON error of `status`; with `field`, one that names it in the message and in `errors`."""
    assert resp.status_code == status, f"{resp.status_code}: {resp.text[:300]}"
    assert resp.headers["content-type"] == "application/json"
    body: dict[str, Any] = resp.json()
    if field is not None:
        assert field in body["message"] and field in body.get("errors", {}), body
    return body


def raw_connection(server: Server, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30, source_address=(source, 0))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def send_all_until_refused(sock: socket.socket, data: bytes) -> None:
    """Send `data` in pieces; stop quietly when the server has closed the connection."""
    try:
        for at in range(0, len(data), 65536):
            sock.sendall(data[at : at + 65536])
    except (BrokenPipeError, ConnectionResetError):
        pass


def rss_kib(server: Server) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_still_answering(server: Server) -> None:
    assert httpx.get(f"{server.base}/healthz", timeout=10).status_code == 200


def bad_token() -> str:
    return "sr_" + secrets.token_urlsafe(32)


# ---- 1. header limits and deadlines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8_000_000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-N: 1\r\n" * 100_000 + b"\r\n",
    ],
    ids=["8MB-header", "100000-headers"],
)
def test_oversized_heads_are_refused_431_and_the_server_keeps_answering(edge: Server, head: bytes) -> None:
    before = rss_kib(edge)
    with raw_connection(edge) as sock:
        send_all_until_refused(sock, head)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert_still_answering(edge)
    assert rss_kib(edge) - before < 20_000  # the head was never held whole


def test_slow_and_idle_connections_are_cut_off(edge: Server) -> None:
    """A head that never completes is answered 408 and closed; so is a connection that sends nothing; an idle
    keep-alive connection is closed after its response. The server answers others throughout."""
    with raw_connection(edge) as slow, raw_connection(edge) as silent, raw_connection(edge) as idle:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_still_answering(edge)
        for _ in range(3):  # a slow-loris trickle does not extend the deadline
            time.sleep(0.2)
            try:
                slow.sendall(b"X-B: 2\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        assert read_until_closed(slow).startswith(b"HTTP/1.1 408 ")
        assert read_until_closed(silent).startswith(b"HTTP/1.1 408 ")
        answered = read_until_closed(idle)  # the response, then the close when keep-alive times out
        assert answered.startswith(b"HTTP/1.1 200 ") and answered.count(b"HTTP/1.1") == 1
    assert_still_answering(edge)


def test_a_body_that_stops_coming_is_408_and_closed(edge: Server) -> None:
    token = edge.new_user("slowbody")
    with raw_connection(edge) as sock:
        sock.sendall(
            b"POST /api/v2/credentials/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"name": "'
        )
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
    assert_still_answering(edge)


def test_an_upload_that_stops_coming_is_408_and_closed_and_a_slow_one_is_received(edge: Server) -> None:
    """A CSV upload that stops arriving is answered 408 (JSON naming csvUpload) and closed once the body timeout
    (1 s here) passes without a byte, its partial spool deleted; one that keeps coming is received however long
    it takes in all (here 3 s), and the job then runs on it."""
    token = edge.new_user("slowupload")
    with client(edge, token) as api:
        job = api.post("batchPredictions/", json={"deploymentId": "5e0000000000000000000001"}).json()
    head = (
        f"PUT /api/v2/batchPredictions/{job['id']}/csvUpload/ HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 8\r\n\r\n"
    ).encode()
    with raw_connection(edge) as sock:
        sock.settimeout(10)
        sock.sendall(head + b"a,b\n1,")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower(), answer[:200]
    refusal = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert "csvUpload" in refusal["message"] and "csvUpload" in refusal["errors"]
    assert [p.name for p in (edge.data_dir / "jobs" / job["id"] / "intake").iterdir()] == []
    rows = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(8))
    with raw_connection(edge) as sock:
        sock.settimeout(10)
        sock.sendall(head.replace(b"Content-Length: 8", b"Content-Length: %d" % len(rows)))
        for at in range(0, len(rows), 4):
            time.sleep(0.4)
            sock.sendall(rows[at : at + 4])
        assert sock.recv(1000).startswith(b"HTTP/1.1 202 ")
    with client(edge, token) as api:
        deadline = time.monotonic() + 30
        while (done := api.get(f"batchPredictions/{job['id']}/").json())["status"] != "COMPLETED":
            assert time.monotonic() < deadline, done
            time.sleep(0.1)
        assert api.get(f"batchPredictions/{job['id']}/download/").content.replace(b'"', b"") == rows


# ---- 2. authenticate before reading the body ---------------------------------------------------------------


def test_anonymous_bodies_are_answered_401_before_they_are_sent_and_never_read(edge: Server) -> None:
    """200 anonymous 1 MiB POSTs: each is answered 401 with `Connection: close` after its first 64 KiB, the rest
    is never sent, and the server's memory stays flat."""
    mib = 1 << 20
    before = rss_kib(edge)
    for _ in range(200):
        with raw_connection(edge, "127.0.0.20") as sock:
            sock.sendall(
                b"POST /api/v2/credentials/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {mib}\r\n\r\n".encode()
                + b"{"
                + b" " * 65535
            )
            answer = read_until_closed(sock)  # returns only because the server closed: the body was not awaited
        assert answer.startswith((b"HTTP/1.1 401 ", b"HTTP/1.1 429 ")), answer[:100]
        assert b"connection: close" in answer.lower()
    assert rss_kib(edge) - before < 20_000


# ---- 3. X-Forwarded-For ------------------------------------------------------------------------------------


def test_rotating_forwarded_for_does_not_escape_the_limiter(edge: Server) -> None:
    """With no trusted proxy (the default) the header is ignored: fake addresses do not make new clients, and
    an oversized one is refused with the head, never kept or logged."""
    statuses = []
    with client(edge, source="127.0.0.30") as api:
        for n in range(LIMIT + 3):
            resp = api.get(
                "version/", headers={"Authorization": f"Bearer {bad_token()}", "X-Forwarded-For": f"10.9.0.{n}"}
            )
            statuses.append(resp.status_code)
        assert statuses == [401] * LIMIT + [429] * 3
        marker = "x" + secrets.token_hex(8)
        huge = api.get("version/", headers={"X-Forwarded-For": marker * (256 * 1024 // len(marker))})
        assert huge.status_code == 431 and marker not in huge.text
        resp = api.get("version/", headers={"X-Forwarded-For": marker * 100})  # within the head limit: ignored
        error(resp, 429)
    assert_still_answering(edge)
    assert marker not in edge.log_path.read_text()


def test_a_trusted_proxy_names_the_client_and_garbage_names_the_proxy(proxied: Server) -> None:
    with client(proxied, source=PROXY) as api:
        for _ in range(LIMIT):
            error(api.get("version/", headers={"Authorization": "Bearer x", "X-Forwarded-For": "203.0.113.7"}), 401)
        error(api.get("version/", headers={"Authorization": "Bearer x", "X-Forwarded-For": "203.0.113.7"}), 429)
        # another client behind the same proxy is not limited; an unparsable hop is the proxy's own failure
        error(api.get("version/", headers={"Authorization": "Bearer x", "X-Forwarded-For": "203.0.113.8"}), 401)
        for _ in range(LIMIT):
            error(api.get("version/", headers={"Authorization": "Bearer x", "X-Forwarded-For": "not-an-ip"}), 401)
        error(api.get("version/", headers={"Authorization": "Bearer x", "X-Forwarded-For": "also-not"}), 429)
    with client(proxied, source="127.0.0.31") as untrusted:  # not the proxy: its header is ignored
        error(untrusted.get("version/", headers={"Authorization": "Bearer x", "X-Forwarded-For": "203.0.113.7"}), 401)
    log = proxied.log_path.read_text()
    assert "client 203.0.113.7: over" in log and f"client {PROXY}: over" in log and "not-an-ip" not in log


def test_forwarded_client_walks_right_to_left_over_trusted_hops_only() -> None:
    from ipaddress import ip_network

    proxies = (ip_network("10.0.0.0/8"),)
    assert forwarded_client("10.0.0.1", b"198.51.100.1, 10.0.0.5", proxies) == "198.51.100.1"
    assert forwarded_client("10.0.0.1", b"1.2.3.4, 198.51.100.1", proxies) == "198.51.100.1"  # 1.2.3.4: forged
    assert forwarded_client("10.0.0.1", b"198.51.100.1, junk", proxies) == "10.0.0.1"
    assert forwarded_client("192.0.2.1", b"198.51.100.1", proxies) == "192.0.2.1"  # not a proxy
    assert forwarded_client("10.0.0.1", b"2001:db8::1", proxies) == "2001:db8::1"
    assert forwarded_client("10.0.0.1", b"1.1.1.1," * 200, proxies) == "10.0.0.1"  # over the cap
    assert forwarded_client("10.0.0.1", b"198.51.100.1", ()) == "10.0.0.1"  # none trusted: the default


# ---- 4. names and scopes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "\u200b",
        "\u200b\u200d\u2060",
        "\ufeffwarehouse",
        "invoice\u202efdp.exe",
        "a\u2066b\u2069",
        "soft\u00adhyphen",
        "pgcred\U000e0041",
        "pgcred\U0001d173",
    ],
    ids=["zero-width-space", "zero-width-only", "bom", "rlo", "isolate", "soft-hyphen", "tag", "musical-format"],
)
def test_invisible_and_bidi_characters_in_names_are_422(edge: Server, name: str) -> None:
    with client(edge, edge.new_user("names")) as api:
        error(api.post("credentials/", json={"name": name, "user": "u", "password": "p"}), 422, "name")


def test_names_are_nfc_so_look_alikes_collide_and_joiners_stay(edge: Server) -> None:
    with client(edge, edge.new_user("nfc")) as api:
        created = api.post("credentials/", json={"name": "caf\u00e9", "user": "u", "password": "p"})
        assert created.status_code == 201
        error(api.post("credentials/", json={"name": "cafe\u0301", "user": "u", "password": "p"}), 409)
        nfd = api.post("credentials/", json={"name": "re\u0301sume\u0301", "user": "u", "password": "p"})
        assert nfd.status_code == 201 and nfd.json()["name"] == "r\u00e9sum\u00e9"
        family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
        assert api.post("credentials/", json={"name": family, "user": "u", "password": "p"}).status_code == 201


def test_oauth_scopes_reject_control_characters(edge: Server) -> None:
    body = {"name": "adls", "credentialType": "adls_gen2_oauth", "clientId": "i", "clientSecret": "s"}
    with client(edge, edge.new_user("scopes")) as api:
        for scope in ("read\nwrite", "a\u001b[31m", "x\u0085y", "nul\u0000"):
            error(api.post("credentials/", json={**body, "oauthScopes": [scope]}), 422, "oauthScopes")
        assert api.post("credentials/", json={**body, "oauthScopes": ["https://x/.default"]}).status_code == 201


# ---- 5. capped errors and echoes ---------------------------------------------------------------------------


def test_a_mebibyte_of_unknown_keys_is_a_small_422(edge: Server) -> None:
    keys = {f"k{n:06d}": 1 for n in range(60_000)}
    with client(edge, edge.new_user("keys")) as api:
        resp = api.post("credentials/", json={"name": "a", "user": "u", "password": "p", **keys})
    body = error(resp, 422)
    assert len(resp.content) < 4096
    assert len(body["errors"]) == 21 and body["errors"]["…"] == f"and {60_000 - 20} more"
    assert body["message"].endswith(f"and {60_000 - 20} more")


def test_a_huge_if_match_is_refused_without_echo(edge: Server) -> None:
    with client(edge, edge.new_user("ifmatch")) as api:
        cid = api.post("credentials/", json={"name": "a", "user": "u", "password": "p"}).json()["credentialId"]
        tags = ", ".join(f'"{n}"' for n in range(3000))  # well formed, about 20 KB: within the head limit
        resp = api.patch(f"credentials/{cid}/", json={"description": "x"}, headers={"If-Match": tags})
    error(resp, 400, "If-Match")
    assert len(resp.content) < 512 and '"2999"' not in resp.text


def test_path_values_are_quoted_back_capped_and_a_pasted_token_not_at_all(edge: Server) -> None:
    """Whatever an error quotes from the path or body, the answer stays small (`api.errors`); a token pasted
    where its id belongs is neither answered, nor audited, nor logged."""
    admin = edge.new_user("capadmin", admin=True)
    with client(edge, admin) as api:
        long = "u" * 20_000
        resp = api.delete(f"users/{long}/")
        assert resp.status_code in (404, 422) and len(resp.content) < 2048, resp.status_code
        group = api.post("groups/", json={"name": "capped"}).json()["id"]
        resp = api.post(f"groups/{group}/members/", json={"username": "Z" * 300_000})
        assert 400 <= resp.status_code < 500 and len(resp.content) < 2048, resp.status_code
        token = edge.new_user("pasted")
        secret = token.removeprefix("sr_")
        resp = api.delete(f"account/apiKeys/{token}/")
        assert error(resp, 404)["message"] == "token not found"
        records = api.get("auditLog/", params={"limit": 1000}).json()["data"]
    assert any(r["action"] == "token.revoke" and r["outcome"] == "failed" for r in records)
    assert secret not in str(records)
    assert secret.encode() not in log_with(edge, b"/account/apiKeys/sr_")


# ---- 6. Host, security headers, docs, duplicate keys -------------------------------------------------------


def test_links_and_redirects_never_reflect_a_malformed_host(edge: Server) -> None:
    token = edge.new_user("host")
    with client(edge, token) as api:
        for n in range(2):
            api.post("credentials/", json={"name": f"h{n}", "user": "u", "password": "p"})
        evil = "evil.example/<script>"
        page = api.get("credentials/?limit=1", headers={"Host": evil}).json()
        assert page["next"].startswith(f"http://127.0.0.1:{edge.port}/api/v2/credentials/?")
        good = api.get("credentials/?limit=1", headers={"Host": "strongroom.internal:8484"}).json()
        assert good["next"].startswith("http://strongroom.internal:8484/api/v2/credentials/?")
        moved = api.get(f"{edge.api}/credentials", headers={"Host": evil}, follow_redirects=False)
        assert moved.status_code == 307 and "evil" not in moved.headers["location"]


def test_the_public_url_is_the_base_of_links_and_redirects(proxied: Server) -> None:
    with client(proxied, proxied.new_user("public")) as api:
        for n in range(2):
            api.post("credentials/", json={"name": f"p{n}", "user": "u", "password": "p"})
        page = api.get("credentials/?limit=1", headers={"Host": "attacker.example"}).json()
        assert page["next"].startswith(f"{PUBLIC_URL}/api/v2/credentials/?")
        moved = api.get(f"{proxied.api}/credentials", params={"limit": 1}, follow_redirects=False)
        assert moved.status_code == 307
        assert moved.headers["location"] == f"{PUBLIC_URL}/api/v2/credentials/?limit=1"


def test_every_response_carries_the_security_headers(edge: Server) -> None:
    token = edge.new_user("headers")
    with client(edge, token) as api, client(edge, None, "127.0.0.40") as anonymous:
        answers = [
            api.get("version/"),
            api.post("credentials/", json={"name": "s", "user": "u", "password": "p"}),
            api.get("credentials/"),
            api.get("credentials/0123456789abcdef01234567/"),
            api.get("nowhere/"),
            anonymous.get("version/"),
            api.get("openapi.json"),
            api.get("docs"),
            httpx.get(f"{edge.base}/healthz"),
        ]
    for resp in answers:
        assert resp.headers["cache-control"] == "no-store", resp.url
        assert resp.headers["x-content-type-options"] == "nosniff", resp.url
        assert "default-src 'none'" in resp.headers["content-security-policy"], resp.url
        assert "server" not in resp.headers


def test_the_docs_page_loads_only_packaged_assets(edge: Server) -> None:
    page = httpx.get(f"{edge.api}/docs")
    assert page.status_code == 200 and "cdn" not in page.text and "https://" not in page.text
    for asset in ("docs/swagger-ui-bundle.js", "docs/swagger-ui.css", "docs/init.js"):
        resp = httpx.get(f"{edge.api}/{asset}")
        assert resp.status_code == 200 and len(resp.content) > 50, asset
        assert f"/api/v2/{asset}" in page.text
    assert 'data-url="/api/v2/openapi.json"' in page.text
    assert "SwaggerUIBundle" in httpx.get(f"{edge.api}/docs/init.js").text


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"name": "a", "name": "b", "user": "u", "password": "p"}', "name"),
        (
            b'{"credentialType": "s3", "name": "a", "user": "u", "password": "p", "credentialType": "basic"}',
            "credentialType",
        ),
        (b'{"name": "a", "user": "u", "us\\u0065r": "v", "password": "p"}', "user"),
        (b'{"name": "a", "credentialType": "gcp", "gcpKey": {"type": "x", "type": "y"}}', "type"),
    ],
    ids=["name", "credentialType", "escaped", "nested"],
)
def test_duplicate_keys_are_rejected_naming_the_key(edge: Server, raw: bytes, key: str) -> None:
    with client(edge, edge.new_user("dup")) as api:
        resp = api.post("credentials/", content=raw, headers={"Content-Type": "application/json"})
    error(resp, 422, key)
    assert "more than once" in resp.json()["message"]


def test_repeated_values_that_are_not_keys_are_fine(edge: Server) -> None:
    with client(edge, edge.new_user("notdup")) as api:
        resp = api.post("credentials/", json={"name": "user", "user": "password", "password": "name"})
    assert resp.status_code == 201


# ---- 7. a growing Retry-After ------------------------------------------------------------------------------


def test_past_the_limit_retry_after_starts_small_and_grows(edge: Server) -> None:
    with client(edge, source="127.0.0.50") as api:
        statuses, waits = [], []
        for _ in range(LIMIT + 4):
            resp = api.get("version/", headers={"Authorization": f"Bearer {bad_token()}"})
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                waits.append(int(resp.headers["retry-after"]))
    assert statuses == [401] * LIMIT + [429] * 4
    assert waits == [2, 4, 8, 16]


def test_limiter_backoff_is_capped_by_the_window_and_resets() -> None:
    now = [1000.0]
    limiter = AuthFailureLimiter(3, 20, clock=lambda: now[0])
    assert [limiter.failed("a") for _ in range(9)] == [None, None, None, 2, 4, 8, 16, 20, 20]
    now[0] += 21
    assert [limiter.failed("a") for _ in range(4)] == [None, None, None, 2]


# ---- 8. schema titles ---------------------------------------------------------------------------------------


def _subschemas(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from _subschemas(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _subschemas(value)


def test_schemas_have_human_titles_and_clean_types(edge: Server) -> None:
    document = httpx.get(f"{edge.api}/openapi.json").json()
    schemas = document["components"]["schemas"]
    titles = {name: schema.get("title", "") for name, schema in schemas.items()}
    assert all(titles.values()), titles
    assert not [t for t in titles.values() if "_" in t or t.startswith("Oauth")], titles
    assert titles["OauthCredentialCreate"] == "OAuth credential"
    assert titles["SnowflakeKeyPairUserAccountCredentialCreate"] == "Snowflake key pair credential"
    for schema in _subschemas(document["components"]):
        for combinator in ("anyOf", "oneOf"):
            for option in schema.get(combinator, []):  # an option without a type renders as `never` or `any`
                assert "$ref" in option or option.get("type") == "object", option
        if "not" in schema:
            assert schema["not"].get("type") == "object", schema
