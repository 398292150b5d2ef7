"""Leads across days: repeats within the month, their independence from history, page faults, the date limit."""

from __future__ import annotations

import datetime as dt

import httpx

from lgm_pipeline.simulator import FaultConfig, RunningSimulator, SimulatorConfig, World
from lgm_pipeline.simulator.world import from_int_date, to_int_date
from lgm_pipeline_tests.simulator.conftest import MakeSimulator

DAY = dt.date(2026, 11, 25)
SHAPE = {
    "id",
    "createdAtUtc",
    "name",
    "phoneNumber",
    "phoneType",
    "emailAddress",
    "referralSource",
    "branch",
    "moveDate",
    "moveSize",
    "originAddress",
    "destinationAddress",
    "status",
    "opportunityId",
    "notes",
}


def _leads(world: World, first: dt.date, last: dt.date) -> list[dict]:
    world.ensure_lead_dates(first, last)
    return world.list_leads(to_int_date(first), to_int_date(last))[1]


def test_leads_have_the_agreed_shape_and_about_the_agreed_count() -> None:
    world = World(SimulatorConfig(customers_per_day=185, churn=0.0))
    leads = _leads(world, DAY, DAY)
    assert abs(len(leads) - round(185 * 0.4)) <= round(185 * 0.4 * 0.05) + 1
    assert all(set(lead) == SHAPE for lead in leads)
    assert {lead["status"] for lead in leads} <= {0, 1, 50}
    for lead in leads:
        created = dt.date.fromisoformat(lead["createdAtUtc"][:10])
        assert lead["createdAtUtc"].endswith("Z") and created == DAY
        if lead["moveDate"] is not None:
            assert 1 <= (from_int_date(lead["moveDate"]) - created).days <= 90
        assert lead["branch"] is None or lead["branch"]["name"] in world.branch_names


def test_repeats_reach_back_up_to_a_month_and_only_backwards() -> None:
    world = World(SimulatorConfig(customers_per_day=185, churn=0.0))
    leads = _leads(world, DAY - dt.timedelta(days=60), DAY)
    first_seen: dict[tuple[str, str], str] = {}
    gaps = []
    for lead in leads:  # ordered by createdAtUtc
        for key in ("phoneNumber", "emailAddress"):
            value = lead[key]
            if not value:
                continue
            if (key, value) in first_seen:
                gaps.append(
                    (
                        dt.datetime.fromisoformat(lead["createdAtUtc"][:10])
                        - dt.datetime.fromisoformat(first_seen[key, value][:10])
                    ).days
                )
            else:
                first_seen[key, value] = lead["createdAtUtc"]
    assert len(gaps) > 0.02 * len(leads)
    assert any(gap > 0 for gap in gaps) and any(gap == 0 for gap in gaps)


def test_a_days_repeats_do_not_depend_on_earlier_days_being_generated_or_patched() -> None:
    fresh = World(SimulatorConfig(customers_per_day=185, churn=0.0))
    worked = World(SimulatorConfig(customers_per_day=185, churn=0.0))
    for lead in _leads(worked, DAY - dt.timedelta(days=30), DAY - dt.timedelta(days=1)):
        worked.patch_lead(lead["id"], {"phoneNumber": "patched", "emailAddress": "patched"})
    assert _leads(fresh, DAY, DAY) == _leads(worked, DAY, DAY)


def test_lead_pages_get_the_same_faults_as_customer_pages(simulator: RunningSimulator, api: httpx.Client) -> None:
    params = {"From": to_int_date(DAY), "To": to_int_date(DAY), "PageSize": 5}
    simulator.set_faults(FaultConfig(incomplete_pages=[2], malformed_pages=[3]))
    assert all("id" in lead for lead in api.get("/api/leads", params=params | {"Page": 1}).json()["pageResults"])
    assert all("id" not in lead for lead in api.get("/api/leads", params=params | {"Page": 2}).json()["pageResults"])
    malformed = api.get("/api/leads", params=params | {"Page": 3})
    assert malformed.status_code == 200 and malformed.text and not malformed.text.rstrip().endswith("}")
    simulator.set_faults(FaultConfig(down=True))
    assert api.get("/api/leads", params=params).status_code >= 500


def test_lead_date_ranges_over_a_year_are_refused_and_page_size_is_capped(make_simulator: MakeSimulator) -> None:
    simulator = make_simulator(max_page_size=3)
    with httpx.Client(base_url=simulator.base_url, headers={"x-api-key": simulator.api_key}, timeout=10) as api:
        refused = api.get("/api/leads", params={"From": 20250101, "To": 20260105})
        assert refused.status_code == 400
        body = api.get("/api/leads", params={"From": 20261125, "To": 20261125, "PageSize": 50}).json()
        assert body["pageSize"] == 3 and body["totalThisPage"] == 3
