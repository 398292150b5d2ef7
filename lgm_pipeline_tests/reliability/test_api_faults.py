"""Faults from the SmartMoving API, end to end through Dagster: each ends in recovery or a clear error.

"Never lost": every job the simulator serves for the branch is in ``journeys`` or quarantined.
"Never duplicated": one journey per SmartMoving job. "Never half-written": a failed cycle leaves
exactly the previous rows.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
import sqlalchemy as sa

from lgm_pipeline.simulator import FaultConfig, RunningSimulator
from lgm_pipeline.simulator import app as simulator_app
from lgm_pipeline.status import format_status, tenant_status
from lgm_pipeline.sync import run_sync
from lgm_pipeline.tenants import Tenant
from lgm_pipeline_tests.reliability.conftest import (
    CALGARY,
    CALGARY_SM,
    age_sync_runs,
    freshness_evaluation,
    journeys_rows,
    listed_job_ids,
    quarantine_rows,
    snapshot,
    sync,
)

pytestmark = pytest.mark.e2e


def assert_branch_complete_on(db: sa.Engine, tenant: Tenant, sim: RunningSimulator, day: dt.date) -> None:
    """Calgary's jobs of ``day``: each exactly once, as a journey or in quarantine."""
    stored = [
        r["smartmoving_job_id"]
        for r in journeys_rows(db, tenant, "location_id = :l AND service_date = :d", l=CALGARY, d=day)
    ]
    held = [
        r["smartmoving_job_id"]
        for r in quarantine_rows(db, tenant)
        if r["branch_name"] == CALGARY_SM and r["service_date"] == day
    ]
    assert len(stored) == len(set(stored)), "duplicate journeys"
    assert not set(stored) & set(held)
    assert set(stored) | set(held) == listed_job_ids(sim, day, CALGARY_SM)
    assert stored


def step_attempts(instance: dg.DagsterInstance, run_id: str) -> int:
    starts = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return len(starts)


def test_429_storm_with_retry_after_is_waited_out(defs, tenant, instance, db, simulator, today, monkeypatch) -> None:
    # A 1-second server window keeps Retry-After at 1 s, so the storm costs seconds, not minutes.
    monkeypatch.setattr(simulator_app, "_RATE_WINDOW_SECONDS", 1)
    simulator.config.rate_limit_per_minute = 15
    report = sync(defs, tenant, instance, today)
    assert report.ok, report
    assert simulator.stats()["rate_limited"] >= 5
    assert_branch_complete_on(db, tenant, simulator, today)


@pytest.mark.parametrize(
    "faults",
    [FaultConfig(error_rate=0.3), FaultConfig(drop_connection_rate=0.25), FaultConfig(duplicate_across_pages=True)],
    ids=["5xx-on-some-pages", "dropped-connections", "customer-on-two-pages"],
)
def test_transient_faults_are_survived_without_loss_or_duplicates(
    defs, tenant, instance, db, simulator, today, faults: FaultConfig
) -> None:
    simulator.set_faults(faults)
    report = sync(defs, tenant, instance, today)
    assert report.ok, report
    stats = simulator.stats()
    if faults.error_rate:
        assert stats["errors"] > 0
    if faults.drop_connection_rate:
        assert stats["dropped"] > 0
    assert_branch_complete_on(db, tenant, simulator, today)
    with db.connect() as conn:
        customers = conn.execute(sa.text(f"SELECT customer_id FROM {tenant.schema}.raw_customers")).scalars().all()
    assert (
        len(customers)
        == len(set(customers))
        == simulator.world.list_customers(int(today.strftime("%Y%m%d")), int(today.strftime("%Y%m%d")), False)[0]
    )


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        (
            FaultConfig(malformed_pages=[2]),
            "malformed SmartMoving payload from customers page 2: field 'body' (invalid JSON)",
        ),
        (
            FaultConfig(incomplete_pages=[2]),
            "malformed SmartMoving payload from customers page 2: field 'pageResults[0].id'",
        ),
    ],
    ids=["malformed-json-page", "records-without-id"],
)
def test_bad_page_fails_clearly_and_keeps_previous_data(
    defs, tenant, instance, db, simulator, today, faults: FaultConfig, message: str
) -> None:
    assert sync(defs, tenant, instance, today).ok
    before = snapshot(db, tenant)
    with db.connect() as conn:
        raw_before = conn.execute(sa.text(f"SELECT count(*), max(run_id) FROM {tenant.schema}.raw_customers")).one()
    simulator.set_faults(faults)
    victim = next(r for r in before.values() if r["status"] != "CANCELLED")
    simulator.world.cancel_opportunity(victim["external_ids"]["smartmoving_opportunity_id"])

    report = sync(defs, tenant, instance, today)
    assert not report.ok and report.branches == []
    assert message in report.raw_failures[today]
    assert snapshot(db, tenant) == before
    with db.connect() as conn:
        raw_after = conn.execute(sa.text(f"SELECT count(*), max(run_id) FROM {tenant.schema}.raw_customers")).one()
    assert raw_after == raw_before

    simulator.set_faults(FaultConfig())
    assert sync(defs, tenant, instance, today).ok
    [recovered] = journeys_rows(db, tenant, "id = :i", i=victim["id"])
    assert recovered["status"] == "CANCELLED"  # the change held back by the bad page arrives


def test_rejected_key_is_one_call_one_attempt_and_a_clear_error(
    defs, tenant, instance, db, simulator, today, monkeypatch
) -> None:
    monkeypatch.setenv(tenant.smartmoving.api_key_env, "revoked-key-Wx3-not-valid")
    simulator.reset_stats()
    report = sync(defs, tenant, instance, today)
    assert "SmartMoving rejected the API key (401)" in report.raw_failures[today]
    assert simulator.stats()["total"] == simulator.stats()["unauthorized"] == 1
    [run] = instance.get_runs()
    # The step ran once: the RetryPolicy (2 retries here) was not applied to a 401.
    assert step_attempts(instance, run.run_id) == 1
    assert not instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records
    assert journeys_rows(db, tenant) == []


def test_quota_exhausted_stops_early_and_resumes_after_reset(defs, tenant, instance, db, simulator, window) -> None:
    # Enough for the first date's customer pages and a few details, not for the whole cycle.
    simulator.config.monthly_quota = 10
    report = run_sync(defs, tenant, instance, dates=window, location_ids=[CALGARY])
    assert not report.ok and report.branches == []
    # today and tomorrow are one run (one date-range pull): both fail with its reason
    for day in window:
        assert "SmartMoving call quota exhausted for this key (429)" in report.raw_failures[day]
    stats = simulator.stats()
    # Once refused, nothing is retried and the cycle stops: only the detail requests already in
    # flight (the client's max_concurrency, 4) are refused, and no step is retried by Dagster.
    assert 1 <= stats["rate_limited"] <= 4
    for run in instance.get_runs():
        assert not instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records
    assert journeys_rows(db, tenant) == []

    simulator.config.monthly_quota = None  # the month turned over (or the tier was raised)
    resumed = run_sync(defs, tenant, instance, dates=window, location_ids=[CALGARY])
    assert resumed.ok, resumed
    for day in window:
        assert_branch_complete_on(db, tenant, simulator, day)


def test_api_down_for_a_whole_cycle_keeps_serving_and_turns_freshness_red(
    defs, tenant, instance, db, simulator, today
) -> None:
    assert sync(defs, tenant, instance, today).ok
    before = snapshot(db, tenant)
    with db.connect() as conn:
        served = conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys_active")).scalar()
    assert served
    simulator.set_faults(FaultConfig(down=True))
    age_sync_runs(db, tenant, dt.timedelta(hours=3))  # the cycles since then all failed

    report = sync(defs, tenant, instance, today)
    assert "SmartMoving unavailable after 5 attempts: customers: HTTP 503" in report.raw_failures[today]
    assert snapshot(db, tenant) == before
    with db.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys_active")).scalar() == served
    evaluation = freshness_evaluation(defs, tenant, instance)
    assert not evaluation.passed
    assert CALGARY in evaluation.metadata["stale_branches"].value
    assert "STALE" in format_status(tenant_status(tenant))
