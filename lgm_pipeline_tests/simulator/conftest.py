"""Simulator fixtures: every server a test starts is stopped when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from lgm_pipeline.simulator import RunningSimulator, SimulatorConfig, start_simulator

# Small days keep the module fast; churn 0 keeps tests that are not about time from seeing it move.
QUIET = {"customers_per_day": 40, "churn": 0.0, "rate_limit_per_minute": None}

MakeSimulator = Callable[..., RunningSimulator]


@pytest.fixture
def make_simulator() -> Iterator[MakeSimulator]:
    started: list[RunningSimulator] = []

    def make(**overrides: Any) -> RunningSimulator:
        sim = start_simulator(SimulatorConfig(**{**QUIET, **overrides}))
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: MakeSimulator) -> RunningSimulator:
    return make_simulator()


@pytest.fixture
def api(simulator: RunningSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.base_url, headers={"x-api-key": simulator.api_key}, timeout=10) as client:
        yield client


@pytest.fixture
def admin(simulator: RunningSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.admin_url, timeout=10) as client:
        yield client
