"""The two readings of the customers date filter, TBD and odd-typed jobs, and closing past days."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from typing import Any

import httpx
import pytest

from lgm_pipeline.simulator import RunningSimulator, SimulatorConfig, World
from lgm_pipeline.simulator.world import from_int_date, to_int_date
from lgm_pipeline_tests.simulator.conftest import MakeSimulator

FIRST = dt.date(2026, 3, 2)
LAST = dt.date(2026, 3, 15)
BOOKED, COMPLETED, CLOSED = 4, 10, 11
STORAGE_OUT_BOUND = 9


def _dated(jobs: list[dict[str, Any]]) -> list[int]:
    return [j["jobDate"] for j in jobs if j["jobDate"] is not None]


def _two_day_move(world: World) -> tuple[str, str, dt.date]:
    """(opportunity id, customer id, second day) of a move whose two jobs fall on consecutive days."""
    world.ensure_dates(FIRST, LAST)
    for opp_id in world.opportunities:
        detail = world.opportunity_detail(opp_id)
        dates = _dated(detail["jobs"])
        if len(dates) == 2 and from_int_date(dates[1]) - from_int_date(dates[0]) == dt.timedelta(days=1):
            return opp_id, detail["customer"]["id"], from_int_date(dates[1])
    raise AssertionError("no two-day move generated")


def _query(day: dt.date, last: dt.date | None = None) -> dict[str, int]:
    return {"FromServiceDate": to_int_date(day), "ToServiceDate": to_int_date(last or day), "PageSize": 1000}


def _listed(api: httpx.Client, day: dt.date, last: dt.date | None = None) -> dict[str, list[dict[str, Any]]]:
    """customer id -> listed opportunity summaries, for a query on [day, last] (every page)."""
    listed: dict[str, list[dict[str, Any]]] = {}
    page = 1
    while True:
        body = api.get("/api/customers", params={**_query(day, last), "Page": page}).json()
        listed.update({row["id"]: row["opportunities"] for row in body["pageResults"] or []})
        if body["lastPage"]:
            return listed
        page += 1


def _opp_ids(listed: dict[str, list[dict[str, Any]]], customer_id: str | None = None) -> set[str]:
    rows = [listed.get(customer_id, [])] if customer_id else list(listed.values())
    return {o["id"] for opps in rows for o in opps}


def _client(sim: RunningSimulator) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, headers={"x-api-key": sim.api_key}, timeout=10)


def test_the_two_readings_of_the_date_filter_on_a_two_day_move(make_simulator: MakeSimulator) -> None:
    by_job, by_service = make_simulator(), make_simulator(date_filter="service_date")
    opp_id, customer_id, second = _two_day_move(by_job.world)
    assert _two_day_move(by_service.world) == (opp_id, customer_id, second)  # same seed, same move
    first = second - dt.timedelta(days=1)
    with _client(by_job) as job_api, _client(by_service) as service_api:
        assert opp_id in _opp_ids(_listed(job_api, first), customer_id)
        assert opp_id in _opp_ids(_listed(job_api, second), customer_id)
        assert opp_id in _opp_ids(_listed(service_api, first), customer_id)
        # Its customer may still be listed on the second day for another opportunity, never for this one.
        assert opp_id not in _opp_ids(_listed(service_api, second))
        assert opp_id in _opp_ids(_listed(service_api, first, second), customer_id)
        # The job_date reading lists everything the service_date one does, and more.
        job_day, service_day = _opp_ids(_listed(job_api, second)), _opp_ids(_listed(service_api, second))
        assert service_day < job_day
    assert opp_id not in by_service.world.opportunity_ids_on(second)
    assert opp_id in by_job.world.opportunity_ids_on(second)


def test_the_date_filter_reading_is_validated_and_switchable_at_run_time(
    simulator: RunningSimulator, api: httpx.Client, admin: httpx.Client
) -> None:
    with pytest.raises(ValueError, match="job_date, service_date"):
        SimulatorConfig(date_filter="jobDate")
    opp_id, customer_id, second = _two_day_move(simulator.world)
    assert admin.get("/date-filter").json() == {"date_filter": "job_date"}
    assert opp_id in _opp_ids(_listed(api, second), customer_id)
    assert admin.post("/date-filter", json={"date_filter": "service_date"}).json() == {"date_filter": "service_date"}
    assert opp_id not in _opp_ids(_listed(api, second))
    refused = admin.post("/date-filter", json={"date_filter": "both"})
    assert refused.status_code == 400 and "job_date, service_date" in refused.json()["message"]
    assert admin.get("/date-filter").json() == {"date_filter": "service_date"}


def _tbd_opportunities(world: World) -> list[str]:
    return [o for o in world.opportunities if any(j["jobDate"] is None for j in world.opportunity_detail(o)["jobs"])]


def test_a_tbd_storage_delivery_has_no_date_and_lists_nothing_on_its_own(make_simulator: MakeSimulator) -> None:
    sim = make_simulator(customers_per_day=185)
    world = sim.world
    world.ensure_dates(FIRST, LAST)
    tbd = _tbd_opportunities(world)
    assert len(tbd) >= 2
    opp_id = tbd[0]
    with _client(sim) as api:
        detail = api.get(f"/api/opportunities/{opp_id}").json()
        [job] = [j for j in detail["jobs"] if j["jobDate"] is None]
        assert job["type"] == STORAGE_OUT_BOUND and len(job["jobAddresses"]) == 1
        assert job["jobNumber"] == f"{detail['quoteNumber']}-{len(detail['jobs'])}"
        assert detail["status"] in (BOOKED, COMPLETED, CLOSED) and job["actualCharges"] == []
        # Priced with the rest: the estimate covers every job, the TBD one included.
        assert job["estimatedCharges"]
        subtotal = sum(c["totalCost"] for j in detail["jobs"] for c in j["estimatedCharges"])
        assert detail["estimatedTotal"]["subtotal"] == pytest.approx(subtotal, abs=0.01)
        [timeline] = [j for j in api.get(f"/api/opportunities/{opp_id}/jobs").json() if j["id"] == job["id"]]
        assert timeline["jobDate"] is None and timeline["startTimeUtc"] is None

        # Listed through its dated jobs, with the TBD job summarized as serviceDate null.
        whole = _listed(api, FIRST - dt.timedelta(days=1), LAST)  # D-1 is generated too
        summaries = {o["id"]: o for opps in whole.values() for o in opps}
        assert set(tbd) <= set(summaries)
        assert summaries[opp_id]["jobs"][-1] == {
            "id": job["id"],
            "jobNumber": job["jobNumber"],
            "serviceDate": None,
            "type": STORAGE_OUT_BOUND,
        }
        # Once its dated jobs move away, the TBD job alone keeps it on no date of the range.
        far = dt.date(2026, 9, 1)
        for dated in detail["jobs"][:-1]:
            world.reschedule_job(dated["id"], far)
        assert opp_id not in _opp_ids(_listed(api, FIRST - dt.timedelta(days=1), LAST))
        assert set(tbd[1:]) <= _opp_ids(_listed(api, FIRST - dt.timedelta(days=1), LAST))
        assert opp_id in _opp_ids(_listed(api, far))


def _statuses(world: World) -> dict[str, int]:
    return {o: opp["status"] for o, opp in world.opportunities.items()}


def test_close_day_completes_booked_past_work_and_closes_some_completed() -> None:
    config = SimulatorConfig(customers_per_day=185, churn=0.0)
    world, twin = World(config), World(config)
    world.ensure_dates(FIRST, LAST)
    twin.ensure_dates(FIRST, LAST)
    day = dt.date(2026, 3, 9)
    before = _statuses(world)
    dates = {o: _dated(world.opportunity_detail(o)["jobs"]) for o in world.opportunities}
    log = world.close_day(day)
    assert log == twin.close_day(day)  # deterministic
    after = _statuses(world)
    changed = {o for o in after if after[o] != before[o]}
    assert len(log) == len(changed) and {line.split()[1] for line in log} == changed

    due = [o for o, s in before.items() if s == BOOKED and dates[o] and max(dates[o]) <= to_int_date(day)]
    assert due and all(after[o] == COMPLETED for o in due)
    for opp_id in due[:50]:
        detail = world.opportunity_detail(opp_id)
        assert all(j["actualCharges"] for j in detail["jobs"] if j["jobDate"] is not None)
        assert all(j["completedAtUtc"] for j in world.opportunity_jobs(opp_id) if j["jobDate"] is not None)
    # A two-day move still under way (its second day after ``day``) stays Booked.
    ongoing = [o for o, s in before.items() if s == BOOKED and dates[o] and min(dates[o]) <= to_int_date(day)]
    ongoing = [o for o in ongoing if max(dates[o]) > to_int_date(day)]
    assert ongoing and all(after[o] == BOOKED for o in ongoing)
    # TBD deliveries neither hold back the completion nor get charged.
    tbd = set(_tbd_opportunities(world))
    tbd_due = [o for o in due if o in tbd]
    assert tbd_due and all(not world.opportunity_detail(o)["jobs"][-1]["actualCharges"] for o in tbd_due)

    finished = [o for o, s in before.items() if s == COMPLETED and dates[o] and max(dates[o]) < to_int_date(day)]
    closed = [o for o in finished if after[o] == CLOSED]
    assert 0.55 < len(closed) / len(finished) < 0.85
    on_the_day = [o for o, s in before.items() if s == COMPLETED and dates[o] and max(dates[o]) == to_int_date(day)]
    assert on_the_day and all(after[o] == COMPLETED for o in on_the_day)
    assert not [o for o in due if after[o] == CLOSED]  # completed now, closed at the earliest tomorrow

    # The next day's close picks up what was completed today.
    next_log = world.close_day(day + dt.timedelta(days=1))
    assert {line.split()[1] for line in next_log if line.endswith(f"{COMPLETED}->{CLOSED}")} & set(due)


def test_close_day_through_the_admin_api(api: httpx.Client, admin: httpx.Client, simulator: RunningSimulator) -> None:
    booked = [o for o in simulator.world.opportunity_ids_on(FIRST) if simulator.world.opportunities[o]["status"] == 4]
    single_day = [o for o in booked if max(_dated(simulator.world.opportunity_detail(o)["jobs"])) <= 20260302]
    assert single_day
    response = admin.post("/close-day", json={"date": "2026-03-02"})
    assert response.status_code == 200
    body = response.json()
    assert body["date"] == "2026-03-02" and f"status {single_day[0]} 4->10" in body["changes"]
    detail = api.get(f"/api/opportunities/{single_day[0]}").json()
    assert detail["status"] == COMPLETED and all(j["actualCharges"] for j in detail["jobs"])
    assert admin.post("/close-day", json={"date": "03/02/2026"}).status_code == 400
    assert admin.post("/close-day", json={}).status_code == 400


# Fingerprints of November 2026 (seed 7, 185 a day) taken from the simulator before TBD jobs and
# odd job types existed: adding them must not move any other record.
NOVEMBER = (dt.date(2026, 11, 1), dt.date(2026, 11, 30))
NOVEMBER_CUSTOMERS = (5745, "7c3239034ba25b7637f483a9d5c960a2b3117c05fa9c677a499b62670cf23a3b")
NOVEMBER_DATED_JOBS = (6782, "7a0e9dd30bc7e5c3134e68422cd09c81b7f2a6ff4ae27dcf6baeb8176450a290")
NOV_10_LISTED = (205, "b114b2fe-be0a-46f6-8b9d-7c61ec5d6dbc", "faa9bf59-4319-4ace-bcd9-3aa480c42f0b")


def _fingerprint(lines: list[str]) -> tuple[int, str]:
    return len(lines), hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def test_odd_job_types_and_tbd_jobs_come_at_their_rate_without_moving_other_records() -> None:
    world = World(SimulatorConfig(churn=0.0))
    world.ensure_dates(*NOVEMBER)
    details = [world.opportunity_detail(o) for o in world.opportunities]
    dated = [(d, j) for d in details for j in d["jobs"] if j["jobDate"] is not None]

    assert _fingerprint(list(world.customers)) == NOVEMBER_CUSTOMERS
    assert _fingerprint([f"{d['id']}/{j['id']}/{j['jobDate']}" for d, j in dated]) == NOVEMBER_DATED_JOBS
    total, rows = world.list_customers(20261110, 20261110, True)
    assert (total, rows[0]["id"], rows[-1]["id"]) == NOV_10_LISTED
    branches = Counter(d["branch"]["name"].split()[0] for d in details for j in d["jobs"] if j["jobDate"] == 20261110)
    assert branches["KELOWNA"] == 5

    types = Counter(j["type"] for _d, j in dated)
    custom, undocumented = types[101] + types[102], types[13]
    assert types[101] and types[102]
    assert 0.0025 < custom / len(dated) < 0.008
    assert 0.001 < undocumented / len(dated) < 0.006
    eligible = [d for d in details if d["type"] in (1, 4, 8) and d["status"] in (BOOKED, COMPLETED, CLOSED)]
    with_tbd = [d for d in details if any(j["jobDate"] is None for j in d["jobs"])]
    assert {d["id"] for d in with_tbd} <= {d["id"] for d in eligible}
    assert 0.01 < len(with_tbd) / len(eligible) < 0.03
