"""Rate limit, monthly quota and every fault switch, over real HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from lgm_pipeline.simulator import FaultConfig, RunningSimulator, SimulatorConfig, World, parse_fault_options
from lgm_pipeline.simulator.app import ApiState

DAY_PARAMS = {"FromServiceDate": 20260302, "ToServiceDate": 20260302}


def _client(sim: RunningSimulator) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, headers={"x-api-key": sim.api_key}, timeout=10)


def _away_from_minute_edge() -> None:
    # The window is aligned to the wall-clock minute; don't straddle a boundary mid-test.
    if 60 - time.time() % 60 < 3:
        time.sleep(3)


def test_rate_limit_is_429_with_retry_after(make_simulator: Any) -> None:
    sim = make_simulator(rate_limit_per_minute=5)
    _away_from_minute_edge()
    with _client(sim) as api:
        assert [api.get("/api/ping").status_code for _ in range(5)] == [200] * 5
        limited = api.get("/api/ping")
    assert limited.status_code == 429
    assert limited.json() == {"message": "Too many requests"}
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "X-Quota-Exceeded" not in limited.headers
    assert sim.stats()["rate_limited"] == 1 and sim.stats()["ping"] == 5


def test_rate_limit_window_resets() -> None:
    now = [600.0]
    state = ApiState(World(SimulatorConfig(customers_per_day=1)), SimulatorConfig(rate_limit_per_minute=2))
    state.clock = lambda: now[0]
    assert state.admit("k") is None and state.admit("k") is None
    refused = state.admit("k")
    assert refused is not None and refused.headers["Retry-After"] == "60"
    now[0] = 659.5
    assert state.admit("k").headers["Retry-After"] == "1"  # type: ignore[union-attr]
    now[0] = 660.0
    assert state.admit("k") is None


def test_monthly_quota(make_simulator: Any) -> None:
    sim = make_simulator(monthly_quota=3, rate_limit_per_minute=100)
    with _client(sim) as api:
        assert [api.get("/api/ping").status_code for _ in range(3)] == [200] * 3
        over = api.get("/api/ping")
    assert over.status_code == 429
    assert over.json() == {"message": "Monthly API call quota exceeded"}
    assert over.headers["X-Quota-Exceeded"] == "true"
    assert 1 <= int(over.headers["Retry-After"]) <= 31 * 86400
    assert sim.stats()["rate_limited"] == 1


def test_error_rate_alternates_500_and_503(simulator: RunningSimulator) -> None:
    simulator.set_faults(FaultConfig(error_rate=1.0))
    with _client(simulator) as api:
        codes = [api.get("/api/ping").status_code for _ in range(4)]
    assert codes == [500, 503, 500, 503]
    assert simulator.stats()["errors"] == 4 and simulator.stats()["ping"] == 0


def test_partial_error_rate_is_deterministic(make_simulator: Any) -> None:
    runs = []
    for _ in range(2):
        sim = make_simulator(faults=FaultConfig(error_rate=0.3))
        with _client(sim) as api:
            runs.append([api.get("/api/ping").status_code for _ in range(30)])
    assert runs[0] == runs[1]
    assert 200 in runs[0] and {500, 503} & set(runs[0])


def test_latency(simulator: RunningSimulator) -> None:
    simulator.set_faults(FaultConfig(latency_ms=200))
    with _client(simulator) as api:
        started = time.perf_counter()
        api.get("/api/ping")
        assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    httpx.get(f"{simulator.admin_url}/stats")
    assert time.perf_counter() - started < 0.2  # admin is never slowed


def test_malformed_and_incomplete_pages(simulator: RunningSimulator) -> None:
    simulator.set_faults(FaultConfig(malformed_pages=[2], incomplete_pages=[3]))
    with _client(simulator) as api:
        good = api.get("/api/customers", params={**DAY_PARAMS, "Page": 1, "PageSize": 10})
        broken = api.get("/api/customers", params={**DAY_PARAMS, "Page": 2, "PageSize": 10})
        incomplete = api.get("/api/customers", params={**DAY_PARAMS, "Page": 3, "PageSize": 10})
    assert all("id" in r for r in good.json()["pageResults"])
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        broken.json()
    rows = incomplete.json()["pageResults"]
    assert rows and all("id" not in r for r in rows)


def test_dropped_connection_is_a_transport_error(simulator: RunningSimulator) -> None:
    simulator.set_faults(FaultConfig(drop_connection_rate=1.0))
    with _client(simulator) as api, pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.get("/api/ping")
    simulator.set_faults(FaultConfig())
    with _client(simulator) as api:
        assert api.get("/api/ping").status_code == 200
    assert simulator.stats()["dropped"] == 1


def test_duplicate_across_pages_repeats_one_customer(simulator: RunningSimulator) -> None:
    with _client(simulator) as api:
        clean = api.get("/api/customers", params={**DAY_PARAMS, "PageSize": 1000}).json()["pageResults"]
        simulator.set_faults(FaultConfig(duplicate_across_pages=True))
        ids: list[str] = []
        page = 1
        while True:
            body = api.get("/api/customers", params={**DAY_PARAMS, "Page": page, "PageSize": 10}).json()
            ids += [r["id"] for r in body["pageResults"]]
            if body["lastPage"]:
                break
            page += 1
    assert len(ids) == len(clean) + 1
    assert set(ids) == {r["id"] for r in clean}
    assert ids[9] == ids[10]


def test_down_answers_503_everywhere_on_the_api(simulator: RunningSimulator) -> None:
    simulator.set_faults(FaultConfig(down=True))
    with _client(simulator) as api:
        assert {api.get(p).status_code for p in ("/api/ping", "/api/branches", "/api/customers")} == {503}
    assert httpx.get(f"{simulator.admin_url}/stats").status_code == 200


def test_one_endpoint_answers_its_fixed_status_while_the_others_answer(simulator: RunningSimulator) -> None:
    simulator.set_faults(FaultConfig(endpoint_status={"leads": 404, "branches": 403}))
    with _client(simulator) as api:
        leads = api.get("/api/leads", params={"From": 20260302, "To": 20260302})
        branches = api.get("/api/branches")
        customers = api.get("/api/customers", params=DAY_PARAMS)
        refused = api.get("/api/leads", headers={"x-api-key": "not-the-key"})
    assert (leads.status_code, leads.json()) == (404, {"message": "Not Found"})
    assert (branches.status_code, branches.json()) == (403, {"message": "Forbidden"})
    assert customers.status_code == 200
    assert refused.status_code == 401  # the key is judged first, as any endpoint does
    stats = simulator.stats()
    assert (stats["errors"], stats["customers"], stats["unauthorized"]) == (2, 1, 1)


def test_endpoint_status_through_the_admin_api(simulator: RunningSimulator) -> None:
    set_faults = httpx.post(f"{simulator.admin_url}/faults", json={"endpoint_status": {"leads": 403}})
    assert set_faults.json()["endpoint_status"] == {"leads": 403}
    assert simulator.faults.endpoint_status == {"leads": 403}
    for bad in ({"leads": "404"}, {"leads": 200}, ["leads"]):
        assert httpx.post(f"{simulator.admin_url}/faults", json={"endpoint_status": bad}).status_code == 400


def test_parse_fault_options() -> None:
    faults = parse_fault_options(["error_rate=0.1", "latency_ms=200", "malformed_pages=2,3", "down"])
    assert faults == FaultConfig(error_rate=0.1, latency_ms=200, malformed_pages=[2, 3], down=True)
    assert parse_fault_options([]) == FaultConfig()
    statuses = parse_fault_options(["endpoint_status=leads:404, branches:403"])
    assert statuses == FaultConfig(endpoint_status={"leads": 404, "branches": 403})
    for bad in (
        ["nonsense=1"],
        ["error_rate=lots"],
        ["error_rate=2"],
        ["latency_ms"],
        ["down=perhaps"],
        ["endpoint_status=leads"],
        ["endpoint_status=leads:200"],
    ):
        with pytest.raises(ValueError):
            parse_fault_options(bad)
