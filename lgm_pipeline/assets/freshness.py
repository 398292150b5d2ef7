"""Is every branch's ``journeys`` data recent? The freshness policy and the check that enforces it.

The 2-hour schedule rewrites each (date, branch) partition of the sync window every cycle; a
branch whose latest write is older than :data:`STALE_AFTER` (two missed
cycles) is stale. Dagster's ``FreshnessPolicy`` shows this on the asset in the UI, but it is
evaluated per asset, not per branch, and only by the daemon; the ``journeys_freshness`` check
reads ``sync_runs`` (the same rows ``lgm status`` shows) and fails naming the stale branches.
"""

import datetime as dt
from collections.abc import Sequence
from typing import Any

import dagster as dg

from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant

#: A branch whose latest journeys write is older than this is stale (two missed cycles ~ 2h30);
#: the check, the policy and ``lgm status`` all use it.
STALE_AFTER = dt.timedelta(hours=2, minutes=30)
FRESHNESS_CHECK = "journeys_freshness"
FRESHNESS_CRON = "*/30 * * * *"

#: Shown on ``journeys`` in the UI; the same window as ``lgm status``' STALE.
JOURNEYS_FRESHNESS_POLICY = dg.FreshnessPolicy.time_window(fail_window=STALE_AFTER)


def stale_branches(tenant: Tenant, latest: Sequence[dict[str, Any]], window: Sequence[dt.date]) -> dict[str, str]:
    """location_id -> why it is stale, for each configured branch and date of ``window``.

    ``latest`` is :meth:`PostgresResource.latest_sync_status`: one row per (branch, date) with its
    ``age``. A date never written counts as stale: the CRM would show nothing for it.
    """
    ages = {(r["location_id"], r["service_date"]): r["age"] for r in latest}
    stale: dict[str, str] = {}
    for location_id in tenant.location_ids:
        problems = []
        for day in window:
            age = ages.get((location_id, day))
            if age is None:
                problems.append(f"{day.isoformat()} never synced")
            elif age > STALE_AFTER:
                problems.append(f"{day.isoformat()} synced {int(age.total_seconds() // 60)} min ago")
        if problems:
            stale[location_id] = "; ".join(problems)
    return stale


def build_freshness_check(tenant: Tenant) -> dg.AssetChecksDefinition:
    asset_key = tenant.names.asset_key("journeys")

    @dg.asset_check(
        asset=asset_key,
        name=FRESHNESS_CHECK,
        description=(
            f"Every branch's journeys of today and tomorrow were written less than "
            f"{int(STALE_AFTER.total_seconds() // 60)} minutes ago (sync_runs; same rule as `lgm status`)."
        ),
    )
    def journeys_freshness(postgres: PostgresResource) -> dg.AssetCheckResult:
        window = tenant.sync_window()
        stale = stale_branches(tenant, postgres.latest_sync_status(tenant), window)
        return dg.AssetCheckResult(
            passed=not stale,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "all branches fresh" if not stale else f"{len(stale)} branch(es) stale: {', '.join(sorted(stale))}"
            ),
            metadata={
                "stale_after_minutes": int(STALE_AFTER.total_seconds() // 60),
                "window": [d.isoformat() for d in window],
                "stale_branches": dg.MetadataValue.json(stale),
            },
        )

    return journeys_freshness


def freshness_job_name(tenant: Tenant) -> str:
    return tenant.names.job("journeys_freshness")


def build_freshness_schedule(
    tenant: Tenant, check: dg.AssetChecksDefinition
) -> "tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]":
    """The check runs on its own clock: it must turn red precisely when no sync runs at all."""
    job = dg.define_asset_job(
        freshness_job_name(tenant),
        selection=dg.AssetSelection.checks(check),
        description="Check that every branch's journeys are recent (no API call).",
        tags=tenant.names.tags,
    )
    schedule = dg.ScheduleDefinition(
        name=tenant.names.schedule("journeys_freshness"),
        cron_schedule=FRESHNESS_CRON,
        job=job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return job, schedule
