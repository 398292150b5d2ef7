"""Is every branch's ``journeys`` data recent? The freshness policy and the check that enforces it.

The 2-hour schedule rewrites each (date, branch) partition of the branch's own window (its today
and tomorrow, in its time zone) every cycle; a branch whose latest write of a date of its window
is older than :data:`STALE_AFTER` (two missed cycles) is stale. Dagster's ``FreshnessPolicy`` shows
this on the asset in the UI, but it is evaluated per asset, not per branch, and only by the daemon;
the ``journeys_freshness`` check reads ``sync_runs`` (the same rows ``lgm status`` shows) and fails
naming the stale branches.
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


def stale_branches(tenant: Tenant, latest: Sequence[dict[str, Any]], now: dt.datetime) -> dict[str, str]:
    """location_id -> why it is stale, for each configured branch and each date of its own window at ``now``.

    ``latest`` is :meth:`PostgresResource.latest_sync_status`: one row per (branch, date) with its
    ``age``. A date never written counts as stale: the CRM would show nothing for it. A date out of
    the branch's window (its yesterday, while the cycle still pulls it for a branch further west) is
    no longer refreshed every cycle, so it is never stale.
    """
    ages = {(r["location_id"], r["service_date"]): r["age"] for r in latest}
    stale: dict[str, str] = {}
    for branch in tenant.branches:
        problems = []
        for day in branch.window(now):
            age = ages.get((branch.location_id, day))
            if age is None:
                problems.append(f"{day.isoformat()} never synced")
            elif age > STALE_AFTER:
                problems.append(f"{day.isoformat()} synced {int(age.total_seconds() // 60)} min ago")
        if problems:
            stale[branch.location_id] = "; ".join(problems)
    return stale


def is_stale(tenant: Tenant, row: dict[str, Any], now: dt.datetime) -> bool:
    """Whether one ``latest_sync_status`` row is stale: a date of its branch's window written too long ago."""
    location_id = row["location_id"]
    if location_id not in tenant.location_ids:
        return False
    return row["service_date"] in tenant.branch(location_id).window(now) and row["age"] > STALE_AFTER


def build_freshness_check(tenant: Tenant) -> dg.AssetChecksDefinition:
    asset_key = tenant.names.asset_key("journeys")

    @dg.asset_check(
        asset=asset_key,
        name=FRESHNESS_CHECK,
        description=(
            f"Every branch's journeys of its own today and tomorrow (the branch's time zone) were written less "
            f"than {int(STALE_AFTER.total_seconds() // 60)} minutes ago (sync_runs; same rule as `lgm status`)."
        ),
    )
    def journeys_freshness(postgres: PostgresResource) -> dg.AssetCheckResult:
        now = dt.datetime.now(dt.UTC)
        stale = stale_branches(tenant, postgres.latest_sync_status(tenant), now)
        return dg.AssetCheckResult(
            passed=not stale,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "all branches fresh" if not stale else f"{len(stale)} branch(es) stale: {', '.join(sorted(stale))}"
            ),
            metadata={
                "stale_after_minutes": int(STALE_AFTER.total_seconds() // 60),
                "windows": dg.MetadataValue.json(
                    {b.location_id: [d.isoformat() for d in b.window(now)] for b in tenant.branches}
                ),
                "stale_branches": dg.MetadataValue.json(stale),
            },
        )

    return journeys_freshness


#: The code location's one freshness job and schedule: every tenant's check in one run (a location is a
#: tenant group), not a run per tenant every 30 minutes.
FRESHNESS_JOB = "journeys_freshness"


def build_freshness_schedule(
    checks: Sequence[dg.AssetChecksDefinition],
) -> "tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]":
    """The checks run on their own clock: they must turn red precisely when no sync runs at all."""
    job = dg.define_asset_job(
        FRESHNESS_JOB,
        selection=dg.AssetSelection.checks(*checks),
        description="Check that every tenant's branches have recent journeys (no API call; one step per tenant).",
    )
    schedule = dg.ScheduleDefinition(
        name=FRESHNESS_JOB,
        cron_schedule=FRESHNESS_CRON,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return job, schedule
