"""`pgloop.Gathered`: writes that arrive while its lanes are busy wait and go on together, each with its own
outcome (no database: `one` and `many` are plain coroutines here, whose calls the tests record)."""

from __future__ import annotations

import asyncio

import pytest

from strongroom.store.pgloop import Gathered


class Recorder:
    """`one` and `many` that record what they were given and wait until released."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()

    async def one(self, item: int) -> str:
        self.calls.append([item])
        await self.release.wait()
        if item < 0:
            raise ValueError(f"bad {item}")
        return f"one {item}"

    async def many(self, items: list[int]) -> list[str | BaseException]:
        self.calls.append(items)
        await self.release.wait()
        return [ValueError(f"bad {i}") if i < 0 else f"many {i}" for i in items]


def test_writes_beyond_the_lanes_wait_and_go_on_together_in_order() -> None:
    async def scenario() -> tuple[list[object], list[list[int]], int]:
        rec = Recorder()
        gathered = Gathered(rec.one, rec.many, lanes=2, most=3)
        calls = [asyncio.ensure_future(gathered(i)) for i in [1, 2, 3, -4, 5, 6, 7]]
        await asyncio.sleep(0)
        rec.release.set()
        return await asyncio.gather(*calls, return_exceptions=True), rec.calls, gathered.carried

    outcomes, calls, carried = asyncio.run(scenario())
    assert calls == [[1], [2], [3, -4, 5], [6, 7]]  # two alone at once, then at most three together, in order
    assert outcomes[:3] == ["one 1", "one 2", "many 3"]
    assert isinstance(outcomes[3], ValueError) and str(outcomes[3]) == "bad -4"  # its own error, not the others'
    assert outcomes[4:] == ["many 5", "many 6", "many 7"]
    assert carried == 5


def test_a_single_waiting_write_goes_alone_and_keeps_its_error() -> None:
    async def scenario() -> tuple[list[object], list[list[int]]]:
        rec = Recorder()
        gathered = Gathered(rec.one, rec.many, lanes=1)
        calls = [asyncio.ensure_future(gathered(i)) for i in [1, -2]]
        await asyncio.sleep(0)
        rec.release.set()
        return await asyncio.gather(*calls, return_exceptions=True), rec.calls

    outcomes, calls = asyncio.run(scenario())
    assert calls == [[1], [-2]]
    assert outcomes[0] == "one 1" and isinstance(outcomes[1], ValueError)


def test_a_failure_of_many_itself_reaches_every_write_it_carried_and_the_next_still_go() -> None:
    async def scenario() -> list[object]:
        rec = Recorder()
        failures = iter([ConnectionError("lost")])

        async def many(items: list[int]) -> list[str | BaseException]:
            if (failure := next(failures, None)) is not None:
                raise failure
            return await rec.many(items)

        gathered = Gathered(rec.one, many, lanes=1)
        first = [asyncio.ensure_future(gathered(i)) for i in [1, 2, 3]]
        await asyncio.sleep(0)
        rec.release.set()
        done = await asyncio.gather(*first, return_exceptions=True)
        rec.release.clear()
        later = [asyncio.ensure_future(gathered(i)) for i in [4, 5, 6]]
        await asyncio.sleep(0)
        rec.release.set()
        return [*done, *await asyncio.gather(*later, return_exceptions=True)]

    outcomes = asyncio.run(scenario())
    assert outcomes[0] == "one 1"
    assert all(isinstance(o, ConnectionError) for o in outcomes[1:3])
    assert outcomes[3:] == ["one 4", "many 5", "many 6"]


def test_a_write_cancelled_while_it_waits_is_never_sent() -> None:
    async def scenario() -> tuple[list[object], list[list[int]]]:
        rec = Recorder()
        gathered = Gathered(rec.one, rec.many, lanes=1)
        calls = [asyncio.ensure_future(gathered(i)) for i in [1, 2, 3, 4]]
        await asyncio.sleep(0)
        calls[2].cancel()
        rec.release.set()
        return await asyncio.gather(*calls, return_exceptions=True), rec.calls

    outcomes, calls = asyncio.run(scenario())
    assert calls == [[1], [2, 4]]
    assert outcomes[0] == "one 1" and outcomes[1] == "many 2" and outcomes[3] == "many 4"
    assert isinstance(outcomes[2], asyncio.CancelledError)


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_no_more_than_the_lanes_are_ever_in_flight(lanes: int) -> None:
    async def scenario() -> int:
        busy = most = 0

        async def one(item: int) -> int:
            nonlocal busy, most
            busy += 1
            most = max(most, busy)
            await asyncio.sleep(0.001 * (item % 3))
            busy -= 1
            return item

        async def many(items: list[int]) -> list[int | BaseException]:
            return [await one(i) for i in items[:1]] + items[1:]

        gathered = Gathered(one, many, lanes=lanes, most=5)
        got = await asyncio.gather(*(gathered(i) for i in range(60)))
        assert got == list(range(60))
        return most

    assert asyncio.run(scenario()) <= lanes


def test_a_statement_cancelled_as_the_loop_closes_cancels_its_callers_and_sends_nothing_more() -> None:
    async def scenario() -> tuple[list[object], list[list[int]]]:
        sent: list[list[int]] = []
        go = asyncio.Event()

        async def one(item: int) -> str:
            sent.append([item])
            await go.wait()
            return f"one {item}"

        async def many(items: list[int]) -> list[str | BaseException]:
            sent.append(items)
            await asyncio.Event().wait()  # never answers
            return []

        gathered = Gathered(one, many, lanes=1)
        first = asyncio.ensure_future(gathered(1))
        waiting = [asyncio.ensure_future(gathered(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        go.set()
        await first  # 2 and 3 now go together, and hang
        await asyncio.sleep(0)
        later = asyncio.ensure_future(gathered(4))  # waits behind them
        await asyncio.sleep(0)
        (sending,) = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "Gathered._send"]  # type: ignore[union-attr]
        sending.cancel()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        await asyncio.sleep(0.01)
        later.cancel()
        return [*outcomes, first.result()], sent

    outcomes, sent = asyncio.run(scenario())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes[:2]) and outcomes[2] == "one 1"
    assert sent == [[1], [2, 3]]  # the write that waited behind them was never sent
