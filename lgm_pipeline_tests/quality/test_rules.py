from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from lgm_pipeline.quality.rules import Severity, rules_for, validate_journeys
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.transform.journeys import normalize_journeys
from lgm_pipeline_tests.payloads import job, opportunity, raw_frames

DAY = dt.date(2026, 11, 25)
TENANT = load_tenants()[0]


def _journeys(*opps: dict) -> pd.DataFrame:
    customers, opportunities, jobs = raw_frames(DAY, list(opps))
    return normalize_journeys(TENANT, customers, opportunities, jobs, dt.datetime.now(dt.UTC), "run-1")


def _failing(frame: pd.DataFrame) -> dict[str, int]:
    return {r.rule.name: r.failing_rows for r in validate_journeys(frame, TENANT).results}


def test_clean_data_passes_every_rule() -> None:
    outcome = validate_journeys(_journeys(opportunity(DAY), opportunity(DAY, status=10)), TENANT)
    assert all(r.failing_rows == 0 for r in outcome.results)
    assert outcome.quarantined == 0
    assert outcome.frame["dq_flags"].map(len).sum() == 0


def test_rule_severities_follow_the_spec() -> None:
    severities = {r.name: r.severity for r in rules_for(TENANT)}
    assert severities == {
        "customer_contact": Severity.WARNING,
        "job_fields": Severity.BLOCKING,
        "job_type_known": Severity.WARNING,
        "branch_mapping": Severity.BLOCKING,
        "financials": Severity.WARNING,
        "values_readable": Severity.WARNING,
        "addresses": Severity.WARNING,
        "status_mapping": Severity.BLOCKING,
    }


@pytest.mark.parametrize(
    ("customer", "column"),
    [
        ({"emailAddress": None}, "customer_email"),
        ({"emailAddress": "not-an-email"}, "customer_email"),
        ({"phoneNumber": "555-0123"}, "customer_phone"),
        ({"phoneNumber": None}, "customer_phone"),
        ({"name": "   "}, "customer_name"),
    ],
)
def test_customer_contact_flags_but_keeps_the_journey(customer: dict, column: str) -> None:
    opp = opportunity(DAY)
    opp["customer"] |= customer
    outcome = validate_journeys(_journeys(opp), TENANT)
    [row] = outcome.frame.to_dict("records")
    assert row["quarantine_reasons"] is None
    assert [(f["rule"], f["column"]) for f in row["dq_flags"]] == [("customer_contact", column)]


@pytest.mark.parametrize(("job_overrides", "column"), [({"jobNumber": ""}, "job_number"), ({"type": None}, "job_type")])
def test_job_fields_quarantine_with_reason(job_overrides: dict, column: str) -> None:
    outcome = validate_journeys(_journeys(opportunity(DAY, jobs=[job(DAY, 1, **job_overrides)])), TENANT)
    [row] = outcome.frame.to_dict("records")
    assert {(r["rule"], r["column"]) for r in row["quarantine_reasons"]} == {("job_fields", column)}


def test_an_unknown_job_type_is_a_warning_and_the_journey_stays() -> None:
    outcome = validate_journeys(_journeys(opportunity(DAY, jobs=[job(DAY, 1, type=77)])), TENANT)
    [row] = outcome.frame.to_dict("records")
    assert row["quarantine_reasons"] is None
    assert [(f["rule"], f["column"], f["value"]) for f in row["dq_flags"]] == [("job_type_known", "job_type", "77")]


def test_contact_rule_checks_booked_work_only() -> None:
    cancelled = opportunity(DAY, status=20)
    cancelled["customer"] |= {"emailAddress": None}
    booked = opportunity(DAY)
    booked["customer"] |= {"emailAddress": None}
    outcome = validate_journeys(_journeys(cancelled, booked), TENANT)
    [contact] = [r for r in outcome.results if r.rule.name == "customer_contact"]
    assert (contact.failing_rows, contact.rows_checked) == (1, 1)
    assert [bool(f) for f in outcome.frame["dq_flags"]] == [False, True]


@pytest.mark.parametrize(
    ("job_type", "addresses", "flagged"),
    [
        (1, ["12 Elm St"], True),  # a move without a drop-off
        (1, ["12 Elm St", "  "], True),  # a blank address is no address
        (1, ["12 Elm St", "99 Oak Ave"], False),
        (9, ["99 Oak Ave"], False),  # storage out: the drop-off is enough
        (3, [], False),  # packing needs no truck
    ],
)
def test_booked_truck_job_without_its_addresses_is_a_warning(job_type: int, addresses: list, flagged: bool) -> None:
    outcome = validate_journeys(
        _journeys(opportunity(DAY, jobs=[job(DAY, 1, type=job_type, jobAddresses=addresses)])), TENANT
    )
    [row] = outcome.frame.to_dict("records")
    assert row["quarantine_reasons"] is None
    assert [f["rule"] for f in row["dq_flags"]] == (["addresses"] if flagged else [])


def test_unknown_branch_is_quarantined() -> None:
    outcome = validate_journeys(_journeys(opportunity(DAY, branch="KELOWNA 🇨🇦 - Let's Get Moving")), TENANT)
    assert outcome.quarantined == 1
    assert outcome.frame.loc[0, "quarantine_reasons"][0]["rule"] == "branch_mapping"


def test_unknown_status_is_quarantined() -> None:
    assert _failing(_journeys(opportunity(DAY, status=99)))["status_mapping"] == 1


def test_financials_negative_or_missing_when_booked_is_a_warning() -> None:
    negative = opportunity(DAY, jobs=[job(DAY, 1, estimatedCharges=[{"totalCost": -5.0}])])
    missing = opportunity(DAY, status=4, jobs=[job(DAY, 2, estimatedCharges=[])])
    lead_without_total = opportunity(DAY, status=0, jobs=[job(DAY, 3, estimatedCharges=[])])
    outcome = validate_journeys(_journeys(negative, missing, lead_without_total), TENANT)
    flagged = [bool(f) for f in outcome.frame["dq_flags"]]
    assert flagged == [True, True, False]
    assert outcome.quarantined == 0


def test_an_unreadable_amount_is_a_warning_naming_the_field_and_the_value() -> None:
    unreadable = opportunity(DAY, jobs=[job(DAY, 1, estimatedCharges=[{"totalCost": "call office"}])])
    outcome = validate_journeys(_journeys(unreadable, opportunity(DAY)), TENANT)
    [result] = [r for r in outcome.results if r.rule.name == "values_readable"]
    assert result.failing_rows == 1 and outcome.quarantined == 0
    assert result.examples[0]["value"] == "estimatedCharges[0].totalCost: unreadable 'call office' (expected an amount)"
    flags = outcome.frame["dq_flags"].iloc[0]
    # Its own flag once, and the booked job's missing estimate as the financials rule sees it.
    assert sorted(f["rule"] for f in flags) == ["financials", "values_readable"]


def test_no_row_is_ever_dropped() -> None:
    bad = [opportunity(DAY, status=99), opportunity(DAY, branch="?"), opportunity(DAY)]
    frame = _journeys(*bad)
    assert len(validate_journeys(frame, TENANT).frame) == len(frame) == 3


def test_check_examples_do_not_expose_contact_details() -> None:
    opp = opportunity(DAY)
    opp["customer"] |= {"emailAddress": "zoe.at.example.com"}
    outcome = validate_journeys(_journeys(opp), TENANT)
    [contact] = [r for r in outcome.results if r.rule.name == "customer_contact"]
    assert contact.examples and "zoe.at.example.com" not in str(contact.examples)
    # the stored flag keeps the value for whoever fixes the record in SmartMoving
    assert outcome.frame.loc[0, "dq_flags"][0]["value"] == "zoe.at.example.com"
