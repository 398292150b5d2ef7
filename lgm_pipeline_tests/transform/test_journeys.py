from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.transform.journeys import (
    JOB_BRANCH_COLUMNS,
    job_branches,
    journey_id,
    normalize_journeys,
    normalize_phone,
)
from lgm_pipeline.transform.raw import yyyymmdd_to_date
from lgm_pipeline_tests.payloads import CALGARY, job, opportunity, raw_frames

DAY = dt.date(2026, 11, 25)
TENANT = load_tenants()[0]


def _normalize(opps: list[dict]) -> list[dict]:
    customers, opportunities, jobs = raw_frames(DAY, opps)
    frame = normalize_journeys(TENANT, customers, opportunities, jobs, dt.datetime.now(dt.UTC), "run-1")
    return frame.to_dict("records")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(403) 555-0123", "+14035550123"),
        ("+1 403.555.0123", "+14035550123"),
        ("403-555-0123 ext 4", "+14035550123;ext=4"),
        ("(403) 555-0123 x12", "+14035550123;ext=12"),
        ("555-0123", "555-0123"),
        ("  ", None),
        (None, None),
    ],
)
def test_phone_normalized_to_e164_or_kept_as_sent(raw: str | None, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


def test_yyyymmdd_integers_are_dates_not_timestamps() -> None:
    assert yyyymmdd_to_date(20261125) == DAY
    assert yyyymmdd_to_date(1764028800) is None  # a unix timestamp is not a service date
    assert yyyymmdd_to_date(None) is None
    assert yyyymmdd_to_date(float("inf")) is None  # json.loads reads Infinity


def test_booked_job_becomes_a_journey_with_branch_addresses_and_cost() -> None:
    [row] = _normalize([opportunity(DAY, branch=CALGARY, status=4)])
    assert row["location_id"] == "loc_lgm_calgary_001"
    assert row["status"] == "BOOKED" and row["smartmoving_status_name"] == "Booked" and row["booked"]
    assert row["pickup_address"] == "12 Elm St, Calgary, AB" and row["dropoff_address"] == "99 Oak Ave, Calgary, AB"
    assert row["estimated_cost"] == Decimal("850.00") and row["opportunity_total"] == Decimal("1050.00")
    assert row["currency"] == "CAD" and row["needs_truck"] is True
    assert row["customer_phone"] == "+14035550123"
    assert row["job_type_name"] == "Moving"
    assert row["client_id"] == TENANT.client_id
    assert row["external_ids"]["smartmoving_job_id"] == row["smartmoving_job_id"]


def test_status_30_is_lost_not_confirmed() -> None:
    [row] = _normalize([opportunity(DAY, status=30)])
    assert row["status"] == "LOST" and not row["booked"]


def test_journey_id_is_stable_per_job_and_tenant() -> None:
    assert journey_id(TENANT, "job-1") == journey_id(TENANT, "job-1")
    assert journey_id(TENANT, "job-1") != journey_id(TENANT, "job-2")


def test_multi_day_move_keeps_only_the_jobs_of_the_date() -> None:
    quote = 777
    opp = opportunity(DAY, jobs=[job(DAY, quote, 1), job(DAY + dt.timedelta(days=1), quote, 2)])
    rows = _normalize([opp])
    assert [r["job_number"] for r in rows] == ["777-1"]


def test_unknown_branch_and_status_are_carried_not_raised() -> None:
    [row] = _normalize([opportunity(DAY, branch="KELOWNA 🇨🇦 - Let's Get Moving", status=99)])
    assert row["location_id"] is None and row["branch_name"].startswith("KELOWNA")
    assert row["status"] is None and row["smartmoving_status"] == 99


def test_job_types_survive_a_null_type_elsewhere_in_the_date() -> None:
    """Read back from PostgreSQL, an integer column with a NULL in it is float64 (1.0, NaN)."""
    typed, untyped = 501, 502
    opps = [opportunity(DAY, jobs=[job(DAY, typed)]), opportunity(DAY, jobs=[job(DAY, untyped, type=None)])]
    customers, opportunities, jobs = raw_frames(DAY, opps)
    jobs["job_type"] = jobs["job_type"].astype("float64")  # as the IO manager's read returns it
    frame = normalize_journeys(TENANT, customers, opportunities, jobs, dt.datetime.now(dt.UTC), "run-1")
    by_number = {r["job_number"]: r for r in frame.to_dict("records")}
    assert by_number["501-1"]["job_type"] == 1 and by_number["501-1"]["job_type_name"] == "Moving"
    assert by_number["502-1"]["job_type"] is None


def test_job_without_address_has_no_locations() -> None:
    quote = 4242
    [row] = _normalize([opportunity(DAY, jobs=[job(DAY, quote, jobAddresses=[])])])
    assert row["pickup_address"] is None and row["dropoff_address"] is None and row["addresses"] == []


def test_the_raw_pulls_branch_reading_is_the_journeys_own() -> None:
    """The branch check of the raw pull reads branch and stage as journeys do, without normalizing the rest."""
    opps = [
        opportunity(DAY, branch=CALGARY, status=4),
        opportunity(DAY, branch="MOON BASE - Let's Get Moving", status=4),
        opportunity(DAY, branch=CALGARY, status=30),
        opportunity(DAY, branch=None, status=99),
    ]
    customers, opportunities, jobs = raw_frames(DAY, opps)
    normalized = normalize_journeys(TENANT, customers, opportunities, jobs, dt.datetime.now(dt.UTC), "run-1")
    branches = job_branches(TENANT, customers, opportunities, jobs)
    assert branches.to_dict("records") == normalized[JOB_BRANCH_COLUMNS].to_dict("records")
    assert branches["location_id"].isna().tolist() == [False, True, False, True]
