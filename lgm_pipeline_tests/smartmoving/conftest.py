"""Helpers for SmartMoving client tests: simulated time and a client wired to a mock transport."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lgm_pipeline.smartmoving.client import SmartMovingClient

# Deliberately not hex-shaped: the repository must never hold anything that looks like a real key.
TEST_KEY = "unit-test-key-Zq7-do-not-log"


class FakeTime:
    """A monotonic clock that only moves when someone sleeps; records every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


Handler = Callable[[httpx.Request], httpx.Response]


def envelope(records: list[dict[str, Any]] | None, page: int, last: bool) -> dict[str, Any]:
    return {
        "pageNumber": page,
        "pageSize": 500,
        "lastPage": last,
        "totalPages": page + (0 if last else 1),
        "totalResults": len(records or []),
        "totalThisPage": len(records or []),
        "pageResults": records,
    }


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(fake_time: FakeTime) -> Iterator[Callable[..., SmartMovingClient]]:
    clients: list[SmartMovingClient] = []

    def factory(handler: Handler, **kwargs: Any) -> SmartMovingClient:
        kwargs.setdefault("rate_limit_per_minute", None)
        kwargs.setdefault("sleep", fake_time.sleep)
        kwargs.setdefault("clock", fake_time.clock)
        client = SmartMovingClient(
            "https://sm.example.test/v1", TEST_KEY, transport=httpx.MockTransport(handler), **kwargs
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
