"""Shapes we did not guess: each variant is read as meant, or the record is kept raw with its reason.

The drifted simulator serves the same world in the other shapes SmartMoving's public descriptions
give; a sync of it must land what a sync of the plain shapes lands, except the few records drift made
unreadable on purpose, which must sit in ``unreadable_records`` naming the field and the value.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from lgm_pipeline.assets.raw import records_read_check
from lgm_pipeline.simulator import drift
from lgm_pipeline.smartmoving.enums import JobType, LeadStatus, OpportunityStatus
from lgm_pipeline.smartmoving.shapes import UnreadableValue, read_date, read_enum, read_money
from lgm_pipeline.sync import run_sync
from lgm_pipeline.transform.leads import lead_name, lead_status, read_leads
from lgm_pipeline.transform.raw import customers_account, customers_frame

DAY = dt.date(2026, 12, 4)
NOW = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "value", [20261204, "20261204", " 20261204 ", 20261204.0, "2026-12-04", "2026-12-04T00:00:00", "2026-12-04T09:30Z"]
)
def test_a_job_date_in_any_published_form_is_that_date(value: Any) -> None:
    assert read_date(value, "jobDate") == DAY


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_job_date_is_no_date(value: Any) -> None:
    assert read_date(value, "jobDate") is None


@pytest.mark.parametrize(
    "value", ["next tuesday", 0, 2026124, "2026-13-04", "2026-02-30", 20261204.5, True, [20261204], "04/12/2026"]
)
def test_an_unreadable_job_date_is_not_taken_for_a_missing_one(value: Any) -> None:
    with pytest.raises(UnreadableValue) as caught:
        read_date(value, "jobDate")
    assert caught.value.reason.startswith(f"jobDate: unreadable {value!r}")


@pytest.mark.parametrize(
    ("value", "enum", "code"),
    [
        (4, OpportunityStatus, 4),
        ("4", OpportunityStatus, 4),
        ("Booked", OpportunityStatus, 4),
        ("LEAD_IN_PROGRESS", OpportunityStatus, 1),
        ("Lead In Progress", OpportunityStatus, 1),
        ("In Progress", LeadStatus, 1),
        ("Bad Lead", LeadStatus, 50),
        ("storage out bound", JobType, 9),
        (77, JobType, 77),  # a code SmartMoving added: the job-type rule speaks about it, not the reader
    ],
)
def test_enums_are_read_as_codes_or_names(value: Any, enum: Any, code: int) -> None:
    assert read_enum(value, enum, "status") == code


def test_an_unknown_status_name_is_unreadable_naming_it() -> None:
    with pytest.raises(UnreadableValue, match=r"status: unreadable 'Maybe later'"):
        read_enum("Maybe later", OpportunityStatus, "status")


@pytest.mark.parametrize(("value", "amount"), [(1250, "1250"), ("1250.50", "1250.50"), (" 99.9 ", "99.9")])
def test_money_as_a_number_or_a_numeric_text(value: Any, amount: str) -> None:
    assert read_money(value, "totalCost") == Decimal(amount)


@pytest.mark.parametrize("value", ["$1,250.00", "NaN", "Infinity", True, {"amount": 1}])
def test_unreadable_money_names_the_value(value: Any) -> None:
    with pytest.raises(UnreadableValue, match="totalCost: unreadable"):
        read_money(value, "totalCost")


def test_a_lead_in_the_published_model_shape_is_read(tenant) -> None:
    lead = {
        "id": "L1",
        "createdOn": "2026-12-04T15:00:00",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": "ADA@example.com",
        "status": "In Progress",
    }
    frame, account = read_leads(tenant, [lead], [DAY], NOW, "run")
    assert list(frame["lead_id"]) == ["L1"] and list(frame["created_date"]) == [DAY]
    assert (lead_name(lead), lead_status(lead)) == ("Ada Lovelace", 1)
    assert account.balanced and not account.unreadable


def test_leads_without_a_readable_creation_time_are_kept_raw_with_the_reason(tenant) -> None:
    served = [
        {"id": "ok", "createdAtUtc": "2026-12-04T15:00:00Z"},
        {"id": "vague", "createdOn": "yesterday afternoon"},
        {"id": "none"},
        {"createdOn": "2026-12-04T15:00:00"},  # no id
    ]
    frame, account = read_leads(tenant, served, [DAY], NOW, "run")
    assert list(frame["lead_id"]) == ["ok"]
    assert [(r.key, r.reason) for r in account.unreadable] == [
        ("vague", "createdOn: unreadable 'yesterday afternoon' (expected an ISO date-time)"),
        ("none", "createdAtUtc: missing"),
        ("#3", "lead.id: missing"),
    ]
    assert all(r.payload == served[i + 1] for i, r in enumerate(account.unreadable))
    assert account.balanced


def test_the_records_read_check_fails_with_error_when_a_record_is_dropped() -> None:
    customers = [{"id": f"c{i}", "name": f"Customer {i}"} for i in range(5)] + [{"name": "no id"}]
    frame = customers_frame(customers, [DAY], NOW, "run")
    honest = records_read_check(customers_account(customers, frame, [DAY]))
    assert not honest.passed and honest.severity.value == "WARN"  # one quarantined, nothing lost
    assert "customer.id: missing" in str(honest.description)

    dropped = records_read_check(customers_account(customers, frame.iloc[1:], [DAY]))
    assert not dropped.passed and dropped.severity.value == "ERROR"
    assert dropped.metadata["unaccounted"].value == 1
    assert "+1 record(s) unaccounted for" in str(dropped.description)

    clean = customers[:5]
    assert records_read_check(customers_account(clean, customers_frame(clean, [DAY], NOW, "run"), [DAY])).passed


def _journeys(db: sa.Engine, schema: str) -> pd.DataFrame:
    columns = "smartmoving_job_id, location_id, service_date, status, job_type, estimated_cost, customer_name"
    with db.connect() as conn:
        frame = pd.read_sql(sa.text(f"SELECT {columns} FROM {schema}.journeys"), conn)
    return frame.set_index("smartmoving_job_id").sort_index()


@pytest.mark.e2e
def test_a_drifted_api_lands_what_the_plain_one_does_and_quarantines_the_rest(
    defs,
    tenant,
    instance,
    db,
    simulator,
) -> None:
    branch = ["loc_lgm_calgary_001"]
    plain = run_sync(defs, tenant, instance, location_ids=branch)
    assert plain.ok, plain
    before = _journeys(db, tenant.schema)

    simulator.set_drift(True)
    drifted = run_sync(defs, tenant, instance, location_ids=branch)
    assert all(p.success for p in drifted.pulls), drifted
    after = _journeys(db, tenant.schema)

    # Jobs drift made unreadable left the board; a job with an unreadable charge stays, its estimate empty and
    # the charge named in its flags; every other journey is exactly as before.
    unreadable_jobs = {j for j in before.index if drift.is_unreadable(j, "jobDate")}
    unpriced = {
        j for j in before.index if drift.is_unreadable(j, "totalCost") and pd.notna(before.at[j, "estimated_cost"])
    }
    assert set(after.index) == set(before.index) - unreadable_jobs
    assert unpriced - unreadable_jobs, "the drifted world has no job with an unreadable charge"
    expected = before.drop(index=sorted(unreadable_jobs))
    expected.loc[sorted(unpriced - unreadable_jobs), "estimated_cost"] = None
    pd.testing.assert_frame_equal(after, expected, check_exact=True)
    with db.connect() as conn:
        flagged = dict(
            conn.execute(
                sa.text(
                    f"SELECT smartmoving_job_id, f->>'value' FROM {tenant.schema}.journeys, "
                    "jsonb_array_elements(dq_flags) f WHERE f->>'rule' = 'values_readable'"
                )
            ).all()
        )
    assert set(flagged) == unpriced - unreadable_jobs
    assert all(f"unreadable {drift.UNREADABLE_AMOUNT!r} (expected an amount)" in v for v in flagged.values())

    with db.connect() as conn:
        held = conn.execute(
            sa.text(f"SELECT record_kind, record_key, reason FROM {tenant.schema}.unreadable_records")
        ).all()
        raw_leads = conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.raw_leads")).scalar_one()
        leads = conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.leads")).scalar_one()
    reasons = {(kind, key): reason for kind, key, reason in held}
    for job in unreadable_jobs:
        assert reasons[("job", job)].startswith(f"jobDate: unreadable {drift.UNREADABLE_JOB_DATE!r}")
    held_leads = [r for (kind, _), r in reasons.items() if kind == "lead"]
    assert held_leads and all(r.startswith(f"createdOn: unreadable {drift.UNREADABLE_CREATED!r}") for r in held_leads)
    assert raw_leads > 0 and leads == drifted.leads > 0  # createdOn, firstName/lastName, email, status names read

    # Every pull balanced: served = stored + set aside + quarantined, and the quarantine is what was held.
    records = {name: r for pull in drifted.pulls for name, r in pull.records.items()}
    assert {"smartmoving_customers", "smartmoving_opportunities", "smartmoving_jobs", "smartmoving_leads"} <= set(
        records
    )
    assert all(r["unaccounted"] == 0 for r in records.values()), records
    assert records["smartmoving_jobs"]["quarantined"] >= len(unreadable_jobs) > 0
    assert records["smartmoving_leads"]["quarantined"] == len(held_leads)
