"""A client-side rate budget that keeps the client under SmartMoving's fixed-window throttle.

The server counts requests per key in fixed 60-second windows. A token bucket refilling at
``rate`` per minute with ``capacity`` tokens can hand out at most ``capacity + rate`` tokens in
any 60 seconds, wherever the window falls, so choosing ``capacity + rate < limit`` means the
client never provokes a 429 on its own. ``for_limit`` keeps half of the headroom as slack.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

MAX_BURST = 10
_EPSILON = 1e-9


def burst_capacity(limit_per_minute: int, headroom: float) -> int:
    """The largest burst that still leaves slack under ``limit_per_minute``.

    Half of the headroom goes to the burst; the other half absorbs request latency and clock
    offset between client and server, which can shift a request into the next server window.
    """
    spare = limit_per_minute * (1.0 - headroom) / 2
    return max(1, min(MAX_BURST, math.floor(limit_per_minute * 0.1), math.floor(spare)))


class TokenBucket:
    """Thread-safe token bucket; ``clock`` and ``sleep`` are injectable for simulated time."""

    def __init__(
        self,
        rate_per_minute: float,
        capacity: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError(f"rate_per_minute must be positive, got {rate_per_minute}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.rate_per_minute = rate_per_minute
        self.capacity = capacity
        self._per_second = rate_per_minute / 60.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(capacity)
        self._updated = clock()
        self._not_before = self._updated

    @classmethod
    def for_limit(
        cls,
        limit_per_minute: int,
        headroom: float = 0.9,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> TokenBucket:
        # headroom 1 would leave no room for the burst: the bound above needs capacity + rate < limit.
        if not 0 < headroom < 1:
            raise ValueError(f"headroom must be in (0, 1), got {headroom}")
        capacity = burst_capacity(limit_per_minute, headroom)
        # Small limits round the burst up to one whole token; take that out of the rate instead.
        spare = limit_per_minute * (1.0 - headroom) / 2
        rate = min(limit_per_minute * headroom, limit_per_minute - capacity - spare)
        return cls(rate, capacity, clock=clock, sleep=sleep)

    def _refill(self, now: float) -> None:
        # A clock that steps backwards (fake clocks in tests) must not mint tokens.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.capacity), self._tokens + elapsed * self._per_second)
        self._updated = max(self._updated, now)

    def acquire(self, timeout: float | None = None) -> bool:
        """Take one token, sleeping as needed; False if that would take longer than ``timeout``."""
        give_up_at = None if timeout is None else self._clock() + timeout
        while True:
            with self._lock:
                now = self._clock()
                self._refill(now)
                # The tolerance stops float residue (0.9999999...) from asking for a wait too
                # small to move the clock, which would spin forever.
                if now >= self._not_before and self._tokens >= 1.0 - _EPSILON:
                    self._tokens -= 1.0
                    return True
                wait = max(self._not_before - now, (1.0 - self._tokens) / self._per_second)
            if give_up_at is not None and now + wait > give_up_at:
                return False
            # Sleep outside the lock so other threads can see a pause or take a refilled token.
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hand out nothing for ``seconds`` (the server said Retry-After) and drop saved burst."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = 0.0
            self._not_before = max(self._not_before, now + seconds)
