"""Many tenants on one simulator: a key picks a world, limits and counters of its own, over real HTTP."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from lgm_pipeline.simulator import DEMO_API_KEY, SimulatorConfig, World
from lgm_pipeline.simulator.config import key_fingerprint
from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.errors import AuthenticationError
from lgm_pipeline_tests.simulator.conftest import MakeSimulator

DAY = dt.date(2026, 3, 2)


@contextmanager
def _client(base_url: str, api_key: str) -> Iterator[SmartMovingClient]:
    # No client-side budget and no retries: the test is about what the server answers each key.
    with SmartMovingClient(base_url, api_key, rate_limit_per_minute=None, max_retries=0, deadline_seconds=30) as client:
        yield client


def _customer_ids(base_url: str, api_key: str) -> set[str]:
    with _client(base_url, api_key) as client:
        return {row["id"] for row in client.list_customers(DAY, DAY)}


def _away_from_minute_edge() -> None:
    # The rate window is the wall-clock minute; a test straddling its edge would see it reset.
    if 60 - time.time() % 60 < 3:
        time.sleep(3)


def test_each_tenant_key_sees_its_own_reproducible_world(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(tenants=2, seed=11)
    assert sim.api_keys == [f"{DEMO_API_KEY}-t1", f"{DEMO_API_KEY}-t2"] and sim.api_key == sim.api_keys[0]
    first, second = (_customer_ids(sim.base_url, key) for key in sim.api_keys)
    assert first and second and first.isdisjoint(second)
    # Tenant 2's world is the one a lone simulator seeded seed + 1 serves: different but reproducible.
    alone = World(SimulatorConfig(seed=12, customers_per_day=40, churn=0.0))
    alone.ensure_dates(DAY, DAY)
    _total, rows = alone.list_customers(20260302, 20260302, True, offset=0, limit=10_000)
    assert second == {row["id"] for row in rows}
    assert sim.world is sim.tenant_world(1) and sim.worlds[1] is sim.tenant_world(2)


def test_a_tenant_exhausting_its_rate_limit_leaves_the_others_served(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(tenants=3, rate_limit_per_minute=3)
    _away_from_minute_edge()
    with httpx.Client(base_url=sim.base_url, headers={"x-api-key": sim.api_keys[1]}, timeout=10) as tenant_2:
        assert [tenant_2.get("/api/ping").status_code for _ in range(4)] == [200, 200, 200, 429]
    with _client(sim.base_url, sim.api_keys[0]) as tenant_1, _client(sim.base_url, sim.api_keys[2]) as tenant_3:
        tenant_1.ping()
        tenant_3.ping()
    assert sim.stats(tenant=2)["rate_limited"] == 1 and sim.stats(tenant=2)["ping"] == 3
    assert sim.stats()["rate_limited"] == 0 and sim.stats()["ping"] == 1
    assert sim.stats(tenant=3)["ping"] == 1


def test_each_tenant_has_its_own_monthly_quota(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(tenants=2, monthly_quota=2)
    with httpx.Client(base_url=sim.base_url, headers={"x-api-key": sim.api_keys[0]}, timeout=10) as tenant_1:
        assert [tenant_1.get("/api/ping").status_code for _ in range(3)] == [200, 200, 429]
    with _client(sim.base_url, sim.api_keys[1]) as tenant_2:
        tenant_2.ping()


@pytest.mark.parametrize("key", [DEMO_API_KEY, f"{DEMO_API_KEY}-t3", f"{DEMO_API_KEY}-t0", "someone-else"])
def test_a_key_no_tenant_has_is_refused_with_401(make_simulator: MakeSimulator, key: str) -> None:
    sim = make_simulator(tenants=2)
    with _client(sim.base_url, key) as client, pytest.raises(AuthenticationError):
        client.ping()
    response = httpx.get(f"{sim.base_url}/api/ping", headers={"x-api-key": key}, timeout=10)
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized: missing or invalid API key"}
    # An unknown key is counted as tenant 1's, as the single tenant's was.
    assert sim.stats()["unauthorized"] == 2 and sim.stats(tenant=2)["total"] == 0


def test_one_tenant_keeps_the_plain_key(make_simulator: MakeSimulator) -> None:
    sim = make_simulator()
    assert sim.api_keys == [DEMO_API_KEY] and sim.api_key == DEMO_API_KEY and sim.worlds == [sim.world]
    with _client(sim.base_url, DEMO_API_KEY) as client:
        client.ping()
    with _client(sim.base_url, f"{DEMO_API_KEY}-t1") as client, pytest.raises(AuthenticationError):
        client.ping()
    listing = httpx.get(f"{sim.admin_url}/tenants", timeout=10).json()
    fingerprints = [key_fingerprint(DEMO_API_KEY)]
    assert listing == {"tenants": 1, "api_key_fingerprints": fingerprints, "seeds": [sim.config.seed]}


def test_admin_endpoints_act_on_the_tenant_named(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(tenants=3)
    with httpx.Client(base_url=sim.admin_url, timeout=10) as admin:
        on_day = {"date": DAY.isoformat()}
        assert admin.get("/opportunities", params=on_day).json() == sim.world.opportunity_ids_on(DAY)
        second = admin.get("/opportunities", params={**on_day, "tenant": 2}).json()
        assert second == sim.tenant_world(2).opportunity_ids_on(DAY) != sim.world.opportunity_ids_on(DAY)
        # POSTs name the tenant in the query string or in the JSON body alike.
        added = admin.post("/add", params={"tenant": 3}, json={"service_date": DAY.isoformat()}).json()
        by_body = admin.post("/add", json={"service_date": DAY.isoformat(), "tenant": 2}).json()
        assert admin.post("/faults", params={"tenant": 2}, json={"latency_ms": 5}).status_code == 200
        latencies = [admin.get("/faults", params={"tenant": t}).json()["latency_ms"] for t in (1, 2)]
        refused = [admin.get("/opportunities", params={**on_day, "tenant": t}).status_code for t in ("0", "4", "two")]
        listing = admin.get("/tenants").json()
    assert added["opportunity_id"] in sim.tenant_world(3).opportunity_ids_on(DAY)
    assert added["opportunity_id"] not in sim.world.opportunity_ids_on(DAY)
    assert by_body["opportunity_id"] in sim.tenant_world(2).opportunity_ids_on(DAY)
    assert latencies == [0, 5] and sim.faults.latency_ms == 0
    assert refused == [400, 400, 400]
    assert listing["api_key_fingerprints"] == [key_fingerprint(k) for k in sim.api_keys]
    assert listing["seeds"] == [7, 8, 9]


def test_a_hundred_tenants_start_at_once_and_the_last_is_served(make_simulator: MakeSimulator) -> None:
    started = time.perf_counter()
    sim = make_simulator(tenants=100)
    startup = time.perf_counter() - started
    first_request = time.perf_counter()
    ids = _customer_ids(sim.base_url, sim.api_keys[99])
    served = time.perf_counter() - first_request
    assert ids and sim.api_keys[99] == f"{DEMO_API_KEY}-t100"
    # Worlds are built when first asked for: starting 100 tenants costs about what starting one does.
    assert startup < 5 and served < 5, (startup, served)


def test_the_tenant_count_is_checked() -> None:
    for bad in (0, 1001, True):
        with pytest.raises(ValueError, match="tenants"):
            SimulatorConfig(tenants=bad)
    config: Any = SimulatorConfig(tenants=2)
    with pytest.raises(ValueError, match="tenant"):
        config.tenant_api_key(3)
