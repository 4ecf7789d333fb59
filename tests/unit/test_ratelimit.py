"""The bad-token limiter itself, on a fake clock (tests/e2e/test_abuse.py drives it through a server)."""

from __future__ import annotations

from strongroom.api.ratelimit import AuthFailureLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_sliding_window() -> None:
    """LIMIT failures pass, the next is limited with the seconds until the oldest leaves the window; attempts
    while limited keep the client limited; once the window has passed it is a plain failure again."""
    clock = FakeClock()
    limiter = AuthFailureLimiter(3, 10, first_wait=100, clock=clock)
    assert [limiter.failed("a") for _ in range(3)] == [None, None, None]
    assert limiter.failed("a") == 10
    clock.now += 4
    assert limiter.failed("a") == 6  # the oldest of the last three is 4 s old
    assert limiter.failed("b") is None  # another client is not affected
    clock.now += 10.5
    assert limiter.failed("a") is None
    limiter_off = AuthFailureLimiter(0, 10, clock=clock)
    assert all(limiter_off.failed("a") is None for _ in range(100))


def test_limiter_memory_is_bounded() -> None:
    """At most `max_clients` addresses are tracked; the least recently failing one is forgotten first."""
    clock = FakeClock()
    limiter = AuthFailureLimiter(2, 60, max_clients=100, clock=clock)
    limiter.failed("attacker")
    limiter.failed("attacker")
    assert limiter.failed("attacker") is not None
    for n in range(10_000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter._clients) == 100
    assert all(len(c.failures) <= 2 for c in limiter._clients.values())
    assert limiter.failed("attacker") is None  # forgotten: memory stayed bounded
