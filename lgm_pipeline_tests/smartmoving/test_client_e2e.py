"""End-to-end: the client against the SmartMoving simulator over real HTTP on loopback."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from lgm_pipeline.simulator import FaultConfig, RunningSimulator, SimulatorConfig, start_simulator
from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.connection import check_connection
from lgm_pipeline.smartmoving.errors import (
    AuthenticationError,
    MalformedPayloadError,
    SmartMovingError,
    UpstreamUnavailableError,
)
from lgm_pipeline_tests.smartmoving.conftest import TEST_KEY

pytestmark = pytest.mark.e2e

DAY = date(2026, 11, 25)
WRONG_KEY = "wrong-key-Hq4-never-valid"


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    with start_simulator(SimulatorConfig(api_key=TEST_KEY, rate_limit_per_minute=None, churn=0.0)) as running:
        yield running


def fast_client(sim: RunningSimulator, **kwargs: Any) -> SmartMovingClient:
    """Real HTTP and real time, with backoff shrunk so fault tests take milliseconds."""
    kwargs.setdefault("rate_limit_per_minute", None)
    kwargs.setdefault("backoff_base_seconds", 0.005)
    kwargs.setdefault("backoff_max_seconds", 0.05)
    kwargs.setdefault("deadline_seconds", 60.0)
    return SmartMovingClient(sim.base_url, kwargs.pop("api_key", sim.api_key), **kwargs)


def pull_date(client: SmartMovingClient, day: date) -> tuple[list[dict], dict[str, dict]]:
    customers = client.list_customers(day, day)
    ids = [o["id"] for c in customers for o in c.get("opportunities") or []]
    return customers, client.get_opportunities(ids)


def test_full_date_pull_matches_the_simulator(sim: RunningSimulator) -> None:
    expected_ids = set(sim.world.opportunity_ids_on(DAY))
    expected_customers, _ = sim.world.list_customers(20261125, 20261125, False)
    sim.reset_stats()
    with fast_client(sim, max_concurrency=4) as client:
        customers, details = pull_date(client, DAY)

    assert len(customers) == expected_customers
    assert len({c["id"] for c in customers}) == len(customers)
    assert set(details) == expected_ids
    assert all(detail["id"] == oid and isinstance(detail["jobs"], list) for oid, detail in details.items())
    stats = sim.stats()
    assert (stats["customers"], stats["opportunity"]) == (1, len(expected_ids))
    assert client.calls == {"customers": 1, "opportunity": len(expected_ids)}
    assert stats["total"] == sum(client.calls.values())


def test_branches_jobs_and_ping(sim: RunningSimulator) -> None:
    with fast_client(sim) as client:
        report = check_connection(client)
        opportunity_id = sim.world.opportunity_ids_on(DAY)[0]
        jobs = client.get_opportunity_jobs(opportunity_id)
    assert report.ok and report.key_valid and report.error is None
    assert report.branches == [b["name"] for b in sim.world.branches()]
    assert jobs and all(job["id"] for job in jobs)


def test_wrong_key_is_one_call_and_a_clear_error(sim: RunningSimulator) -> None:
    with fast_client(sim, api_key=WRONG_KEY) as client:
        with pytest.raises(AuthenticationError, match=r"rejected the API key \(401\)"):
            client.list_customers(DAY, DAY)
        assert client.calls == {"customers": 1}
        report = check_connection(client)
    assert (report.ok, report.key_valid) == (False, False)
    assert sim.stats()["unauthorized"] == 2


def test_server_errors_are_survived(sim: RunningSimulator) -> None:
    expected_ids = set(sim.world.opportunity_ids_on(DAY))
    sim.set_faults(FaultConfig(error_rate=0.3))
    with fast_client(sim, max_retries=8) as client:
        _, details = pull_date(client, DAY)
    assert set(details) == expected_ids
    stats = sim.stats()
    assert stats["errors"] > 10
    assert sum(client.calls.values()) == stats["total"]


def test_dropped_connections_are_retried(sim: RunningSimulator) -> None:
    expected_ids = set(sim.world.opportunity_ids_on(DAY))
    sim.set_faults(FaultConfig(drop_connection_rate=0.2))
    with fast_client(sim, max_retries=8) as client:
        _, details = pull_date(client, DAY)
    assert set(details) == expected_ids
    assert sim.stats()["dropped"] > 5


def test_service_down_gives_up_after_the_retries(sim: RunningSimulator) -> None:
    sim.set_faults(FaultConfig(down=True))
    with (
        fast_client(sim, max_retries=3) as client,
        pytest.raises(UpstreamUnavailableError, match="after 4 attempts: customers: HTTP 503"),
    ):
        client.list_customers(DAY, DAY)
    assert sim.stats()["errors"] == 4


def test_duplicate_across_pages_is_deduplicated(sim: RunningSimulator) -> None:
    sim.world.ensure_dates(DAY, DAY)
    expected_customers, _ = sim.world.list_customers(20261125, 20261125, False)
    sim.set_faults(FaultConfig(duplicate_across_pages=True))
    with fast_client(sim, page_size=50) as client:
        customers = client.list_customers(DAY, DAY)
    assert expected_customers > 50
    assert len(customers) == expected_customers == len({c["id"] for c in customers})


@pytest.mark.parametrize(
    ("faults", "field"),
    [(FaultConfig(malformed_pages=[2]), "body"), (FaultConfig(incomplete_pages=[2]), "pageResults[0].id")],
    ids=["truncated-json", "missing-id"],
)
def test_bad_pages_are_refused_naming_page_and_field(sim: RunningSimulator, faults: FaultConfig, field: str) -> None:
    sim.set_faults(faults)
    with fast_client(sim, page_size=50) as client, pytest.raises(MalformedPayloadError) as err:
        client.list_customers(DAY, DAY)
    assert (err.value.endpoint, err.value.page, err.value.field) == ("customers", 2, field)


class SharedClock:
    """Simulated wall-clock time shared by the client and the simulator's rate window."""

    def __init__(self) -> None:
        self._now = time.time()
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@pytest.mark.parametrize("client_budget", [True, False], ids=["budget-on", "budget-off"])
def test_small_server_limit_is_respected_by_the_budget(client_budget: bool) -> None:
    config = SimulatorConfig(api_key=TEST_KEY, rate_limit_per_minute=30, churn=0.0)
    clock = SharedClock()
    with start_simulator(config) as limited:
        # The simulator's fixed window reads this clock, so minutes pass as fast as the client
        # sleeps; there is no public hook for it yet.
        limited._state.clock = clock.clock
        ids = limited.world.opportunity_ids_on(DAY)[:100]
        with SmartMovingClient(
            limited.base_url,
            limited.api_key,
            rate_limit_per_minute=30 if client_budget else None,
            max_concurrency=4,
            max_retries=10,
            deadline_seconds=None,
            sleep=clock.sleep,
            clock=clock.clock,
        ) as client:
            details = client.get_opportunities(ids)
        stats = limited.stats()
    assert set(details) == set(ids)
    if client_budget:
        assert stats["rate_limited"] == 0
        assert client.calls["opportunity"] == len(ids)
    else:
        # Without the budget the server throttles, and Retry-After still carries the pull through.
        assert stats["rate_limited"] > 0


@pytest.mark.slow
def test_small_server_limit_in_real_time() -> None:
    config = SimulatorConfig(api_key=TEST_KEY, rate_limit_per_minute=30, churn=0.0)
    with start_simulator(config) as limited:
        ids = limited.world.opportunity_ids_on(DAY)[:35]
        with SmartMovingClient(limited.base_url, limited.api_key, rate_limit_per_minute=30) as client:
            client.get_opportunities(ids)
        assert limited.stats()["rate_limited"] == 0


def test_key_never_leaks_over_real_http(sim: RunningSimulator, caplog: pytest.LogCaptureFixture) -> None:
    import traceback

    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for name in ("httpx", "httpcore", "lgm_pipeline"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        for faults, key in [
            (FaultConfig(), WRONG_KEY),
            (FaultConfig(down=True), TEST_KEY),
            (FaultConfig(drop_connection_rate=1.0), TEST_KEY),
            (FaultConfig(malformed_pages=[1]), TEST_KEY),
        ]:
            sim.set_faults(faults)
            with fast_client(sim, api_key=key, max_retries=2) as client:
                texts.append(repr(client))
                with pytest.raises(SmartMovingError) as err:
                    client.list_customers(DAY, DAY)
                texts += [str(err.value), repr(err.value), *traceback.format_exception(err.value)]
                texts.append(repr(check_connection(client)))
        sim.set_faults(FaultConfig())
        with fast_client(sim) as client:
            pull_date(client, DAY)
    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    assert any(r.name == "httpx" for r in caplog.records)
    assert [t for t in texts if TEST_KEY in t or WRONG_KEY in t] == []
