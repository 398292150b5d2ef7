"""What a journey means to the people who read it: booked work, per-job money, real dates, usable contacts."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from lgm_pipeline.storage.tables import journeys
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.tenants.config import CustomJobType
from lgm_pipeline.transform.journeys import COLUMNS_FROM_DETAILS, is_journey, normalize_journeys
from lgm_pipeline.transform.raw import customers_frame, jobs_frame, opportunities_frame, opportunity_summaries
from lgm_pipeline_tests.payloads import TORONTO, customer_for, job, opportunity, raw_frames

DAY = dt.date(2026, 11, 25)
TENANT = load_tenants()[0]


def _rows(opps: list[dict], tenant: Any = TENANT, customers: list[dict] | None = None) -> list[dict]:
    frames = raw_frames(DAY, opps)
    if customers is not None:
        frames[0]["payload"] = customers
    frame = normalize_journeys(tenant, *frames, dt.datetime.now(dt.UTC), "run-1")
    return frame.to_dict("records")


def _charge(amount: Any) -> dict[str, Any]:
    return {"name": "Labour", "chargeCategory": "Labor", "subtotal": amount, "discountAmount": 0, "totalCost": amount}


# --- 1. what a journey is ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "stage", "booked"),
    [
        (4, "BOOKED", True),
        (10, "COMPLETED", True),
        (11, "CLOSED", True),  # closed in SmartMoving is not an audit
        (20, "CANCELLED", False),
        (30, "LOST", False),
        (50, "BAD_LEAD", False),  # a bad lead is not a lost sale
        (0, "UNBOOKED", False),
    ],
)
def test_stage_names_say_what_happened(status: int, stage: str, booked: bool) -> None:
    [row] = _rows([opportunity(DAY, status=status)])
    assert (row["status"], row["booked"]) == (stage, booked)


def test_leads_and_unbooked_work_are_not_journeys_but_later_statuses_update_one() -> None:
    opps = [opportunity(DAY, status=s) for s in (0, 1, 3, 4, 10, 11, 20, 30, 50, 99)]
    frame = normalize_journeys(TENANT, *raw_frames(DAY, opps), dt.datetime.now(dt.UTC), "run-1")
    statuses = frame["smartmoving_status"].tolist()
    fresh = is_journey(frame, existing_ids=set())
    # booked work, and an unknown status (it may be booked: the status rule quarantines it for a look)
    assert [s for s, keep in zip(statuses, fresh, strict=True) if keep] == [4, 10, 11, 99]
    cancelled_id = frame.loc[frame["smartmoving_status"] == 20, "id"].item()
    again = is_journey(frame, existing_ids={cancelled_id})
    assert [s for s, keep in zip(statuses, again, strict=True) if keep] == [4, 10, 11, 20, 99]


# --- 3. money ------------------------------------------------------------------------------------


def test_a_two_job_opportunity_sums_to_its_subtotal_not_twice_its_total() -> None:
    quote = 555
    opp = opportunity(
        DAY,
        jobs=[
            job(DAY, quote, 1, type=3, jobAddresses=["1 A St"], estimatedCharges=[_charge(400.0)]),
            job(DAY, quote, 2, estimatedCharges=[_charge(350.0), _charge(250.0)]),
        ],
        estimatedTotal={"subtotal": 1000.0, "taxableAmount": 1000.0, "tax": 50.0, "finalTotal": 1050.0},
    )
    rows = _rows([opp])
    assert sum(r["estimated_cost"] for r in rows) == Decimal("1000.00") == rows[0]["opportunity_subtotal"]
    assert {r["opportunity_total"] for r in rows} == {Decimal("1050.00")}
    assert {r["opportunity_tax"] for r in rows} == {Decimal("50.00")}


def test_amounts_are_exact_decimals_with_the_tenant_currency() -> None:
    [row] = _rows([opportunity(DAY, jobs=[job(DAY, 1, estimatedCharges=[_charge(0.1), _charge(0.2)])])])
    assert row["estimated_cost"] == Decimal("0.30") and isinstance(row["estimated_cost"], Decimal)
    euro = dataclasses.replace(TENANT, currency="EUR")
    assert _rows([opportunity(DAY)], tenant=euro)[0]["currency"] == "EUR"


def test_actual_cost_comes_from_actual_charges_and_no_charges_is_no_estimate() -> None:
    settled = job(DAY, 1, actualCharges=[_charge(910.5), _charge("39.50")])
    unpriced = job(DAY, 2, estimatedCharges=[])
    rows = {r["job_number"]: r for r in _rows([opportunity(DAY, jobs=[settled]), opportunity(DAY, jobs=[unpriced])])}
    assert rows["1-1"]["actual_cost"] == Decimal("950.00")
    assert rows["2-1"]["estimated_cost"] is None and rows["2-1"]["actual_cost"] is None


def test_an_unreadable_amount_is_named_not_summed_around_or_taken_for_none() -> None:
    unreadable = job(DAY, 1, estimatedCharges=[_charge(850.0), _charge("TBD")])
    absurd = job(DAY, 2, actualCharges=[_charge("1e40")])
    opp = opportunity(DAY, jobs=[unreadable, absurd], estimatedTotal={"subtotal": "1,250.00", "finalTotal": 1312.5})
    rows = {r["job_number"]: r for r in _rows([opp])}
    # 850 would understate the job: no estimate at all, and why.
    assert rows["1-1"]["estimated_cost"] is None and rows["2-1"]["actual_cost"] is None
    assert rows["1-1"]["opportunity_subtotal"] is None and rows["1-1"]["opportunity_total"] == Decimal("1312.50")
    reasons = {(f["column"], f["value"]) for f in rows["1-1"]["dq_flags"]}
    assert reasons == {
        ("estimated_cost", "estimatedCharges[1].totalCost: unreadable 'TBD' (expected an amount)"),
        ("opportunity_subtotal", "estimatedTotal.subtotal: unreadable '1,250.00' (expected an amount)"),
    }
    [absurd_flag] = [f for f in rows["2-1"]["dq_flags"] if f["column"] == "actual_cost"]
    assert absurd_flag["value"].startswith("actualCharges[0].totalCost: unreadable '1e40' (expected an amount under")


def test_a_job_whose_amounts_all_read_carries_no_flag() -> None:
    [row] = _rows([opportunity(DAY, jobs=[job(DAY, 1, estimatedCharges=[_charge("850"), {"name": "Fee"}])])])
    assert row["estimated_cost"] == Decimal("850.00") and row["dq_flags"] == []


# --- 4. dates ------------------------------------------------------------------------------------


def test_a_job_without_a_date_is_not_filed_on_its_opportunitys_date() -> None:
    quote = 808
    opp = opportunity(DAY, jobs=[job(DAY, quote, 1), job(DAY, quote, 2, jobDate=None, type=9)])
    rows = _rows([opp])
    assert [r["job_number"] for r in rows] == ["808-1"]


def test_a_pull_of_two_dates_files_each_job_under_its_own_date() -> None:
    tomorrow = DAY + dt.timedelta(days=1)
    quote = 909
    opp = opportunity(DAY, jobs=[job(DAY, quote, 1, type=3), job(tomorrow, quote, 2)])
    fetched = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    customers = customers_frame([customer_for(opp)], [DAY, tomorrow], fetched, "run-1")
    assert sorted(customers["service_date"]) == [DAY, tomorrow]
    opps = opportunities_frame(
        {opp["id"]: opp}, opportunity_summaries(customers), {opp["id"]: fetched}, [DAY, tomorrow], "r"
    )
    assert sorted(opps["service_date"]) == [DAY, tomorrow]
    assert jobs_frame(opps, DAY, "r")["job_number"].tolist() == ["909-1"]
    assert jobs_frame(opps, tomorrow, "r")["job_number"].tolist() == ["909-2"]


# --- 6. job types and addresses ---------------------------------------------------------------


def test_an_unknown_job_type_stays_a_journey_named_by_its_code() -> None:
    [row] = _rows([opportunity(DAY, jobs=[job(DAY, 1, type=13)])])
    assert row["job_type_name"] == "Unknown (13)" and row["needs_truck"] is None


def test_custom_job_type_names_come_from_the_tenant() -> None:
    piano = CustomJobType(101, "Piano move", needs_truck=True, addresses="route")
    tenant = dataclasses.replace(TENANT, job_types=(piano,))
    [row] = _rows([opportunity(DAY, jobs=[job(DAY, 1, type=101)])], tenant=tenant)
    assert (row["job_type_name"], row["needs_truck"]) == ("Piano move", True)
    assert row["title"].startswith("Piano move - ")


@pytest.mark.parametrize(
    ("job_type", "addresses", "pickup", "dropoff", "stops", "truck"),
    [
        (1, ["A", "B", "C"], "A", "C", ["B"], True),
        (6, ["Dest"], None, "Dest", [], False),  # unload only: the one address is the drop-off
        (9, ["Home"], None, "Home", [], True),  # storage out: delivered to the address
        (8, ["Home"], "Home", None, [], True),  # storage in: picked up there
        (3, ["Home"], "Home", None, [], False),  # packing: no truck
        (1, ["  ", "A", ""], "A", None, [], True),  # blanks stripped
    ],
)
def test_address_roles_follow_the_job_type(
    job_type: int, addresses: list[str], pickup: str | None, dropoff: str | None, stops: list[str], truck: bool
) -> None:
    [row] = _rows([opportunity(DAY, jobs=[job(DAY, 1, type=job_type, jobAddresses=addresses)])])
    assert (row["pickup_address"], row["dropoff_address"], row["stop_addresses"]) == (pickup, dropoff, stops)
    assert row["needs_truck"] is truck


# --- 7. contacts -------------------------------------------------------------------------------


def test_contacts_keep_extensions_fall_back_to_a_secondary_number_and_tidy_names_and_emails() -> None:
    opp = opportunity(DAY)
    opp["customer"] |= {"name": "  Zoë   O'Brien ", "emailAddress": " Zoe.OBrien@Example.COM", "phoneNumber": "n/a"}
    listed = customer_for(opp)
    listed["secondaryPhoneNumbers"] = [{"phoneNumber": "(587) 555-0199 ext. 12", "phoneType": 2}]
    [row] = _rows([opp], customers=[listed])
    assert row["customer_name"] == "Zoë O'Brien"
    assert row["customer_email"] == "zoe.obrien@example.com"
    assert row["customer_phone"] == "+15875550199;ext=12" and row["customer_phone_type"] == "Office"


def test_primary_phone_type_is_kept() -> None:
    opp = opportunity(DAY)
    listed = customer_for(opp) | {"phoneType": 1}
    [row] = _rows([opp], customers=[listed])
    assert row["customer_phone"] == "+14035550123" and row["customer_phone_type"] == "Home"


def test_contacts_are_the_lists_copy_not_a_gap_filled_from_older_details() -> None:
    # The details (possibly cached for hours) still carry the old number and email; the list, pulled every
    # cycle, says the customer's number is now one that cannot be dialled and no email.
    opp = opportunity(DAY)
    opp["customer"] |= {"phoneNumber": "+17785550105", "emailAddress": "old@example.com"}
    listed = customer_for(opp) | {"phoneNumber": "555-0163", "emailAddress": None}
    [row] = _rows([opp], customers=[listed])
    assert row["customer_phone"] == "555-0163"  # as sent, so the contact rule flags it
    assert row["customer_email"] is None


def test_the_details_copy_of_the_customer_is_read_when_the_list_has_none() -> None:
    opp = opportunity(DAY)
    opp["customer"] |= {"name": "Ada Moss", "phoneNumber": "403-555-0177"}
    customers, *others = raw_frames(DAY, [opp])
    customers["customer_id"] = "another-customer"  # the list does not show this one (a carried multi-day move)
    [row] = normalize_journeys(TENANT, customers, *others, dt.datetime.now(dt.UTC), "run-1").to_dict("records")
    assert (row["customer_name"], row["customer_phone"]) == ("Ada Moss", "+14035550177")


def test_only_the_columns_declared_from_details_follow_older_details() -> None:
    # The same listed opportunity with details fetched now and details fetched hours before everything
    # the list does not show changed: the columns that differ are the declared ones.
    fresh = opportunity(DAY)
    stale = copy.deepcopy(fresh) | {
        "branch": {"name": TORONTO, "phoneNumber": None},
        "opportunityType": 2,
        "moveSize": {"name": "Studio", "volume": 200},
        "volume": 210,
        "weight": 1400,
        "estimatedTotal": {"subtotal": 10.0, "tax": 1.0, "finalTotal": 11.0},
        "salesAssignee": {"id": "u9", "name": "Old Assignee"},
        "customer": {**fresh["customer"], "name": "Old Name", "phoneNumber": "+17785550105", "emailAddress": "o@x.ca"},
    }
    stale["jobs"] = [
        j | {"jobAddresses": ["1 Old Rd, Calgary, AB"], "estimatedCharges": [], "confirmed": False}
        for j in stale["jobs"]
    ]
    listed, *_ = raw_frames(DAY, [fresh])
    now = dt.datetime.now(dt.UTC)
    [a] = normalize_journeys(TENANT, listed, *raw_frames(DAY, [fresh])[1:], now, "r").to_dict("records")
    [b] = normalize_journeys(TENANT, listed, *raw_frames(DAY, [stale])[1:], now, "r").to_dict("records")
    differing = {c for c in a if repr(a[c]) != repr(b[c])}
    assert {"location_id", "branch_name", "addresses", "opportunity_total"} <= differing
    assert differing <= COLUMNS_FROM_DETAILS, differing - COLUMNS_FROM_DETAILS


# --- 8. fields the board needs -----------------------------------------------------------------


def test_opportunity_type_volume_weight_and_sales_assignee() -> None:
    opp = opportunity(DAY, opportunityType=2, volume=640, weight=4480, salesAssignee={"id": "u1", "name": "Priya Shah"})
    [row] = _rows([opp])
    assert row["opportunity_type"] == "Long distance (other province)"
    assert (row["volume"], row["weight"]) == (Decimal("640.00"), Decimal("4480.00"))
    assert row["sales_assignee"] == "Priya Shah"


def test_frame_columns_are_the_table_columns() -> None:
    frame = normalize_journeys(TENANT, *raw_frames(DAY, [opportunity(DAY)]), dt.datetime.now(dt.UTC), "r")
    assert list(frame.columns) == [c.name for c in journeys.columns]
    assert isinstance(frame, pd.DataFrame)


def test_the_listed_status_wins_over_cached_details() -> None:
    opp = opportunity(DAY, status=10)
    listed = customer_for(opp)
    listed["opportunities"][0]["status"] = 11  # closed since the details were fetched
    [row] = _rows([opp], customers=[listed])
    assert (row["status"], row["smartmoving_status"]) == ("CLOSED", 11)
