"""Leads as sales reads them: typed, contacts normalized, branch mapped, repeats flagged, bad ones held back."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from lgm_pipeline.assets.leads import utc_dates
from lgm_pipeline.quality.rules import validate_leads
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.transform.leads import lead_id, mark_probable_duplicates, normalize_leads, raw_leads_frame
from lgm_pipeline_tests.payloads import CALGARY

TENANT = load_tenants()[0]
DAY = dt.date(2026, 11, 25)
FETCHED = dt.datetime(2026, 11, 25, 20, tzinfo=dt.UTC)
SQL = "Robert'); DROP TABLE leads;--"


def lead(n: int, **overrides: Any) -> dict[str, Any]:
    base = {
        "id": f"lead-{n}",
        "createdAtUtc": "2026-11-25T15:00:00Z",  # 10:00 in Toronto
        "name": "Amélie  Tremblay",
        "phoneNumber": f"(403) 555-01{n:02d}",
        "phoneType": 0,
        "emailAddress": f" Amelie{n}@Example.com",
        "referralSource": "Google",
        "branch": {"name": CALGARY},
        "moveDate": 20261215,
        "moveSize": "2 Bedroom",
        "status": 0,
        "opportunityId": None,
    }
    return base | overrides


def _leads(*payloads: dict[str, Any], dates: list[dt.date] | None = None) -> pd.DataFrame:
    raw = raw_leads_frame(TENANT, list(payloads), dates or [DAY], FETCHED, "run-1")
    return normalize_leads(TENANT, raw, FETCHED, "run-1")


def test_a_lead_is_typed_and_its_contacts_normalized() -> None:
    [row] = _leads(lead(1)).to_dict("records")
    assert row["id"] == lead_id(TENANT, "lead-1")
    assert (row["name"], row["phone"], row["email"]) == ("Amélie Tremblay", "+14035550101", "amelie1@example.com")
    assert row["location_id"] == "loc_lgm_calgary_001" and row["created_date"] == DAY
    assert (row["move_date"], row["move_size"], row["source"], row["status"]) == (
        dt.date(2026, 12, 15),
        "2 Bedroom",
        "Google",
        "NEW",
    )


def test_a_converted_lead_names_its_opportunity() -> None:
    [row] = _leads(lead(1, status=1, opportunityId="opp-9")).to_dict("records")
    assert (row["status"], row["converted_opportunity_id"]) == ("CONVERTED", "opp-9")


def test_leads_are_filed_under_their_creation_date_in_the_tenant_timezone() -> None:
    late = lead(1, createdAtUtc="2026-11-26T03:30:00Z")  # 22:30 on the 25th in Toronto
    tomorrow = lead(2, createdAtUtc="2026-11-26T06:00:00Z")
    rows = _leads(late, tomorrow, dates=[DAY])
    assert rows["smartmoving_lead_id"].tolist() == ["lead-1"]
    # the UTC dates a local day spans: SmartMoving filters by UTC date
    assert utc_dates(TENANT, [DAY - dt.timedelta(days=1), DAY]) == (
        DAY - dt.timedelta(days=1),
        DAY + dt.timedelta(days=1),
    )


@pytest.mark.parametrize(
    ("overrides", "held"),
    [
        ({"name": "  "}, True),
        ({"phoneNumber": None, "emailAddress": None}, True),
        ({"phoneNumber": "555-0101", "emailAddress": "not-an-email"}, True),
        ({"phoneNumber": None}, False),  # an email is enough
        ({"emailAddress": ""}, False),  # a phone is enough
        ({"name": SQL}, False),  # text is data
    ],
)
def test_a_lead_nobody_can_reach_is_quarantined_with_its_reason(overrides: dict, held: bool) -> None:
    outcome = validate_leads(_leads(lead(1, **overrides)), TENANT)
    [row] = outcome.frame.to_dict("records")
    assert (row["quarantine_reasons"] is not None) is held
    if held:
        assert row["quarantine_reasons"][0]["rule"] == "lead_contact"


def test_an_unmapped_branch_is_a_warning_and_no_branch_is_fine() -> None:
    frame = _leads(lead(1, branch={"name": "KELOWNA 🇨🇦 - Let's Get Moving"}), lead(2, branch=None))
    outcome = validate_leads(frame, TENANT)
    flags = {r["smartmoving_lead_id"]: [f["rule"] for f in r["dq_flags"]] for r in outcome.frame.to_dict("records")}
    assert flags == {"lead-1": ["lead_branch_mapping"], "lead-2": []}
    assert outcome.quarantined == 0


def test_the_same_phone_or_email_within_30_days_is_a_probable_duplicate() -> None:
    first = lead(1, createdAtUtc="2026-11-25T14:00:00Z")
    again_by_phone = lead(2, phoneNumber="403.555.0101", emailAddress="other@example.com")
    stranger = lead(3)
    frame = _leads(first, again_by_phone, stranger)
    stored = pd.DataFrame(
        [{"id": "stored-1", "phone": "+14035550103", "email": None, "created_at": FETCHED - dt.timedelta(days=20)}]
    )
    marked = mark_probable_duplicates(frame, stored).set_index("smartmoving_lead_id")["probable_duplicate_of"]
    assert marked["lead-1"] is None
    assert marked["lead-2"] == lead_id(TENANT, "lead-1")
    assert marked["lead-3"] == "stored-1"  # same phone as a lead stored 20 days ago
    outcome = validate_leads(mark_probable_duplicates(frame, stored), TENANT)
    assert {r.rule.name: r.failing_rows for r in outcome.results}["probable_duplicate"] == 2


@pytest.mark.parametrize(
    "hostile",
    [
        {"createdAtUtc": "yesterday"},
        {"moveDate": "soon", "status": "new"},
        {"branch": "CALGARY"},
        {"moveSize": {"name": 3}},
        {"phoneNumber": ["403"], "emailAddress": 7},
    ],
)
def test_hostile_lead_fields_never_raise(hostile: dict) -> None:
    frame = _leads(lead(1, **hostile), lead(2))
    outcome = validate_leads(frame, TENANT)
    assert len(outcome.frame) == len(frame) >= 1
