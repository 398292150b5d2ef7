"""Fixtures for the reliability suite: the real pipeline against the simulator, with short waits.

The pipeline's production retry settings (client backoff up to 30 s, Dagster step retries after
30 s and more) would make every fault test last minutes. Here the same code paths run with
millisecond backoff and a 50 ms step-retry delay, so each fault ends by itself in seconds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from lgm_pipeline.assets import factory, raw
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.domain.mappings import STATUS_MAPPING
from lgm_pipeline.simulator import RunningSimulator
from lgm_pipeline.smartmoving.resource import SmartMovingAccount
from lgm_pipeline.sync import SyncReport, run_sync
from lgm_pipeline.tenants import Tenant
from lgm_pipeline_tests.assets.conftest import instance, simulator, tenant, window  # noqa: F401
from lgm_pipeline_tests.conftest import migrated_engine

CALGARY = "loc_lgm_calgary_001"
CALGARY_SM = "CALGARY 🇨🇦 - Let's Get Moving"
#: Small pages so a date spans several (the simulator fixture has ~60 customers a day).
PAGE_SIZE = 25
#: Step retries stay on (a fault must survive them, or be refused by them), only the delay shrinks.
FAST_STEP_RETRIES = dg.RetryPolicy(max_retries=2, delay=0.05)


@pytest.fixture
def db(database_url: str, tenant: Tenant) -> sa.Engine:  # noqa: F811
    """The pipeline's engine, schema migrated: a cycle that fails before writing still has tables to read."""
    return migrated_engine(tenant)


@pytest.fixture
def resource_overrides() -> dict[str, Any]:
    """Override per test module (e.g. a lower ``max_retries``) by redefining this fixture."""
    return {}


@pytest.fixture
def defs(
    migrated_database_url: str,
    simulator: RunningSimulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    resource_overrides: dict[str, Any],
) -> dg.Definitions:
    production = factory.smartmoving_account

    def fast_account(tenant: Tenant) -> SmartMovingAccount:  # noqa: F811
        base = production(tenant)
        settings: dict[str, Any] = {
            # still the variables' names: read at run time, as in production
            "base_url_env": base.base_url_env,
            "api_key_env": base.api_key_env,
            "rate_limit_per_minute": base.rate_limit_per_minute,
            "page_size": PAGE_SIZE,
            "max_retries": 4,
            "deadline_seconds": 60.0,
            # the production backoff (0.5 s doubling to 30 s) shrunk to milliseconds
            "backoff_base_seconds": 0.01,
            "backoff_max_seconds": 0.05,
            **resource_overrides,
        }
        return SmartMovingAccount(**settings)

    monkeypatch.setattr(factory, "smartmoving_account", fast_account)
    monkeypatch.setattr(raw, "API_RETRY_POLICY", FAST_STEP_RETRIES)
    return build_definitions()


def sync(
    defs: dg.Definitions,
    tenant: Tenant,  # noqa: F811
    instance: dg.DagsterInstance,  # noqa: F811
    day: dt.date,
    branches: list[str] | None = None,
) -> SyncReport:
    """One cycle for one date; Calgary only unless told (each branch partition is a run)."""
    return run_sync(defs, tenant, instance, dates=[day], location_ids=branches or [CALGARY])


def journeys_rows(engine: sa.Engine, tenant: Tenant, where: str = "TRUE", **params: object) -> list[dict]:  # noqa: F811
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {tenant.schema}.journeys WHERE {where}"), params)
        return [dict(r._mapping) for r in rows]


def quarantine_rows(engine: sa.Engine, tenant: Tenant) -> list[dict]:  # noqa: F811
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {tenant.schema}.journeys_quarantine"))
        return [dict(r._mapping) for r in rows]


def snapshot(engine: sa.Engine, tenant: Tenant) -> dict[str, dict]:  # noqa: F811
    """Journeys by id without the columns every sync rewrites, to compare before and after."""
    volatile = {"synced_at", "run_id", "source_fetched_at"}
    return {r["id"]: {k: v for k, v in r.items() if k not in volatile} for r in journeys_rows(engine, tenant)}


def _int_date(value: object) -> dt.date | None:
    try:
        return dt.datetime.strptime(str(value), "%Y%m%d").date() if isinstance(value, int) else None
    except ValueError:
        return None


def listed_job_ids(sim: RunningSimulator, day: dt.date, branch_name: str | None = None) -> set[str]:
    """Every job of booked work the simulator serves as dated ``day`` (optionally of one SmartMoving branch).

    A job's date is its own ``jobDate`` (a job without a valid one is unscheduled, not on any date);
    booked work is a status that creates a journey, or a status nobody knows (quarantined for a look).
    """
    ids = set()
    for oid in sim.world.opportunity_ids_on(day):
        detail = sim.world.opportunity_detail(oid)
        branch = detail["branch"].get("name") if isinstance(detail.get("branch"), dict) else None
        if branch_name is not None and branch != branch_name:
            continue
        mapping = STATUS_MAPPING.get(detail.get("status"))  # type: ignore[arg-type]
        if mapping is not None and not mapping.creates_journey:
            continue
        for job in detail["jobs"]:
            if _int_date(job.get("jobDate")) == day:
                ids.add(job["id"])
    return ids


@pytest.fixture
def today(window: list[dt.date]) -> dt.date:  # noqa: F811
    return window[0]


def freshness_evaluation(defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance) -> Any:  # noqa: F811
    """Run the location's freshness job as its schedule does; returns the tenant's check evaluation."""
    from lgm_pipeline.assets.freshness import FRESHNESS_JOB

    result = defs.resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=instance)
    assert result.success
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.asset_key.path[0] == tenant.key]
    return evaluation


def age_sync_runs(engine: sa.Engine, tenant: Tenant, by: dt.timedelta) -> None:  # noqa: F811
    """Pretend the last writes happened ``by`` earlier: time passing without a sync."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {tenant.schema}.sync_runs SET started_at = started_at - :by, finished_at = finished_at - :by"
            ),
            {"by": by},
        )
