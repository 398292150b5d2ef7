"""The /v1/api surface as a client sees it: auth, paging, the date filter, shapes, errors."""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import Any

import httpx

from lgm_pipeline.simulator import RunningSimulator
from lgm_pipeline.smartmoving.enums import CUSTOM_JOB_TYPES, JobType, OpportunityStatus
from lgm_pipeline.tenants import load_tenants

DAY = 20260302
ENVELOPE = {"pageNumber", "pageSize", "lastPage", "totalPages", "totalResults", "totalThisPage", "pageResults"}
# The simulator also serves custom types and the undocumented 13, as the live account does.
KNOWN_JOB_TYPES = {int(t) for t in JobType} | set(CUSTOM_JOB_TYPES) | {13}
KNOWN_STATUSES = {int(s) for s in OpportunityStatus}


def _day_params(**extra: Any) -> dict[str, Any]:
    return {"FromServiceDate": DAY, "ToServiceDate": DAY, **extra}


def _all_pages(api: httpx.Client, page_size: int, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        body = api.get("/api/customers", params={"Page": page, "PageSize": page_size, **params}).json()
        rows.extend(body["pageResults"] or [])
        if body["lastPage"]:
            return rows
        page += 1


def _collation_key(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.strip().casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def test_missing_or_wrong_key_is_401_and_query_key_works(simulator: RunningSimulator) -> None:
    url = f"{simulator.base_url}/api/ping"
    missing = httpx.get(url)
    wrong = httpx.get(url, headers={"x-api-key": "not-the-key"})
    assert missing.status_code == wrong.status_code == 401
    assert isinstance(missing.json()["message"], str)
    assert httpx.get(url, headers={"x-api-key": simulator.api_key}).json() == {"message": "pong"}
    assert httpx.get(url, params={"api-key": simulator.api_key}).status_code == 200
    stats = simulator.stats()
    assert (stats["unauthorized"], stats["ping"], stats["total"]) == (2, 2, 4)


def test_paging_envelope_and_name_order(api: httpx.Client) -> None:
    first = api.get("/api/customers", params=_day_params()).json()
    assert set(first) == ENVELOPE
    assert first["pageNumber"] == 1 and first["pageSize"] == 50  # the default page size
    everything = api.get("/api/customers", params=_day_params(PageSize=1000)).json()
    total = everything["totalResults"]
    assert everything["lastPage"] and everything["totalPages"] == 1 and everything["totalThisPage"] == total

    paged = _all_pages(api, 7, **_day_params())
    assert [r["id"] for r in paged] == [r["id"] for r in everything["pageResults"]]
    assert len({r["id"] for r in paged}) == total
    keys = [(_collation_key(r["name"]), r["id"]) for r in paged]
    assert keys == sorted(keys)

    last = api.get("/api/customers", params=_day_params(Page=(total + 6) // 7, PageSize=7)).json()
    assert last["lastPage"] and last["totalPages"] == (total + 6) // 7
    assert last["totalThisPage"] == total - 7 * (last["totalPages"] - 1)
    beyond = api.get("/api/customers", params=_day_params(Page=99, PageSize=7)).json()
    assert beyond["pageResults"] == [] and beyond["lastPage"]


def test_page_size_is_capped_and_params_are_case_insensitive(make_simulator: Any) -> None:
    sim = make_simulator(max_page_size=10)
    body = httpx.get(
        f"{sim.base_url}/api/customers",
        params={"page": 1, "pagesize": 500, "fromservicedate": DAY, "toservicedate": DAY},
        headers={"x-api-key": sim.api_key},
    ).json()
    assert body["pageSize"] == 10 and body["totalThisPage"] == 10


def test_date_filter_lists_customers_whose_opportunity_or_job_touches_the_range(
    api: httpx.Client, simulator: RunningSimulator
) -> None:
    rows = _all_pages(api, 100, **_day_params())
    assert rows
    for row in rows:
        assert set(row) >= {"id", "name", "phoneNumber", "phoneType", "emailAddress", "address"}
        assert isinstance(row["secondaryPhoneNumbers"], list)
        for opp in row["opportunities"]:
            assert isinstance(opp["quoteNumber"], str) and opp["status"] in KNOWN_STATUSES
            assert all(set(j) == {"id", "jobNumber", "serviceDate", "type"} for j in opp["jobs"])
        assert any(j["serviceDate"] == DAY for o in row["opportunities"] for j in o["jobs"])

    day = dt.date(2026, 3, 2)
    expected = {
        simulator.world.opportunity_detail(o)["customer"]["id"] for o in simulator.world.opportunity_ids_on(day)
    }
    assert {r["id"] for r in rows} == expected
    listed_opps = {o["id"] for r in rows for o in r["opportunities"]}
    assert listed_opps == set(simulator.world.opportunity_ids_on(day))

    without = api.get("/api/customers", params=_day_params(IncludeOpportunityInfo="False")).json()
    assert all("opportunities" not in r for r in without["pageResults"])
    nothing = api.get("/api/customers", params={"FromServiceDate": 20260305, "ToServiceDate": 20260304}).json()
    assert nothing["totalResults"] == 0 and nothing["pageResults"] is None


def test_bad_parameters_are_400(api: httpx.Client) -> None:
    for params in (
        {"FromServiceDate": "2026-03-02"},
        {"FromServiceDate": 20261345},
        {"Page": 0},
        {"PageSize": "ten"},
        {"IncludeOpportunityInfo": "maybe"},
        {"FromServiceDate": 20250101, "ToServiceDate": 20270101},
    ):
        response = api.get("/api/customers", params=params)
        assert response.status_code == 400, params
        assert isinstance(response.json()["message"], str)


def test_opportunity_details_shape(api: httpx.Client, simulator: RunningSimulator) -> None:
    for opp_id in simulator.world.opportunity_ids_on(dt.date(2026, 3, 2)):
        body = api.get(f"/api/opportunities/{opp_id}").json()
        assert body["id"] == opp_id and isinstance(body["quoteNumber"], int)
        assert set(body["customer"]) == {"id", "name", "emailAddress", "phoneNumber", "phoneType"}
        assert set(body["branch"]) == {"name", "phoneNumber"}  # no branch id, as in the real API
        assert body["status"] in KNOWN_STATUSES and isinstance(body["serviceDate"], int)
        assert set(body["moveSize"]) == {"name", "description", "volume"}
        assert body["salesAssignee"] is None or set(body["salesAssignee"]) == {"id", "name"}
        if body["status"] in (0, 1, 3):
            assert body["estimatedTotal"] is None
        if body["estimatedTotal"] is not None:
            total = body["estimatedTotal"]
            assert round(total["subtotal"] + total["tax"], 2) == total["finalTotal"]
        for n, job in enumerate(body["jobs"], start=1):
            assert set(job) == {
                "id",
                "jobNumber",
                "jobDate",
                "type",
                "confirmed",
                "jobAddresses",
                "estimatedCharges",
                "actualCharges",
            }
            assert job["jobNumber"] == f"{body['quoteNumber']}-{n}" and job["type"] in KNOWN_JOB_TYPES
            for charge in job["estimatedCharges"]:
                assert set(charge) == {
                    "name",
                    "chargeCategory",
                    "description",
                    "subtotal",
                    "discountAmount",
                    "totalCost",
                }
        jobs = api.get(f"/api/opportunities/{opp_id}/jobs").json()
        assert [j["id"] for j in jobs] == [j["id"] for j in body["jobs"]]
        assert set(jobs[0]) == {
            "id",
            "type",
            "jobNumber",
            "jobDate",
            "startTimeUtc",
            "endTimeUtc",
            "completedAtUtc",
            "confirmedAtUtc",
            "closedAtUtc",
        }


def test_unknown_opportunity_is_400_not_404(api: httpx.Client) -> None:
    for path in ("/api/opportunities/00000000-0000-4000-8000-000000000000", "/api/opportunities/nope/jobs"):
        response = api.get(path)
        assert response.status_code == 400
        assert response.json() == {"message": "Opportunity not found"}
    assert api.get("/api/no-such-resource").status_code == 404


def test_branches_are_the_tenant_branches_plus_an_unknown_one(api: httpx.Client) -> None:
    branches = api.get("/api/branches").json()
    configured = {b.smartmoving_branch_name for t in load_tenants() if t.key == "lgm" for b in t.branches}
    names = {b["name"] for b in branches}
    assert configured < names and len(names - configured) == 1
    assert sum(b["isPrimary"] for b in branches) == 1
    for branch in branches:
        assert set(branch) == {"id", "name", "phoneNumber", "dispatchLocation", "isPrimary"}
        location = branch["dispatchLocation"]
        assert set(location) == {"fullAddress", "street", "city", "state", "zip", "lat", "lng"}


def test_generated_data_is_realistically_messy(simulator: RunningSimulator) -> None:
    world = simulator.world
    world.ensure_dates(dt.date(2026, 3, 1), dt.date(2026, 3, 14))
    customers = list(world.customers.values())
    opportunities = [world.opportunity_detail(o) for o in world.opportunities]
    assert any(not c["emailAddress"] for c in customers)
    assert any(not c["phoneNumber"] for c in customers)
    assert any("ext" in (c["phoneNumber"] or "") for c in customers)
    assert any(any(ord(ch) > 127 for ch in c["name"]) or "'" in c["name"] for c in customers)
    assert any(len(o["jobs"]) == 2 for o in opportunities)
    assert any(not j["jobAddresses"] for o in opportunities for j in o["jobs"])
    statuses = [o["status"] for o in opportunities]
    assert max(set(statuses), key=statuses.count) == OpportunityStatus.BOOKED
    assert {0, 1, 3, 10, 11, 20, 30} <= set(statuses)
    assert len({c["id"] for c in customers}) < len(opportunities)  # some customers have two


def test_a_deleted_opportunity_leaves_the_list_and_its_details_answer_400(
    api: httpx.Client, admin: httpx.Client
) -> None:
    def listed() -> set[str]:
        return {o["id"] for c in _all_pages(api, 500, **_day_params()) for o in c.get("opportunities") or []}

    victim = sorted(listed())[0]
    assert admin.post("/delete", json={"opportunity_id": victim}).json() == {"deleted": victim}
    assert victim not in listed()
    for path in (f"/api/opportunities/{victim}", f"/api/opportunities/{victim}/jobs"):
        response = api.get(path)
        assert (response.status_code, response.json()) == (400, {"message": "Opportunity not found"})
