"""Writes: group commit on SQLite, one transaction per write on PostgreSQL; a failing write never takes others
down, and the per-owner counts always match the rows."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import DataError, IntegrityError

from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import Conflict
from strongroom.services import credentials as credential_events
from strongroom.services.accounts import Principal, hash_token
from strongroom.services.audit import Event, Verdict
from strongroom.store import Tx
from strongroom.store import db as db_module
from strongroom.store.models import ApiToken, Credential, CredentialCount, utcnow
from strongroom.store.repositories.audit import Entry, append_in
from strongroom.store.repositories.credentials import NameTaken
from strongroom.store.repositories.sharing import OWNER
from tests.support import backend_database, fetch_credential, make_credential, new_principal, secrets_of, until


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    with backend_database(request.param, migrated=True) as url:
        # PostgreSQL's 100 connections are shared by the whole parallel suite: 32 writer threads queue for 8
        # (each of the store's two pools 4 + 4), still many at once on every name.
        svc = Services.open(Settings(data_dir=tmp_path, database_url=url, db_pool_size=4, db_pool_overflow=4))
        yield svc
        svc.close()


def _on_the_loop(service: Services, calls: Callable[[], Iterable[Awaitable[Any]]]) -> tuple[list[Any], int | None]:
    """The outcomes (errors returned, not raised) of the awaitables `calls()` makes, run at once on the store's
    event-loop connections, and how many of them went on together (None on SQLite, which has no such
    connections: its committer takes concurrent writes in one transaction anyway)."""

    async def scenario() -> tuple[list[Any], int | None]:
        service.db.start_loop_pool(4)
        try:
            outcomes = await asyncio.gather(*calls(), return_exceptions=True)
            pool = service.db._loop_pool
            return outcomes, None if pool is None else sum(g.carried for g in pool.gathered.values())
        finally:
            service.db.stop_loop_pool()

    return asyncio.run(scenario())


def _patched_write(
    service: Services, who: Principal, credential_id: str, body: dict[str, object], revision: int | None = None
) -> tuple[int, dict[str, Any], Entry, dict[str, Any]]:
    """`aswap`'s arguments for a PATCH of `body` as the service builds them: the revision read (or `revision`), the
    patched row, its audit entry and the row as read."""
    found = service.credentials.credentials.current(credential_id, who.user_id)
    _, read_revision, row = service.credentials._patched(found, credential_id, body, None)
    assert found is not None
    return (revision or read_revision, row, credential_events._update_event(who, row, body), found[0])


def _user(svc: Services, name: str) -> Principal:
    svc.accounts.create_user(name)
    return svc.accounts.authenticate(svc.accounts.create_token(name)[1])


async def _queued(service: Services, writes: int) -> None:
    """Wait until `writes` writes wait in the SQLite committer's queue (behind the one it is running)."""
    for _ in range(1000):
        if service.db.queued_writes() >= writes:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{writes} writes were not queued in 10 s")


def _in_threads(n: int, work: object) -> None:
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_creates_with_clashing_names(service: Services) -> None:
    """32 writers, every name wanted by 4 of them: exactly one wins each name, the rest get 409."""
    who = _user(service, "alice")
    wins: Counter[str] = Counter()
    clashes: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for i in range(25):
            name = f"n{(k % 8)}-{i}"
            try:
                make_credential(service, who, {"name": name, "user": "u", "password": f"p{k}-{i}"})
                with lock:
                    wins[name] += 1
            except Conflict:
                with lock:
                    clashes[name] += 1
            except BaseException as exc:  # any other outcome fails the test below
                errors.append(exc)

    _in_threads(32, work)
    assert errors == []
    assert set(wins.values()) == {1} and len(wins) == 8 * 25
    assert set(clashes.values()) == {3}
    page = service.credentials.list(who, offset=0, limit=1)
    assert page.total == 200
    with service.db.read() as s:
        rows = s.scalars(select(Credential).where(Credential.owner_id == who.user_id)).all()
        counted = s.scalar(select(func.sum(CredentialCount.n)).where(CredentialCount.owner_id == who.user_id))
    assert len(rows) == 200 == counted
    with service.db.read() as s:
        shards = s.scalar(
            select(func.count(func.distinct(CredentialCount.shard))).where(CredentialCount.owner_id == who.user_id)
        )
    # PostgreSQL: concurrent writers add to their own connection's shard instead of queueing on one row.
    assert shards == 1 if service.db.is_sqlite else shards > 1
    for row in rows:  # every acknowledged write decrypts, and holds one of the values its writers sent
        assert secrets_of(service, row)["password"].startswith("p")


def test_a_failing_write_rolls_back_alone(service: Services) -> None:
    """A write that changes a row and then fails leaves no trace; the writes around it commit."""
    who = _user(service, "bob")
    victim = make_credential(service, who, {"name": "victim", "user": "u", "password": "p"})
    rename = update(Credential).where(Credential.id == bindparam("target")).values(name=bindparam("new_name"))
    barrier = threading.Barrier(3)

    def rename_then_fail(tx: Tx) -> None:
        assert tx.run(rename, {"target": victim["credentialId"], "new_name": "half-done"}) == 1
        raise RuntimeError("fails after its first change")

    outcomes: dict[int, object] = {}

    def work(k: int) -> None:
        barrier.wait()
        try:
            if k == 1:
                service.db.transact(rename_then_fail)
            else:
                outcomes[k] = make_credential(service, who, {"name": f"ok{k}", "user": "u", "password": "p"})
        except RuntimeError as exc:
            outcomes[k] = exc

    _in_threads(3, work)
    assert isinstance(outcomes[1], RuntimeError)
    assert fetch_credential(service, who, victim["credentialId"])["name"] == "victim"
    names = {c["name"] for c in service.credentials.list(who, offset=0, limit=10).credentials()}
    assert names == {"victim", "ok0", "ok2"}


def test_update_and_delete_keep_counts(service: Services) -> None:
    who = _user(service, "carol")
    made = [make_credential(service, who, {"name": f"c{i}", "user": "u", "password": "p"}) for i in range(6)]
    make_credential(
        service, who, {"name": "s3", "credentialType": "s3", "awsAccessKeyId": "a", "awsSecretAccessKey": "b"}
    )
    for c in made[:3]:
        service.credentials.delete(who, c["credentialId"])
    service.credentials.update(who, made[3]["credentialId"], {"name": "renamed", "password": "new"})
    with pytest.raises(Conflict):
        service.credentials.update(who, made[4]["credentialId"], {"name": "renamed"})
    assert service.credentials.list(who, offset=0, limit=1).total == 4
    assert service.credentials.list(who, offset=0, limit=1, types_filter=["s3"]).total == 1
    with service.db.read() as s:
        row = s.get(Credential, made[3]["credentialId"])
        assert row is not None and secrets_of(service, row)["password"] == "new"


def test_pages_walk_every_credential_once_in_order(service: Services) -> None:
    """A page is joined into one string by the database: its order must still be (created_at, id), ties
    included, in both directions and with a type filter, and the pages together must hold every credential."""
    who = _user(service, "pager")
    other = _user(service, "other")
    make_credential(service, other, {"name": "not mine", "user": "u", "password": "p"})
    for i in range(120):
        body = {"name": f"c{i:03}", "user": "u", "password": "p"}
        if i % 3 == 0:
            body = {"name": f"c{i:03}", "credentialType": "s3", "awsAccessKeyId": "a", "awsSecretAccessKey": "s"}
        make_credential(service, who, body)
    with service.db.write() as s:  # three creation instants only: most of the order is decided by the id
        ids = list(s.scalars(select(Credential.id).where(Credential.owner_id == who.user_id)))
        for n, cid in enumerate(ids):
            stamp = datetime(2026, 1, 1 + n % 3, tzinfo=UTC)
            s.execute(update(Credential).where(Credential.id == cid).values(created_at=stamp))
        rows = s.execute(
            select(Credential.id, Credential.credential_type).where(Credential.owner_id == who.user_id)
        ).all()
        ordered = [
            r[0]
            for r in s.execute(
                select(Credential.id)
                .where(Credential.owner_id == who.user_id)
                .order_by(Credential.created_at, Credential.id)
            )
        ]
    s3 = {cid for cid, kind in rows if kind == "s3"}
    for order_by, expected in (("creationDate", ordered), ("-creationDate", ordered[::-1])):
        for wanted, kinds in ((None, expected), (["s3"], [c for c in expected if c in s3])):
            seen: list[str] = []
            for offset in range(0, 130, 17):
                page = service.credentials.list(who, offset=offset, limit=17, types_filter=wanted, order_by=order_by)
                assert page.total == len(kinds)
                seen += [item["credentialId"] for item in page.credentials()]
            assert seen == kinds, (order_by, wanted)


def test_writes_awaited_on_the_event_loop_commit_together_and_fail_alone(service: Services) -> None:
    """`atransact` (the server's path for creates and updates): concurrent writes from one loop, one of them
    failing after its change, each get their own outcome; the failed one leaves no trace."""
    who = _user(service, "carol")
    victim = make_credential(service, who, {"name": "victim", "user": "u", "password": "p"})
    rename = update(Credential).where(Credential.id == bindparam("target")).values(name=bindparam("new_name"))

    def rename_then_fail(tx: Tx) -> None:
        tx.run(rename, {"target": victim["credentialId"], "new_name": "half-done"})
        raise RuntimeError("fails after its first change")

    async def scenario() -> list[object]:
        creates = [service.credentials.acreate(who, {"name": f"a{k}", "user": "u", "password": "p"}) for k in range(8)]
        return await asyncio.gather(service.db.atransact(rename_then_fail), *creates, return_exceptions=True)

    failed, *created = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError)
    assert all(isinstance(c, str) and json.loads(c)["role"] == "OWNER" for c in created)
    assert fetch_credential(service, who, victim["credentialId"])["name"] == "victim"
    names = {c["name"] for c in service.credentials.list(who, offset=0, limit=20).credentials()}
    assert names == {"victim", *(f"a{k}" for k in range(8))}


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # the committer is SQLite's
def test_a_caller_cancelled_while_its_write_waits_does_not_fail_the_rest_of_its_batch(service: Services) -> None:
    """SQLite's committer answers a batch after its COMMIT: a waiter cancelled meanwhile (its request went away)
    is skipped, and the other writes of the same batch still get their own outcome; the committer goes on."""
    who = _user(service, "dave")
    held, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:  # keeps the committer busy so the next writes queue up as one batch
        held.set()
        release.wait(10)

    async def scenario() -> tuple[object, object]:
        blocker = asyncio.ensure_future(service.db.atransact(hold))
        await asyncio.to_thread(held.wait, 10)
        cancelled = asyncio.ensure_future(
            service.credentials.acreate(who, {"name": "gone", "user": "u", "password": "p"})
        )
        kept = asyncio.ensure_future(service.credentials.acreate(who, {"name": "kept", "user": "u", "password": "p"}))
        await _queued(service, 2)  # both are queued behind `hold`
        cancelled.cancel()
        release.set()
        await blocker
        outcome = await asyncio.gather(cancelled, kept, return_exceptions=True)
        return outcome[0], outcome[1]

    cancelled, kept = asyncio.run(scenario())
    assert isinstance(cancelled, asyncio.CancelledError)
    assert isinstance(kept, str) and json.loads(kept)["name"] == "kept"
    later = make_credential(service, who, {"name": "later", "user": "u", "password": "p"})
    assert later["name"] == "later"
    names = {c["name"] for c in service.credentials.list(who, offset=0, limit=20).credentials()}
    assert {"kept", "later"} <= names  # the cancelled write may have committed: its caller only stopped waiting


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # the committer is SQLite's
def test_a_batch_keeps_one_audit_chain_through_writes_that_fail(service: Services) -> None:
    """SQLite's committer keeps the audit chain's head in memory through a batch and writes it once: writes
    that fail at their first change (a taken name, without a savepoint) or later (with one) leave no record,
    and the chain that results verifies, record for record."""
    who = _user(service, "erin")
    make_credential(service, who, {"name": "taken", "user": "u", "password": "p"})
    before = service.audit.verify().checked
    held, release = threading.Event(), threading.Event()
    rename = update(Credential).values(description="half-done")

    def hold(tx: Tx) -> None:  # keeps the committer busy so the writes below queue up as one batch
        held.set()
        release.wait(10)

    def audited_then_fail(tx: Tx) -> None:
        tx.run(rename, {})
        append_in(tx, Event("credential.update", 200, who).entry(), postgres=False)
        raise RuntimeError("fails after its change and its record")

    async def scenario() -> list[object]:
        blocker = asyncio.ensure_future(service.db.atransact(hold))
        await asyncio.to_thread(held.wait, 10)
        writes = [service.credentials.acreate(who, {"name": f"b{k}", "user": "u", "password": "p"}) for k in range(3)]
        writes.insert(1, service.credentials.acreate(who, {"name": "taken", "user": "u", "password": "p"}))
        writes.insert(3, service.db.atransact(audited_then_fail))
        pending = [asyncio.ensure_future(w) for w in writes]
        await _queued(service, 5)  # all queued behind `hold`: one batch
        release.set()
        await blocker
        return await asyncio.gather(*pending, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[1], Conflict) and isinstance(outcomes[3], RuntimeError)
    assert all(isinstance(outcomes[k], str) for k in (0, 2, 4))
    verdict = service.audit.verify()
    assert verdict.first_bad is None
    assert verdict.checked == before + 3  # the three creates; neither failure left a record
    assert service.credentials.list(who, offset=0, limit=10).total == 4
    assert make_credential(service, who, {"name": "after", "user": "u", "password": "p"})["name"] == "after"
    assert service.audit.verify() == Verdict(before + 4, None)


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # the committer is SQLite's
def test_a_write_without_savepoint_that_fails_after_its_change_fails_its_whole_batch(service: Services) -> None:
    """A `one_change` write promises that only its first change can fail; should a later step fail anyway,
    there is no savepoint to undo the change, so the whole batch rolls back and every write in it fails:
    nothing half-written is committed, and nothing unacknowledged either."""
    who = _user(service, "frank")
    victim = make_credential(service, who, {"name": "victim", "user": "u", "password": "p"})
    rename = update(Credential).where(Credential.id == bindparam("target")).values(name=bindparam("new_name"))
    held, release = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        held.set()
        release.wait(10)

    def rename_then_fail(tx: Tx) -> None:
        tx.run(rename, {"target": victim["credentialId"], "new_name": "half-done"})
        raise RuntimeError("the disk, say")

    async def scenario() -> list[object]:
        blocker = asyncio.ensure_future(service.db.atransact(hold))
        await asyncio.to_thread(held.wait, 10)
        first = asyncio.ensure_future(service.credentials.acreate(who, {"name": "c1", "user": "u", "password": "p"}))
        broken = asyncio.ensure_future(service.db.atransact(rename_then_fail, one_change=True))
        last = asyncio.ensure_future(service.credentials.acreate(who, {"name": "c2", "user": "u", "password": "p"}))
        await _queued(service, 3)  # one batch
        release.set()
        await blocker
        return await asyncio.gather(first, broken, last, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
    assert fetch_credential(service, who, victim["credentialId"])["name"] == "victim"
    names = {c["name"] for c in service.credentials.list(who, offset=0, limit=10).credentials()}
    assert names == {"victim"}
    assert service.audit.verify().first_bad is None
    assert make_credential(service, who, {"name": "c1", "user": "u", "password": "p"})["name"] == "c1"


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # the committer is SQLite's
def test_an_event_loops_concurrent_writes_share_one_batch(service: Services) -> None:
    """Writes that an event loop starts in one iteration reach the committer together and commit in one
    transaction (one fsync), even though each update reads its row first (a read lets the committer run)."""
    who = _user(service, "gina")
    ids = [
        make_credential(service, who, {"name": f"c{i}", "user": "u", "password": "p"})["credentialId"]
        for i in range(20)
    ]

    async def scenario() -> list[tuple[str, int]]:
        return await asyncio.gather(*(service.credentials.aupdate(who, i, {"password": "new"}) for i in ids))

    before = service.db.batches
    assert [revision for _, revision in asyncio.run(scenario())] == [2] * 20
    assert service.db.batches - before == 1
    assert {service.credentials.secrets(who, i)["password"] for i in ids} == {"new"}


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # the committer and its upkeeps are SQLite's
def test_a_failing_upkeep_never_fails_the_writes_it_follows(
    service: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite: the committer's upkeeps (`Database.keep_up`) run after a batch is answered; one that fails is logged
    by its error class only, and the writes before and after it commit as if it had not run."""
    monkeypatch.setattr(db_module, "UPKEEP_IDLE", 0.05)  # and when idle: never a busy loop over the failure
    calls: list[bool] = []

    def failing(conn: sqlite3.Connection, idle: bool) -> bool:
        calls.append(idle)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO credential_names_indexed (one, through) VALUES (1, 0)")  # taken: IntegrityError
        return False

    service.db.keep_up("failing", failing)
    alice = _user(service, "alice")
    made = [make_credential(service, alice, {"name": f"after-{n}", "user": "u", "password": "p"}) for n in range(3)]
    until(lambda: True in calls, 10, "the upkeep's idle call")
    time.sleep(0.3)
    assert len(calls) < 20, calls  # once per batch and once per idle pause, not in a loop
    names = [fetch_credential(service, alice, m["credentialId"])["name"] for m in made]
    assert names == ["after-0", "after-1", "after-2"]
    assert "store upkeep failing failed: IntegrityError SQLITE_CONSTRAINT_PRIMARYKEY" in caplog.text


@pytest.mark.parametrize("service", ["postgres"], indirect=True)  # the event loop's own connections are PostgreSQL's
def test_creates_on_the_event_loop_go_together_and_keep_their_own_outcomes(service: Services) -> None:
    """Creates that arrive on the loop while two are in flight go on as one statement: each still gets its own
    outcome (a name taken earlier or twice among them: 409 for all but the first; a token revoked by another
    process: not written; an owner that no longer exists or a value too long: its own error, the others
    written), and the rows, the counts and the audit chains are what one create at a time would have left."""
    who = _user(service, "hana")
    raw = service.accounts.create_token("hana")[1]
    revoked = service.accounts.create_token("hana")[1]
    make_credential(service, who, {"name": "taken", "user": "u", "password": "pw-taken"})
    repo = service.credentials.credentials
    before = service.audit.verify().checked

    def prepared(name: str, owner: str | None = None) -> tuple[dict[str, object], object]:
        row = service.credentials._new(who, {"name": name, "user": "u", "password": f"pw-{name}"})
        if owner is not None:
            row["owner_id"] = owner
        return row, credential_events._event("credential.create", 201, who, row)

    names = [f"n{k}" for k in range(30)] + [f"n{k}" for k in range(5)] + ["taken"]
    rows = [prepared(name) for name in names]
    stray = prepared("stray", owner="u-no-such-user")
    unauthorised = prepared("unauthorised")
    overlong = prepared("overlong")
    overlong[0]["credential_type"] = "t" * 100  # longer than its column: a value error, this write's alone
    with service.db.write() as s:  # revoked by another process: this one may still hold it as valid
        s.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(revoked)).values(revoked_at=utcnow()))

    def calls() -> list[Awaitable[bool]]:
        made = [repo.ainsert_if_token(row, hash_token(raw), utcnow(), audit) for row, audit in rows]
        made.append(repo.ainsert(*stray))
        made.append(repo.ainsert_if_token(unauthorised[0], hash_token(revoked), utcnow(), unauthorised[1]))
        made.append(repo.ainsert(*overlong))
        return made

    outcomes, carried = _on_the_loop(service, calls)
    assert carried is not None and carried > 10  # most of the 39 went on together
    assert outcomes[:30] == [True] * 30
    assert all(isinstance(o, NameTaken) for o in outcomes[30:36]), outcomes[30:36]
    assert isinstance(outcomes[36], IntegrityError) and not isinstance(outcomes[36], NameTaken)
    assert outcomes[37] is False
    assert isinstance(outcomes[38], DataError)
    listed = service.credentials.list(who, offset=0, limit=100)
    assert listed.total == 31 and {c["name"] for c in listed.credentials()} == {"taken", *names[:30]}
    with service.db.read() as s:
        counted = s.scalar(select(func.sum(CredentialCount.n)).where(CredentialCount.owner_id == who.user_id))
    assert counted == 31
    for item in listed.credentials():  # each row holds its own secret, sealed for its own id
        assert service.credentials.secrets(who, item["credentialId"])["password"] == f"pw-{item['name']}"
    verdict = service.audit.verify()
    assert verdict.first_bad is None and verdict.checked == before + 30
    records, _ = service.audit.list(None, action="credential.create", limit=100)
    assert sorted(r["target"]["name"] for r in records) == sorted(["taken", *names[:30]])  # each name in its record


@pytest.mark.parametrize("service", ["postgres"], indirect=True)  # the event loop's own connections are PostgreSQL's
def test_updates_on_the_event_loop_go_together_and_keep_their_own_outcomes(service: Services) -> None:
    """Updates that arrive on the loop while two are in flight go on as one statement, each a compare-and-swap
    of its own: of two read at one revision one is written; one read at an older revision is not; one whose
    token another process revoked is not; a rename to a taken name is refused alone. Rows, secrets and the
    audit chains are what one update at a time would have left."""
    who = _user(service, "iris")
    raw = service.accounts.create_token("iris")[1]
    revoked = service.accounts.create_token("iris")[1]
    ids = [
        make_credential(service, who, {"name": f"c{k}", "user": "u", "password": "p"})["credentialId"]
        for k in range(24)
    ]
    stale_id = ids[23]
    service.credentials.update(who, stale_id, {"password": "moved on"})  # now at revision 2
    before = service.audit.verify().checked
    svc = service.credentials

    def patched(credential_id: str, body: dict[str, object], revision: int | None = None) -> tuple[Any, ...]:
        return _patched_write(service, who, credential_id, body, revision)

    writes = [patched(i, {"password": f"new-{i}"}) for i in ids[:20]]
    writes.append(patched(ids[0], {"password": "rival"}))  # read at revision 1 like writes[0]: one of them wins
    writes.append(patched(stale_id, {"password": "too late"}, revision=1))  # read before it moved on
    writes.append(patched(ids[21], {"name": "c22"}))  # a name c22 holds
    unauthorised = patched(ids[22], {"password": "unauthorised"})
    with service.db.write() as s:
        s.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(revoked)).values(revoked_at=utcnow()))

    def calls() -> list[Awaitable[bool]]:
        now = utcnow()
        made = [svc.credentials.aswap_if_token(*w[:3], hash_token(raw), who.user_id, now, w[3]) for w in writes]
        u = unauthorised
        made.append(svc.credentials.aswap_if_token(*u[:3], hash_token(revoked), who.user_id, now, u[3]))
        return made

    outcomes, carried = _on_the_loop(service, calls)
    assert carried is not None and carried > 10
    assert outcomes[1:20] == [True] * 19
    assert sorted([outcomes[0], outcomes[20]]) == [False, True]  # exactly one of the two rivals
    assert outcomes[21] is False and outcomes[23] is False
    assert isinstance(outcomes[22], NameTaken)
    expected = {i: f"new-{i}" for i in ids[1:20]} | {stale_id: "moved on", ids[22]: "p", ids[21]: "p"}
    expected[ids[0]] = f"new-{ids[0]}" if outcomes[0] is True else "rival"
    for credential_id, password in expected.items():
        assert svc.secrets(who, credential_id)["password"] == password
    assert fetch_credential(service, who, ids[21])["name"] == "c21"
    verdict = service.audit.verify()
    assert verdict.first_bad is None and verdict.checked == before + 20


@pytest.mark.parametrize("service", ["postgres"], indirect=True)
def test_a_statement_of_several_writes_ended_by_a_deadlock_is_tried_again_write_by_write(service: Services) -> None:
    """PostgreSQL ends one side of a deadlock (SQLSTATE 40P01): the writes that statement carried each go again
    alone and are written, instead of all failing with an error none of them caused. (The deadlock is raised by
    the statement itself here: two real ones deadlock only by timing.)"""
    with service.db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE together_probe (n integer PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE FUNCTION together_deadlock() RETURNS SETOF boolean LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$"
        )
    single = text("INSERT INTO together_probe (n) VALUES (:n) RETURNING n")
    together = db_module.Together(
        one=lambda params: single,
        many=text(
            "SELECT together_deadlock() FROM json_to_recordset(CAST(:given AS json)) AS given(n integer, ord bigint)"
        ),
        fields=("n",),
        outcomes=lambda rows, n: [AssertionError("the statement of several cannot succeed")] * n,
    )

    outcomes, carried = _on_the_loop(
        service, lambda: [service.db.awrite_together(together, {"n": n}) for n in range(12)]
    )
    assert carried is not None and carried > 0
    assert outcomes == [[(n,)] for n in range(12)]


@pytest.mark.parametrize("service", ["postgres"], indirect=True)  # the event loop's own connections are PostgreSQL's
def test_reads_by_token_on_the_event_loop_go_together_and_each_gets_its_own_answer(service: Services) -> None:
    """GETs with a token that arrive on the loop while two are in flight go on as one statement: each gets its own
    credential and its own token's scopes and role (none for another's credential not shared with it), or
    nothing (an id that does not exist, a token revoked by another process)."""
    owner = _user(service, "jo")
    _user(service, "kim")
    owner_token, reader_token = service.accounts.create_token("jo")[1], service.accounts.create_token("kim")[1]
    revoked = service.accounts.create_token("jo")[1]
    made = [make_credential(service, owner, {"name": f"g{k}", "user": "u", "password": "p"}) for k in range(20)]
    ids = [m["credentialId"] for m in made]
    service.sharing.update_roles(
        owner, ids[0], {"operation": "updateRoles", "roles": [{"username": "kim", "role": "CONSUMER"}]}
    )
    with service.db.write() as s:
        s.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(revoked)).values(revoked_at=utcnow()))
    repo = service.credentials.credentials
    asked = [(owner_token, i) for i in ids] + [(reader_token, ids[0]), (reader_token, ids[1])]
    asked += [(owner_token, "0" * 24), (revoked, ids[2])]

    got, carried = _on_the_loop(service, lambda: [repo.aget_for_token(hash_token(t), i) for t, i in asked])
    assert carried is not None and carried > 10
    for (_, credential_id), found in zip(asked[:20], got[:20], strict=True):
        assert found is not None and json.loads(found[0])["credentialId"] == credential_id and found[1] == 1
        assert found[3] == OWNER
    shared = got[20]
    assert shared is not None and json.loads(shared[0])["credentialId"] == ids[0] and shared[3] is not None
    assert shared[3] < OWNER
    unshared = got[21]  # the row and the token, with no role: the caller refuses it (404), as for one read alone
    assert unshared is not None and json.loads(unshared[0])["credentialId"] == ids[1] and unshared[3] is None
    assert got[22:] == [None, None]


@pytest.mark.parametrize("patch", [{"description": "after"}, {"password": "changed"}], ids=["metadata", "secret"])
def test_an_update_read_before_a_rotation_rewrapped_the_row_never_undoes_it(
    service: Services, patch: dict[str, str]
) -> None:
    """A PATCH reads the row, a rotation re-wraps that row's data key under the new version, then the PATCH
    writes: the row must still open and hold the new version (the PATCH goes again from a fresh read). It did
    not: the compare-and-swap was on the revision alone, which a re-wrap leaves as it is, so the PATCH wrote the
    data key wrapped under the old version back (under the new version's number on SQLite, which then opened
    under neither; under the old one on PostgreSQL, which a retirement of the old version would strand)."""
    who = new_principal(service)
    made = make_credential(service, who, {"name": "rotated", "credentialType": "basic", "user": "u", "password": "p"})
    cid = made["credentialId"]
    real_current = service.credentials.credentials.current
    reads: list[int] = []

    def current_then_rotate(credential_id: str, user_id: str) -> tuple[dict[str, Any], int | None] | None:
        found = real_current(credential_id, user_id)
        reads.append(1)
        if len(reads) == 1:  # between this PATCH's read and its write
            service.keys.start_rotation()
            assert service.keys.rewrap(settle=0)["left"] == 0
        return found

    service.credentials.credentials.current = current_then_rotate  # type: ignore[method-assign]
    try:
        service.credentials.update(who, cid, patch)
    finally:
        del service.credentials.credentials.current
    assert len(reads) == 2  # the first write was refused, the second read found the re-wrapped row
    with service.db.read() as s:
        row = s.get(Credential, cid)
        assert row is not None and row.key_version == service.keys.active_version() == 2
        assert secrets_of(service, row) == {"user": "u", "password": patch.get("password", "p")}
    shown = fetch_credential(service, who, cid)
    assert shown.get("description", "") == patch.get("description", "")


def test_updates_that_go_together_refuse_one_read_under_another_key_version(service: Services) -> None:
    """In a statement of several updates too, an update read under a master-key version the row is no longer under
    (a rotation re-wrapped it since) is not written, and the others are."""
    who = new_principal(service)
    ids = [
        make_credential(service, who, {"name": f"k{k}", "user": "u", "password": "p"})["credentialId"] for k in range(6)
    ]
    writes = [_patched_write(service, who, credential_id, {"description": "after"}) for credential_id in ids]
    revision, row, event, read = writes[-1]  # the last waits for the first two, so it goes with others
    writes[-1] = (revision, row, event, {**read, "key_version": read["key_version"] + 1})

    outcomes, carried = _on_the_loop(service, lambda: [service.credentials.credentials.aswap(*w) for w in writes])
    assert outcomes == [True] * 5 + [False]
    assert carried is None or carried >= 2
    assert [fetch_credential(service, who, i).get("description", "") for i in ids] == ["after"] * 5 + [""]


def _token_holder(service: Services, name: str) -> tuple[Principal, str, str]:
    """A new user, a token of theirs this process has authenticated (so it takes the remembered path,
    `aupdate_for_token`) and its hash."""
    service.accounts.create_user(name)
    raw = service.accounts.create_token(name)[1]
    return service.accounts.authenticate(raw), raw, hash_token(raw)


def _remembered_updates(service: Services, token_hash: str, credential_id: str, *bodies: dict[str, str]) -> list[Any]:
    """`aupdate_for_token` of each body in turn on one event loop: each answer, (API JSON, revision) or None."""

    async def updates() -> list[Any]:
        return [await service.credentials.aupdate_for_token(token_hash, credential_id, body) for body in bodies]

    return _on_the_loop(service, lambda: [updates()])[0][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("elsewhere", "mine"),
    [({"description": "elsewhere"}, {"password": "mine"}), ({"password": "elsewhere"}, {"user": "mine"}), (None, {})],
    ids=["metadata-elsewhere", "secret-elsewhere", "rotation"],
)
def test_an_owners_update_from_the_row_it_last_wrote_never_undoes_a_change_made_since(
    service: Services, tmp_path: Path, elsewhere: dict[str, str] | None, mine: dict[str, str]
) -> None:
    """An owner's update by a remembered token starts from the row as this process last wrote it (SQLite: no read).
    A change made since by another process, or a rotation's re-wrap, must survive the next update, which goes
    again from a fresh read: the compare-and-swap on the revision and key version refuses the guess."""
    who, token, token_hash = _token_holder(service, "kept-owner")
    cid = make_credential(service, who, {"name": "kept", "user": "u", "password": "p"})["credentialId"]
    first = _remembered_updates(service, token_hash, cid, {"description": "first"})[0]
    assert first is not None and first[1] == 2
    if elsewhere is None:
        service.keys.start_rotation()
        assert service.keys.rewrap(settle=0)["left"] == 0
    else:  # another process of the same store (a second server, the CLI)
        url = None if service.db.is_sqlite else service.db.engine.url.render_as_string(hide_password=False)
        other = Services.open(Settings(data_dir=tmp_path, database_url=url))
        try:
            other.credentials.update(other.accounts.authenticate(token), cid, elsewhere)
        finally:
            other.close()
    body = {"description": "mine", **mine} if elsewhere is None else mine
    second = _remembered_updates(service, token_hash, cid, body)[0]
    assert second is not None and second[1] == (3 if elsewhere is None else 4)
    expected = {"user": "u", "password": "p", "description": "first", **(elsewhere or {}), **body}
    assert fetch_credential(service, who, cid)["description"] == expected["description"]
    with service.db.read() as s:
        row = s.get(Credential, cid)
        assert row is not None and row.key_version == service.keys.active_version()
        assert secrets_of(service, row) == {"user": expected["user"], "password": expected["password"]}


def test_an_editors_update_never_starts_from_a_row_kept_after_the_role_was_taken_away(service: Services) -> None:
    """Only an owner's update starts from the row this process last wrote: the write checks the revision, the
    key version and the token, not a shared role, so an editor whose role was taken away since must be refused."""
    owner = _token_holder(service, "kept-sharer")[0]
    token_hash = _token_holder(service, "kept-editor")[2]
    cid = make_credential(service, owner, {"name": "shared", "user": "u", "password": "p"})["credentialId"]
    roles = {"operation": "updateRoles", "roles": [{"username": "kept-editor", "role": "EDITOR"}]}
    service.sharing.update_roles(owner, cid, roles)
    assert _remembered_updates(service, token_hash, cid, {"description": "edited"})[0] is not None
    roles["roles"] = [{"username": "kept-editor", "role": "NO_ROLE"}]
    service.sharing.update_roles(owner, cid, roles)
    assert _remembered_updates(service, token_hash, cid, {"description": "after"}) == [None]
    assert fetch_credential(service, owner, cid)["description"] == "edited"


def test_an_owners_updates_keep_the_row_they_wrote_and_a_delete_forgets_it(service: Services) -> None:
    """SQLite keeps the row an owner's update wrote (its revision, for the next update to compare), only for its
    owner and unless it is large; PostgreSQL, whose servers are many, keeps none; a delete forgets it."""
    who, _, token_hash = _token_holder(service, "kept-deleter")
    cid = make_credential(service, who, {"name": "gone", "user": "u", "password": "p"})["credentialId"]
    assert _remembered_updates(service, token_hash, cid, {"description": "a"}, {"description": "b"})[1][1] == 3
    repository = service.credentials.credentials
    kept = repository.last_written(cid, who.user_id)
    if service.db.is_sqlite:
        assert kept is not None and kept["revision"] == 3 and kept["description"] == "b"
        assert repository.last_written(cid, "someone-else") is None
    else:
        assert kept is None
    big = {"user": "u" * 32768, "password": "p" * 32768}  # a row of more than 64 KiB is not kept
    assert _remembered_updates(service, token_hash, cid, big)[0][1] == 4
    assert repository.last_written(cid, who.user_id) is None
    assert _remembered_updates(service, token_hash, cid, {"user": "u", "password": "small again"})[0][1] == 5
    assert (repository.last_written(cid, who.user_id) is not None) == service.db.is_sqlite
    service.credentials.delete(who, cid)
    assert repository.last_written(cid, who.user_id) is None
    assert _remembered_updates(service, token_hash, cid, {"description": "d"}) == [None]
