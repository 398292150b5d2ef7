"""Determinism, time moving, and the admin mutations seen through the API."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from lgm_pipeline.simulator import RunningSimulator, SimulatorConfig, World

DAY = dt.date(2026, 3, 2)
NEXT = dt.date(2026, 3, 3)


def _snapshot(world: World, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    world.ensure_dates(first, last)
    _total, rows = world.list_customers(int(first.strftime("%Y%m%d")), int(last.strftime("%Y%m%d")), True)
    details = [world.opportunity_detail(o["id"]) for r in rows for o in r["opportunities"]]
    return [*rows, *details]


def test_same_seed_same_data_whatever_the_order_dates_are_asked() -> None:
    config = SimulatorConfig(customers_per_day=30, churn=0.0)
    forward, backward = World(config), World(config)
    backward.ensure_dates(NEXT + dt.timedelta(days=5), NEXT + dt.timedelta(days=5))
    assert _snapshot(forward, DAY, DAY) == _snapshot(backward, DAY, DAY)
    other = World(SimulatorConfig(customers_per_day=30, churn=0.0, seed=8))
    assert _snapshot(other, DAY, DAY) != _snapshot(forward, DAY, DAY)


def test_evolution_changes_things_deterministically() -> None:
    config = SimulatorConfig(customers_per_day=40, churn=0.1)
    one, two = World(config), World(config)
    before = _snapshot(one, DAY, NEXT)
    _snapshot(two, DAY, NEXT)
    log_one, log_two = one.evolve(3), two.evolve(3)
    assert log_one == log_two and len(log_one) >= 3
    after = _snapshot(one, DAY, NEXT)
    assert after != before
    assert after == _snapshot(two, DAY, NEXT)


def test_page_one_of_a_customers_list_moves_time(make_simulator: Any) -> None:
    sim: RunningSimulator = make_simulator(churn=0.05)
    params = {"FromServiceDate": 20260302, "ToServiceDate": 20260302, "PageSize": 10}
    with httpx.Client(base_url=sim.base_url, headers={"x-api-key": sim.api_key}) as api:
        api.get("/api/customers", params=params)
        assert sim.world.evolution_steps == 1
        api.get("/api/customers", params={**params, "Page": 2})
        assert sim.world.evolution_steps == 1
        api.get("/api/customers", params={**params, "Page": 1})
        assert sim.world.evolution_steps == 2


def test_admin_mutations_show_through_the_api(
    simulator: RunningSimulator, api: httpx.Client, admin: httpx.Client
) -> None:
    ids = admin.get("/opportunities", params={"date": "2026-03-02"}).json()
    assert ids == simulator.world.opportunity_ids_on(DAY)
    target = ids[0]
    detail = api.get(f"/api/opportunities/{target}").json()
    customer_id, job_id = detail["customer"]["id"], detail["jobs"][0]["id"]

    assert admin.post("/rename", json={"customer_id": customer_id, "name": "Zoë O'Brien-Test"}).status_code == 200
    assert admin.post("/cancel", json={"opportunity_id": target}).status_code == 200
    moved = admin.post("/reschedule", json={"job_id": job_id, "to_date": "2026-03-04"})
    assert moved.status_code == 200
    detail = api.get(f"/api/opportunities/{target}").json()
    assert detail["customer"]["name"] == "Zoë O'Brien-Test" and detail["status"] == 20
    assert detail["jobs"][0]["jobDate"] == 20260304 and detail["serviceDate"] == 20260304
    listed = api.get(
        "/api/customers", params={"FromServiceDate": 20260304, "ToServiceDate": 20260304, "PageSize": 1000}
    )
    mine = [r for r in listed.json()["pageResults"] if r["id"] == customer_id]
    assert mine and mine[0]["name"] == "Zoë O'Brien-Test"
    assert [o["status"] for o in mine[0]["opportunities"] if o["id"] == target] == [20]

    added = admin.post("/add", json={"service_date": "2026-03-02", "branch_name": "KELOWNA 🇨🇦 - Let's Get Moving"})
    new = added.json()
    assert set(new) == {"customer_id", "opportunity_id", "job_ids"} and new["job_ids"]
    new_detail = api.get(f"/api/opportunities/{new['opportunity_id']}").json()
    assert new_detail["branch"]["name"].startswith("KELOWNA") and new_detail["status"] == 4
    assert new["opportunity_id"] in admin.get("/opportunities", params={"date": "2026-03-02"}).json()

    hostile = {
        "opportunity_id": new["opportunity_id"],
        "opportunity": {
            "status": 99,
            "estimatedTotal": {"subtotal": -5.0, "taxableAmount": -5.0, "tax": 0, "finalTotal": -5.0},
        },
        "customer": {"name": "Robert'); DROP TABLE customers;--"},
        "job": {"id": new["job_ids"][0], "type": 77},
    }
    assert admin.post("/patch", json=hostile).status_code == 200
    patched = api.get(f"/api/opportunities/{new['opportunity_id']}").json()
    assert (patched["status"], patched["jobs"][0]["type"], patched["estimatedTotal"]["finalTotal"]) == (99, 77, -5.0)
    assert patched["customer"]["name"] == "Robert'); DROP TABLE customers;--"

    evolved = admin.post("/evolve", json={"steps": 2}).json()
    assert evolved["steps"] == 2 and simulator.world.evolution_steps == 2


def test_admin_refuses_unknown_ids_and_bad_input(admin: httpx.Client) -> None:
    assert admin.post("/cancel", json={"opportunity_id": "nope"}).status_code == 404
    assert admin.post("/reschedule", json={"job_id": "nope", "to_date": "2026-03-02"}).status_code == 404
    assert admin.post("/add", json={"service_date": "03/02/2026"}).status_code == 400
    assert admin.post("/rename", json={"name": "no id"}).status_code == 400
    assert admin.post("/faults", json={"error_rat": 0.5}).status_code == 400


def test_admin_stats_and_faults(simulator: RunningSimulator, api: httpx.Client, admin: httpx.Client) -> None:
    api.get("/api/ping")
    api.get("/api/branches")
    stats = admin.get("/stats").json()
    assert (stats["ping"], stats["branches"], stats["total"]) == (1, 1, 2)
    assert admin.post("/stats/reset").json()["total"] == 0
    assert simulator.stats()["total"] == 0

    assert admin.post("/faults", json={"down": True}).json()["down"] is True
    assert simulator.faults.down
    assert api.get("/api/ping").status_code == 503
    assert admin.get("/faults").json()["down"] is True  # admin is never faulted
    admin.post("/faults", json={})
    assert api.get("/api/ping").status_code == 200


def test_hostile_patches_do_not_break_evolution_or_listing() -> None:
    world = World(SimulatorConfig(customers_per_day=20, churn=1.0))
    world.ensure_dates(DAY, DAY)
    for opp_id in list(world.opportunities)[:10]:
        job_id = world.opportunity_detail(opp_id)["jobs"][0]["id"]
        world.patch(
            opp_id,
            opportunity={"branch": None, "status": 3, "serviceDate": "soon", "moveSize": None},
            customer={"name": None, "emailAddress": 5},
            job={"id": job_id, "jobDate": None, "type": 77},
        )
    assert world.evolve(3)
    total, rows = world.list_customers(20260301, 20260304, True)
    assert total == len(rows) > 0
