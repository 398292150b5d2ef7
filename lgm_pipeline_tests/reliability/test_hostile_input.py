"""Hostile and odd values from SmartMoving, through the whole pipeline.

Each value ends stored verbatim, flagged (``dq_flags``) or quarantined with a reason; no cycle
crashes on it and no job of the date disappears.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from lgm_pipeline.simulator import RunningSimulator
from lgm_pipeline.tenants import Tenant
from lgm_pipeline_tests.reliability.conftest import CALGARY_SM, journeys_rows, listed_job_ids, quarantine_rows, sync

pytestmark = pytest.mark.e2e

BOOKED = 4
SQL = "Robert'); DROP TABLE journeys;--"
HTML = '<script>alert("x")</script><img src=x onerror=alert(1)>'
LONG = "Ω" + "x" * 9_998 + "Ω"  # 10k characters, multi-byte at both ends
RTL_NAME = "محمد عبد الله 🚚 Øyvind ‏(RTL)"
RTL_ADDRESS = "שדרות רוטשילד 1, תל אביב 🏠 ‮reversed‬"


class Bookings:
    """New bookings on ``day`` in Calgary, each patched with one hostile value."""

    def __init__(self, sim: RunningSimulator, day: dt.date) -> None:
        self.sim, self.day = sim, day

    def add(
        self,
        *,
        branch: str = CALGARY_SM,
        opportunity: dict[str, Any] | None = None,
        customer: dict[str, Any] | None = None,
        job: dict[str, Any] | None = None,
    ) -> str:
        ids = self.sim.world.add_booking(self.day, branch, BOOKED)
        job_id = ids["job_ids"][0]
        self.sim.world.patch(
            ids["opportunity_id"],
            opportunity=opportunity,
            customer=customer,
            job={"id": job_id, **job} if job else None,
        )
        return job_id


def _by_job(db: sa.Engine, tenant: Tenant) -> tuple[dict[str, dict], dict[str, dict]]:
    stored = {r["smartmoving_job_id"]: r for r in journeys_rows(db, tenant)}
    held = {r["smartmoving_job_id"]: r for r in quarantine_rows(db, tenant)}
    return stored, held


def _flag_columns(row: dict) -> set[str]:
    return {f["column"] for f in row["dq_flags"]}


def test_hostile_values_are_stored_verbatim_flagged_or_quarantined(
    defs, tenant, instance, db, simulator, today
) -> None:
    book = Bookings(simulator, today)
    sql = book.add(customer={"name": SQL})
    html = book.add(job={"jobAddresses": [HTML, "1 Main St"]})
    long = book.add(customer={"name": LONG}, job={"jobAddresses": [LONG, LONG]})
    rtl = book.add(customer={"name": RTL_NAME}, job={"jobAddresses": [RTL_ADDRESS, "2 Main St"]})
    blank_name = book.add(customer={"name": "   \t ", "phoneNumber": "", "emailAddress": None})
    null_everything = book.add(customer={"name": None, "phoneNumber": None, "address": None})
    whitespace_job_number = book.add(job={"jobNumber": "   "})
    far_past = book.add(job={"jobDate": 19000101})
    far_future = book.add(job={"jobDate": 99991231})
    bad_date = book.add(job={"jobDate": 20261399})  # not a date: quarantined raw, neither journey nor undated
    negative = book.add(job={"estimatedCharges": [{"name": "Labour", "totalCost": -1250.0}]})
    huge = book.add(job={"estimatedCharges": [{"name": "Labour", "totalCost": 1e12}]})
    string_money = book.add(job={"estimatedCharges": [{"name": "Labour", "totalCost": "NaN"}]})
    unknown_status = book.add(opportunity={"status": 99})
    unknown_type = book.add(job={"type": 77})
    huge_status = book.add(opportunity={"status": 2**40})  # beyond the integer column
    huge_type = book.add(job={"type": 2**40})
    unknown_branch = book.add(branch="ATLANTIS 🌊 - Let's Get Moving")
    dup_a = book.add(job={"jobNumber": "DUP-0001"})
    dup_b = book.add(job={"jobNumber": "DUP-0001"})

    report = sync(defs, tenant, instance, today, branches=tenant.location_ids)
    assert not report.raw_failures, report
    assert all(b.success for b in report.branches), report

    stored, held = _by_job(db, tenant)
    # Nothing of the date is lost: every job the API lists is a journey or in quarantine, once.
    listed = listed_job_ids(simulator, today)
    today_stored = {j for j, r in stored.items() if r["service_date"] == today}
    today_held = {j for j, r in held.items() if r["service_date"] == today}
    assert today_stored | today_held == listed
    assert not today_stored & today_held

    # Stored verbatim: text is data, never SQL or markup.
    assert stored[sql]["customer_name"] == SQL
    assert stored[html]["pickup_address"] == HTML
    assert stored[long]["customer_name"] == LONG and stored[long]["addresses"] == [LONG, LONG]
    assert stored[rtl]["customer_name"] == RTL_NAME and stored[rtl]["pickup_address"] == RTL_ADDRESS
    with db.connect() as conn:  # and the table the SQL-ish name talks about is still there
        assert conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys")).scalar() == len(stored)

    # Null, empty and blank contact fields: stored, flagged per column.
    assert stored[blank_name]["customer_name"] is None
    assert {"customer_name", "customer_phone", "customer_email"} <= _flag_columns(stored[blank_name])
    assert stored[null_everything]["customer_name"] is None
    assert "customer_name" in _flag_columns(stored[null_everything])

    # Money: negative flagged with its value; what the column cannot hold (1e12) or what is not a
    # number is not stored as an amount, the booked row is flagged, and the payload keeps the value.
    [negative_flag] = [f for f in stored[negative]["dq_flags"] if f["column"] == "estimated_cost"]
    assert float(stored[negative]["estimated_cost"]) == -1250.0 and "greater_than_or_equal_to" in negative_flag["check"]
    for job_id, raw in ((huge, 1e12), (string_money, "NaN")):
        assert stored[job_id]["estimated_cost"] is None
        assert "estimated_cost" in _flag_columns(stored[job_id])
        assert stored[job_id]["raw_payload"]["job"]["estimatedCharges"][0]["totalCost"] == raw

    # Dates: a job dated 1900 or 9999 belongs to that date, not to today (as the API lists it);
    # its payload is kept in the raw tables. An impossible date is no date: the job is listed as
    # kept raw and quarantined naming the field and value: neither a journey (filed on the opportunity's
    # date it would be a phantom) nor "unscheduled" (it has a date, one nobody can read).
    assert far_past not in listed and far_future not in listed
    with db.connect() as conn:
        payloads = conn.execute(sa.text(f"SELECT payload FROM {tenant.schema}.raw_opportunities")).scalars().all()
    raw_dates = {j["id"]: j.get("jobDate") for p in payloads for j in p["jobs"]}
    assert raw_dates[far_past] == 19000101 and raw_dates[far_future] == 99991231
    assert bad_date not in stored and bad_date not in held
    with db.connect() as conn:
        unscheduled = conn.execute(sa.text(f"SELECT smartmoving_job_id FROM {tenant.schema}.unscheduled_jobs"))
        assert bad_date not in set(unscheduled.scalars())
        unreadable = dict(
            conn.execute(
                sa.text(f"SELECT record_key, reason FROM {tenant.schema}.unreadable_records WHERE record_kind = 'job'")
            ).all()
        )
    assert unreadable[bad_date].startswith("jobDate: unreadable 20261399")

    # Blocking rules: quarantined with the rule, column and value.
    def reasons(job_id: str) -> set[tuple[str, str]]:
        return {(r["rule"], r["column"]) for r in held[job_id]["reasons"]}

    assert reasons(unknown_status) == {("status_mapping", "smartmoving_status")}
    # A job type SmartMoving added keeps the booked job on the board, flagged and named by its code.
    assert unknown_type not in held and stored[unknown_type]["job_type_name"] == "Unknown (77)"
    assert "job_type" in _flag_columns(stored[unknown_type])
    assert reasons(huge_status) == {("status_mapping", "smartmoving_status")}
    assert reasons(huge_type) == {("job_fields", "job_type")}
    assert reasons(whitespace_job_number) == {("job_fields", "job_number")}
    assert reasons(unknown_branch) == {("branch_mapping", "location_id")}
    assert held[unknown_branch]["branch_name"] == "ATLANTIS 🌊 - Let's Get Moving"
    assert held[unknown_status]["reasons"][0]["value"] == "99"
    # A job number used twice is two jobs: two journeys, each verbatim.
    assert stored[dup_a]["job_number"] == stored[dup_b]["job_number"] == "DUP-0001"
    assert stored[dup_a]["id"] != stored[dup_b]["id"]

    # A second cycle over the same hostile data changes nothing (no flapping, no duplicates).
    assert sync(defs, tenant, instance, today, branches=tenant.location_ids).ok
    assert _by_job(db, tenant)[0].keys() == stored.keys()
    with db.connect() as conn:
        changes = conn.execute(
            sa.text(f"SELECT count(*) FROM {tenant.schema}.journey_audit WHERE action <> 'insert'")
        ).scalar()
    assert changes == 0
