"""Failed-authentication limiter: a client that keeps sending bad tokens is told to back off (429)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger("strongroom.server")


FIRST_WAIT = 2  # seconds: the first 429's Retry-After; each further failure while limited doubles it


class _Client:
    __slots__ = ("blocked", "failures", "strikes")

    def __init__(self, limit: int) -> None:
        self.failures: deque[float] = deque(maxlen=limit)
        self.blocked = False
        self.strikes = 0  # failures since the client went over the limit


class AuthFailureLimiter:
    """A sliding window of failure times per client address, in this process, with bounded memory.

    Only failures reach it: a request with a valid token never consults it, so the hot path pays nothing
    and a client address shared with an attacker (a NAT) never locks out real users. Each address keeps at
    most `limit` timestamps, and at most `max_clients` addresses are tracked (the least recently failing
    one is forgotten first), so a flood from many addresses cannot exhaust memory.

    Past the limit the wait grows with each further failure: `first_wait` seconds, then twice that, and so on,
    never more than the time until the client would be under the limit again. A mistyped token is therefore
    told to retry in seconds, not a minute, while a client that keeps failing backs off towards the window.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_clients: int = 10_000,
        first_wait: float = FIRST_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.first_wait = first_wait
        self.window = window
        self._max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._lock = threading.Lock()

    def failed(self, address: str) -> int | None:
        """Record a failed authentication; returns the seconds to wait if `address` is over its limit."""
        if self.limit <= 0:
            return None
        now = self._clock()
        with self._lock:
            client = self._clients.pop(address, None) or _Client(self.limit)
            self._clients[address] = client  # most recently failing last
            if len(self._clients) > self._max_clients:
                self._clients.popitem(last=False)
            failures = client.failures
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            over = len(failures) >= self.limit
            failures.append(now)  # attempts while over count too: a client that keeps trying stays limited
            if not over:
                client.blocked = False
                client.strikes = 0
                return None
            backoff = self.first_wait * 2 ** min(client.strikes, 32)
            client.strikes += 1
            wait = max(1, math.ceil(min(backoff, failures[0] + self.window - now)))
            if not client.blocked:
                client.blocked = True
                log.warning(
                    "client %s: over %d failed authentications in %gs, answering 429", address, self.limit, self.window
                )
        return wait
