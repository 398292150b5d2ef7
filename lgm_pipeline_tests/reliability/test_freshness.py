"""Freshness: journeys older than STALE_AFTER turn the check red and `lgm status` says STALE."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from lgm_pipeline.assets.freshness import JOURNEYS_FRESHNESS_POLICY, STALE_AFTER, stale_branches
from lgm_pipeline.definitions import defs as production_defs
from lgm_pipeline.status import format_status, tenant_status
from lgm_pipeline_tests.reliability.conftest import CALGARY, age_sync_runs, freshness_evaluation

pytestmark = pytest.mark.e2e


def test_journeys_carry_the_time_window_policy_of_lgm_status() -> None:
    spec = next(s for s in production_defs().resolve_all_asset_specs() if s.key == dg.AssetKey(["lgm", "journeys"]))
    assert spec.freshness_policy == JOURNEYS_FRESHNESS_POLICY
    assert JOURNEYS_FRESHNESS_POLICY.fail_window.to_timedelta() == STALE_AFTER == dt.timedelta(hours=2, minutes=30)


def test_check_passes_when_fresh_and_fails_per_branch_when_stale(defs, tenant, instance, db, simulator, window) -> None:
    from lgm_pipeline.sync import run_sync

    assert run_sync(defs, tenant, instance, dates=window).ok
    fresh = freshness_evaluation(defs, tenant, instance)
    assert fresh.passed, fresh.metadata
    assert "STALE" not in format_status(tenant_status(tenant))

    age_sync_runs(db, tenant, STALE_AFTER + dt.timedelta(minutes=5))
    # One branch catches up; the others are now past the window.
    assert run_sync(defs, tenant, instance, dates=window, location_ids=[CALGARY]).ok
    stale = freshness_evaluation(defs, tenant, instance)
    assert not stale.passed
    assert stale.severity == dg.AssetCheckSeverity.ERROR
    assert set(stale.metadata["stale_branches"].value) == set(tenant.location_ids) - {CALGARY}
    lines = format_status(tenant_status(tenant)).splitlines()
    assert all(("STALE" in line) == (CALGARY not in line) for line in lines if "loc_lgm_" in line)


def test_a_date_never_synced_is_stale(tenant) -> None:
    now = dt.datetime(2026, 11, 28, 17, 0, tzinfo=dt.UTC)  # noon in Toronto, 09:00 in Vancouver: one date for all
    today, tomorrow = tenant.sync_window(now)
    recent = [
        {"location_id": loc, "service_date": today, "age": dt.timedelta(minutes=10)} for loc in tenant.location_ids
    ]
    stale = stale_branches(tenant, recent, now)
    assert set(stale) == set(tenant.location_ids)
    assert all(reason == f"{tomorrow.isoformat()} never synced" for reason in stale.values())
    edge = [{**r, "age": STALE_AFTER} for r in recent]
    edge += [{**r, "service_date": tomorrow} for r in edge]
    assert stale_branches(tenant, edge, now) == {}  # exactly at the limit is still fresh, as in `lgm status`
