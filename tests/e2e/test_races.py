"""Races through real HTTP: concurrent PATCH, DELETE, creates of one name and token revocation.

Every test drives a live server process (`server`, once per backend) from many threads at once and checks
the end state against what the responses acknowledged: no lost update, no duplicate, no 500.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from strongroom.errors import Conflict
from tests.support import Server, assert_error, client, create_basic, open_service, unique

UNKNOWN_ID = "0123456789abcdef01234567"


def etag(resp: httpx.Response) -> str:
    tag = resp.headers.get("etag")
    assert tag is not None and tag.startswith('"') and tag.endswith('"'), resp.headers
    return tag


def in_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(0..n-1)` on n threads at once; any exception fails the test."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(work, range(n)))


# ---- the If-Match contract --------------------------------------------------------------------------------


def test_etag_and_if_match_contract(server: Server, api: httpx.Client) -> None:
    """GET and PATCH carry the revision as a strong ETag; a stale If-Match is 412 and changes nothing."""
    cid = create_basic(api, name=unique("etag"))["credentialId"]
    url = f"credentials/{cid}/"
    first = api.get(url)
    assert etag(first) == '"1"'
    patched = api.patch(url, json={"description": "one"}, headers={"If-Match": '"1"'})
    assert patched.status_code == 200 and etag(patched) == '"2"'
    assert etag(api.get(url)) == '"2"'

    stale = api.patch(url, json={"description": "lost"}, headers={"If-Match": '"1"'})
    body = assert_error(stale, 412, "If-Match")
    assert "GET it again" in body["message"]
    assert etag(stale) == '"2"'  # the current revision, to retry against
    assert api.get(url).json()["description"] == "one"
    assert_error(api.patch(url, json={"description": "weak"}, headers={"If-Match": 'W/"2"'}), 412, "If-Match")

    assert etag(api.patch(url, json={"description": "any"}, headers={"If-Match": "*"})) == '"3"'
    assert etag(api.patch(url, json={"description": "listed"}, headers={"If-Match": '"9", "3"'})) == '"4"'
    assert etag(api.patch(url, json={"description": "no header"})) == '"5"'  # the DataRobot client sends none
    for malformed in ["5", '"five"', '"5" "6"', "", '"5",']:
        assert_error(api.patch(url, json={"description": "x"}, headers={"If-Match": malformed}), 400, "If-Match")
    assert api.get(url).json()["description"] == "no header"

    assert_error(api.delete(url, headers={"If-Match": '"4"'}), 412, "If-Match")
    assert api.get(url).status_code == 200
    assert_error(api.patch(f"credentials/{UNKNOWN_ID}/", json={"name": "x"}, headers={"If-Match": '"1"'}), 404)
    assert_error(api.delete(f"credentials/{UNKNOWN_ID}/", headers={"If-Match": '"1"'}), 404)
    assert api.delete(url, headers={"If-Match": '"5"'}).status_code == 204
    assert_error(api.get(url), 404)
    assert api.get("credentials/").json()["totalCount"] == 0
    anonymous = httpx.patch(f"{server.api}/{url}", json={"name": "x"}, headers={"If-Match": "bad"}, timeout=30)
    assert_error(anonymous, 401)  # the token is checked before the header


# ---- concurrent updates --------------------------------------------------------------------------------------


def test_lockstep_read_modify_write_has_one_winner_per_round(server: Server, token: str) -> None:
    """Each round, every writer reads the same revision, then all PATCH it with If-Match at once: exactly one
    wins and the others get 412. Without the condition every writer would "win" and overwrite the others."""
    writers, rounds = 6, 5
    with client(server, token) as api:
        cid = create_basic(api, name=unique("lockstep"), description="0")["credentialId"]
    read, write = threading.Barrier(writers), threading.Barrier(writers)
    outcomes: list[list[int]] = [[] for _ in range(rounds)]

    def writer(k: int) -> None:
        with client(server, token) as api:
            for r in range(rounds):
                got = api.get(f"credentials/{cid}/")
                read.wait()
                resp = api.patch(
                    f"credentials/{cid}/",
                    json={"description": str(int(got.json()["description"]) + 1), "password": f"p{k}-{r}"},
                    headers={"If-Match": etag(got)},
                )
                if resp.status_code != 200:
                    assert_error(resp, 412, "If-Match")
                outcomes[r].append(resp.status_code)
                write.wait()

    in_threads(writers, writer)
    assert [sorted(codes) for codes in outcomes] == [[200] + [412] * (writers - 1)] * rounds
    with client(server, token) as api:
        final = api.get(f"credentials/{cid}/")
    assert final.json()["description"] == str(rounds)
    assert etag(final) == f'"{1 + rounds}"'


def test_free_running_increments_lose_no_update(server: Server, token: str) -> None:
    """Writers increment a counter by GET then PATCH with If-Match, retrying on 412, with no coordination:
    the final count equals the number of 200s, so no acknowledged increment was overwritten."""
    writers, increments = 6, 5
    with client(server, token) as api:
        cid = create_basic(api, name=unique("counter"), description="0")["credentialId"]
    stale: Counter[int] = Counter()

    def writer(k: int) -> int:
        done = 0
        with client(server, token) as api:
            while done < increments:
                got = api.get(f"credentials/{cid}/")
                assert got.status_code == 200, got.text
                resp = api.patch(
                    f"credentials/{cid}/",
                    json={"description": str(int(got.json()["description"]) + 1)},
                    headers={"If-Match": etag(got)},
                )
                if resp.status_code == 200:
                    done += 1
                else:
                    assert_error(resp, 412, "If-Match")
                    stale[k] += 1
        return done

    acknowledged = sum(in_threads(writers, writer))
    with client(server, token) as api:
        final = api.get(f"credentials/{cid}/")
    assert acknowledged == writers * increments
    assert final.json()["description"] == str(acknowledged)
    assert etag(final) == f'"{1 + acknowledged}"'
    print(f"{acknowledged} increments, {sum(stale.values())} stale attempts answered 412")


def test_patch_and_delete_race_on_the_same_credentials(server: Server, token: str) -> None:
    """Per credential, three PATCHers (one with If-Match) are busy when two DELETEs (one with If-Match) land:
    every answer is 200/204/404/412, exactly one DELETE wins, the credential stays deleted, the count is right."""
    victims, patchers = 6, 3
    with client(server, token) as api:
        bystanders = {create_basic(api, name=unique("keep"))["credentialId"] for _ in range(3)}
        ids = [create_basic(api, name=unique("victim"))["credentialId"] for _ in range(victims)]
    started = {cid: threading.Barrier(patchers + 2) for cid in ids}  # every racer has read the credential
    busy = {cid: threading.Event() for cid in ids}  # set once the victim's patchers have 3 successes
    patched: Counter[str] = Counter()
    deletes: Counter[str] = Counter()
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def patcher(cid: str, conditional: bool) -> list[int]:
        url, codes = f"credentials/{cid}/", []
        with client(server, token) as api:
            tag = etag(api.get(url))
            started[cid].wait(120)
            for i in range(200):
                resp = api.patch(
                    url,
                    json={"description": f"d{i}", "password": f"p{i}"},
                    headers={"If-Match": tag} if conditional else {},
                )
                codes.append(resp.status_code)
                if resp.status_code == 200:
                    tag = etag(resp)
                    with lock:
                        patched[cid] += 1
                        if patched[cid] >= 3:
                            busy[cid].set()
                elif resp.status_code == 412:
                    assert_error(resp, 412, "If-Match")
                    tag = resp.headers.get("etag", tag)
                else:
                    assert_error(resp, 404)
                    return codes
        raise AssertionError("the credential was never deleted")

    def deleter(cid: str, conditional: bool) -> list[int]:
        url = f"credentials/{cid}/"
        with client(server, token) as api:
            tag = etag(api.get(url))
            started[cid].wait(120)
            assert busy[cid].wait(120)
            resp = api.delete(url, headers={"If-Match": tag} if conditional else {})
            codes = [resp.status_code]
            if resp.status_code == 412:  # the revision it read is stale: read again, delete at that revision
                assert_error(resp, 412, "If-Match")
                current = api.get(url)
                if current.status_code == 200:
                    codes.append(api.delete(url, headers={"If-Match": etag(current)}).status_code)
            if codes[-1] == 204:
                with lock:
                    deletes[cid] += 1
            else:
                assert codes[-1] in (404, 412), codes
        return codes

    def racer(n: int) -> None:
        cid, role = ids[n // (patchers + 2)], n % (patchers + 2)
        codes = patcher(cid, role == 0) if role < patchers else deleter(cid, role == patchers)
        with lock:
            seen.update(codes)
        assert set(codes) <= {200, 204, 404, 412}, codes

    in_threads(victims * (patchers + 2), racer)
    assert deletes == Counter(dict.fromkeys(ids, 1)), deletes
    with client(server, token) as api:
        for cid in ids:
            assert_error(api.get(f"credentials/{cid}/"), 404)
            assert_error(api.patch(f"credentials/{cid}/", json={"description": "late"}), 404)
        listed = api.get("credentials/").json()
    assert {c["credentialId"] for c in listed["data"]} == bystanders
    assert listed["totalCount"] == len(bystanders)
    print(f"PATCH/DELETE race answers: {dict(sorted(seen.items()))}")


def test_creates_and_renames_race_for_one_name(server: Server, token: str) -> None:
    """24 creates of one name and 8 renames of existing credentials onto it, all at once: exactly one
    succeeds, every other is 409 naming `name`, and the list holds the name once."""
    creators, renamers = 24, 8
    name = unique("contested")
    with client(server, token) as api:
        existing = [create_basic(api, name=unique("before"))["credentialId"] for _ in range(renamers)]
    barrier = threading.Barrier(creators + renamers)

    def racer(n: int) -> int:
        with client(server, token) as api:
            barrier.wait()
            if n < creators:
                resp = api.post("credentials/", json={"name": name, "user": "u", "password": f"p{n}"})
            else:
                resp = api.patch(f"credentials/{existing[n - creators]}/", json={"name": name})
            if resp.status_code not in (200, 201):
                assert_error(resp, 409, "name")
            return resp.status_code

    codes = Counter(in_threads(creators + renamers, racer))
    assert codes[409] == creators + renamers - 1 and codes[200] + codes[201] == 1, codes
    with client(server, token) as api:
        listed = api.get("credentials/").json()
    assert [c["name"] for c in listed["data"]].count(name) == 1
    assert listed["totalCount"] == renamers + codes[201]


# ---- token revocation under load ----------------------------------------------------------------------------


def test_revocation_is_immediate_while_the_token_is_in_use(server: Server) -> None:
    """Threads use a token while two `strongroom tokens revoke` processes revoke it at once: both succeed,
    and every request started after they returned is 401 (no cache window); another token is unaffected."""
    with open_service(server) as service:
        username = unique("revoker")
        service.accounts.create_user(username)
        doomed, doomed_raw = service.accounts.create_token(username, name="doomed")
        _, kept_raw = service.accounts.create_token(username, name="kept")
    revoked = threading.Event()
    enough = threading.Semaphore(0)
    after: Counter[int] = Counter()
    before: Counter[int] = Counter()
    kept: Counter[int] = Counter()
    lock = threading.Lock()

    def user(k: int) -> None:
        raw = kept_raw if k == 0 else doomed_raw
        with client(server, raw) as api:
            post_revocation = 0
            give_up = time.monotonic() + 180  # a hang guard, not a timing assertion
            for i in itertools.count():
                if time.monotonic() > give_up:
                    raise AssertionError("the revocation never finished")
                started_after = revoked.is_set()
                if k % 2:
                    resp = api.get("credentials/")
                else:
                    resp = api.post("credentials/", json={"name": f"t{k}-{i}", "user": "u", "password": "p"})
                code = resp.status_code
                if code not in (200, 201):
                    assert_error(resp, 401)
                with lock:
                    (kept if k == 0 else after if started_after else before)[code] += 1
                if i == 3:
                    enough.release()
                if started_after:
                    post_revocation += 1
                    if post_revocation == 10:
                        return
                time.sleep(0.002)  # leave the shared machine some CPU for the revoking processes

    def revoke(_: int) -> str:
        for _ in range(4):
            enough.acquire()
        outputs = in_threads(2, lambda _: server.cli("tokens", "revoke", doomed.id, process=True).stdout)
        revoked.set()
        return " ".join(outputs)

    with ThreadPoolExecutor(5) as pool:
        users = [pool.submit(user, k) for k in range(4)]
        revoker = pool.submit(revoke, 0)
        for future in users:
            future.result()
        assert revoker.result().count(f"Revoked token {doomed.id}") == 2
    assert set(after) == {401} and after[401] == 30, after
    assert set(before) <= {200, 201, 401} and before[200] + before[201] >= 9, before
    assert set(kept) <= {200, 201}, kept
    with client(server, kept_raw) as api:
        assert api.get("version/").status_code == 200
    print(f"before revocation returned: {dict(before)}; after: {dict(after)}; other token: {dict(kept)}")


def test_concurrent_revocations_of_many_tokens(server: Server) -> None:
    """Eight tokens revoked at once, each by two threads: all revoked, and a later revocation keeps the
    first revocation time (one conditional UPDATE, not read-then-write)."""
    tokens = 8
    with open_service(server) as service:
        username = unique("many")
        service.accounts.create_user(username)
        minted = [service.accounts.create_token(username, name=f"t{i}") for i in range(tokens)]
        in_threads(tokens * 2, lambda n: service.accounts.revoke_token(minted[n % tokens][0].id))
        first = {t.id: t.revoked_at for t in service.accounts.list_tokens(username)}
        service.accounts.revoke_token(minted[0][0].id)
        again = {t.id: t.revoked_at for t in service.accounts.list_tokens(username)}
    assert all(first[t.id] is not None for t, _ in minted)
    assert again == first
    for _, raw in minted:
        with client(server, raw) as api:
            assert_error(api.get("version/"), 401)


def test_openapi_documents_etag_if_match_412_and_429(server: Server) -> None:
    """Clients generated from the OpenAPI document learn about If-Match, 412, ETag and 429 + Retry-After."""
    paths = httpx.get(f"{server.api}/openapi.json", timeout=30).json()["paths"]
    one = paths["/api/v2/credentials/{credentialId}/"]
    for method in ("patch", "delete"):
        assert "If-Match" in {p["name"] for p in one[method]["parameters"] if p["in"] == "header"}
        assert "412" in one[method]["responses"]
    assert "ETag" in one["get"]["responses"]["200"]["headers"]
    assert "ETag" in one["patch"]["responses"]["200"]["headers"]
    for route in (one["get"], one["patch"], one["delete"], paths["/api/v2/credentials/"]["post"]):
        assert "Retry-After" in route["responses"]["429"]["headers"]


def test_concurrent_user_creates_with_one_name(server: Server) -> None:
    """`strongroom users create` racing itself (PostgreSQL reads the name before the insert commits): one
    user is created, every other attempt is a clean Conflict, never a raw database error."""
    racers, username = 8, unique("twin")
    barrier = threading.Barrier(racers)
    with open_service(server) as service:

        def attempt(_: int) -> str:
            barrier.wait()
            try:
                service.accounts.create_user(username)
            except Conflict as exc:
                assert "already exists" in exc.message
                return "conflict"
            return "created"

        outcomes = Counter(in_threads(racers, attempt))
        names = [u.username for u in service.accounts.list_users()]
    assert outcomes == Counter(created=1, conflict=racers - 1), outcomes
    assert names.count(username) == 1
