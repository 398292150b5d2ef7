"""The client-side rate budget, in simulated time: never over the server's fixed-window limit."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import date

import httpx
import pytest

from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.ratelimit import TokenBucket, burst_capacity
from lgm_pipeline_tests.smartmoving.conftest import FakeTime, envelope

MakeClient = Callable[..., SmartMovingClient]


def max_in_any_window(times: list[float], width: float = 60.0) -> int:
    """The most timestamps inside any half-open window [t, t + width), wherever it starts."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - width:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.parametrize("limit", [120, 30, 10, 1000])
def test_capacity_is_small_and_leaves_slack(limit: int) -> None:
    bucket = TokenBucket.for_limit(limit, 0.9)
    assert bucket.capacity == burst_capacity(limit, 0.9)
    assert 1 <= bucket.capacity <= 10
    assert bucket.capacity <= max(1, limit * 0.1)
    assert bucket.rate_per_minute <= limit * 0.9
    assert bucket.capacity + bucket.rate_per_minute < limit


@pytest.mark.parametrize("limit", [120, 30, 10])
def test_bucket_never_exceeds_limit_in_any_60s_window(fake_time: FakeTime, limit: int) -> None:
    bucket = TokenBucket.for_limit(limit, 0.9, clock=fake_time.clock, sleep=fake_time.sleep)
    granted: list[float] = []
    for _ in range(limit * 10):
        assert bucket.acquire()
        granted.append(fake_time.clock())
    assert max_in_any_window(granted) < limit
    # ...and it is not needlessly slow: after the burst, tokens come at the budgeted rate.
    minutes = (granted[-1] - granted[0]) / 60
    assert minutes <= (len(granted) - bucket.capacity) / bucket.rate_per_minute + 1e-6


def test_idle_time_only_refills_up_to_capacity(fake_time: FakeTime) -> None:
    bucket = TokenBucket.for_limit(120, 0.9, clock=fake_time.clock, sleep=fake_time.sleep)
    fake_time.sleep(3600)
    fake_time.sleeps.clear()
    for _ in range(bucket.capacity):
        bucket.acquire()
    assert fake_time.sleeps == []
    bucket.acquire()
    assert fake_time.sleeps == [pytest.approx(60 / 108)]


def test_acquire_gives_up_past_its_timeout(fake_time: FakeTime) -> None:
    bucket = TokenBucket(60, 1, clock=fake_time.clock, sleep=fake_time.sleep)
    assert bucket.acquire(timeout=0)
    assert not bucket.acquire(timeout=0.5)
    assert fake_time.sleeps == []
    assert bucket.acquire(timeout=1.0)


def test_pause_holds_every_caller(fake_time: FakeTime) -> None:
    bucket = TokenBucket(600, 5, clock=fake_time.clock, sleep=fake_time.sleep)
    bucket.pause(12)
    bucket.acquire()
    assert fake_time.clock() == pytest.approx(1012)


@pytest.mark.parametrize("limit", [120, 30])
def test_client_under_concurrency_provokes_no_429(make_client: MakeClient, fake_time: FakeTime, limit: int) -> None:
    """A fake server enforcing a fixed 60-s window on the same simulated clock never says 429."""
    lock = threading.Lock()
    per_window: Counter[int] = Counter()
    throttled = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal throttled
        with lock:
            window = int(fake_time.clock() // 60)
            per_window[window] += 1
            if per_window[window] > limit:
                throttled += 1
                return httpx.Response(429, headers={"Retry-After": "1"})
        path = request.url.path
        if path.endswith("/customers"):
            records = [{"id": f"c{i}", "opportunities": []} for i in range(3)]
            return httpx.Response(200, json=envelope(records, 1, last=True))
        oid = path.rsplit("/", 1)[1]
        return httpx.Response(200, json={"id": oid, "jobs": []})

    client = make_client(handler, rate_limit_per_minute=limit, max_concurrency=4, deadline_seconds=None)
    client.list_customers(date(2026, 11, 25), date(2026, 11, 25))
    client.get_opportunities([f"o{i}" for i in range(limit * 4)])
    assert throttled == 0
    assert sum(per_window.values()) == limit * 4 + 1


def test_rate_limit_none_never_waits(make_client: MakeClient, fake_time: FakeTime) -> None:
    client = make_client(lambda request: httpx.Response(200, json=[]), rate_limit_per_minute=None)
    for _ in range(500):
        client.list_branches()
    assert fake_time.sleeps == []
