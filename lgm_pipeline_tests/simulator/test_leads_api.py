"""The simulator's leads: the paging envelope, the creation-date filter, repeats, conversions, hostile patches."""

from __future__ import annotations

import datetime as dt

import httpx

from lgm_pipeline.simulator.config import SimulatorConfig
from lgm_pipeline.simulator.world import World

FIRST, LAST = 20261124, 20261125


def test_leads_are_paged_and_filtered_by_creation_date(api: httpx.Client) -> None:
    pages, seen = 0, []
    while True:
        pages += 1
        body = api.get("/api/leads", params={"From": FIRST, "To": LAST, "Page": pages, "PageSize": 7}).json()
        seen.extend(body["pageResults"] or [])
        if body["lastPage"]:
            break
    assert pages == body["totalPages"] > 1 and len(seen) == body["totalResults"] == len({s["id"] for s in seen})
    assert all(s["createdAtUtc"][:10].replace("-", "") in (str(FIRST), str(LAST)) for s in seen)
    assert [s["createdAtUtc"] for s in seen] == sorted(s["createdAtUtc"] for s in seen)
    empty = api.get("/api/leads", params={"From": 20261124, "To": 20261123}).json()
    assert empty["pageResults"] is None and empty["totalResults"] == 0


def test_a_lead_by_id_and_an_unknown_one(api: httpx.Client) -> None:
    [lead] = api.get("/api/leads", params={"From": FIRST, "To": FIRST, "PageSize": 1}).json()["pageResults"]
    assert api.get(f"/api/leads/{lead['id']}").json() == lead
    missing = api.get("/api/leads/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 400 and missing.json() == {"message": "Lead not found"}


def test_leads_are_the_same_whatever_the_order_and_change_no_other_record() -> None:
    one, two = (
        World(SimulatorConfig(customers_per_day=40, churn=0.0)),
        World(SimulatorConfig(customers_per_day=40, churn=0.0)),
    )
    one.ensure_dates(dt.date(2026, 11, 25), dt.date(2026, 11, 25))
    before = sorted(one.opportunities)
    one.ensure_lead_dates(dt.date(2026, 11, 20), dt.date(2026, 11, 25))
    two.ensure_lead_dates(dt.date(2026, 11, 25), dt.date(2026, 11, 25))
    two.ensure_lead_dates(dt.date(2026, 11, 20), dt.date(2026, 11, 24))
    assert sorted(one.opportunities) == before
    day = dt.date(2026, 11, 25)
    assert [one.leads[i] for i in one.lead_ids_on(day)] == [two.leads[i] for i in two.lead_ids_on(day)]


def test_some_leads_repeat_a_household_and_convert_over_time() -> None:
    world = World(SimulatorConfig(customers_per_day=185, churn=0.02))
    world.ensure_lead_dates(dt.date(2026, 11, 1), dt.date(2026, 11, 14))
    phones = [lead["phoneNumber"] for lead in world.leads.values() if lead["phoneNumber"]]
    assert len(phones) - len(set(phones)) > 10  # the same phone more than once
    log = world.evolve(1)
    converted = [lead for lead in world.leads.values() if lead["opportunityId"]]
    assert converted and any(line.startswith("convert ") for line in log)
    for lead in converted:
        assert lead["opportunityId"] in world.opportunities and lead["status"] == 1


def test_admin_converts_and_patches_a_lead(api: httpx.Client, admin: httpx.Client) -> None:
    [lead] = api.get("/api/leads", params={"From": FIRST, "To": FIRST, "PageSize": 1}).json()["pageResults"]
    converted = admin.post("/convert-lead", json={"lead_id": lead["id"]}).json()
    assert api.get(f"/api/opportunities/{converted['opportunity_id']}").status_code == 200
    admin.post("/patch-lead", json={"lead_id": lead["id"], "fields": {"name": None, "moveDate": "soon"}})
    served = api.get(f"/api/leads/{lead['id']}").json()
    assert (served["opportunityId"], served["name"], served["moveDate"]) == (converted["opportunity_id"], None, "soon")
