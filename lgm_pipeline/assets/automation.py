"""What runs without anyone clicking: the 2-hour refresh, the daily catch-up and the fan-out.

The schedule pulls the raw assets for today and tomorrow (tenant timezone) in one run over the
two dates (one date-range list call). Once a day the catch-up pulls the tenant's last
``catch_up_days`` service dates the same way, so past jobs reach Completed and Closed. A sensor watches
``smartmoving_jobs`` materializations and requests every branch partition of ``journeys`` for that
date, so the 12 date x branch partitions are rebuilt from the fresh pull. (A sensor rather than
declarative automation: eager conditions only cover the latest time partition, and we need two.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from lgm_pipeline.assets.freshness import FRESHNESS_CHECK
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.tenants import Tenant

#: Raw runs carrying this tag had their journeys rebuilt by the caller (``lgm sync``); the sensor skips them.
JOURNEYS_HANDLED_TAG = "lgm/journeys_handled_by"

REFRESH_CRON = "0 */2 * * *"
RETENTION_CRON = "30 3 * * *"
CATCH_UP_CRON = "15 4 * * *"  # after the evening's jobs are closed in SmartMoving, before the day starts
ARRIVAL_WINDOWS_CRON = "0 15 * * *"  # dispatch plans tomorrow in the afternoon


def raw_job_name(tenant: Tenant) -> str:
    return tenant.names.job("smartmoving_refresh")


def journeys_job_name(tenant: Tenant) -> str:
    return tenant.names.job("journeys")


def build_jobs(tenant: Tenant) -> tuple[dg.UnresolvedAssetJobDefinition, ...]:
    raw = dg.define_asset_job(
        raw_job_name(tenant),
        selection=dg.AssetSelection.groups(tenant.names.group("raw")),
        description="Pull one service date from SmartMoving into the raw tables.",
    )
    journeys = dg.define_asset_job(
        journeys_job_name(tenant),
        # Only the per-partition checks: the freshness check spans every branch and runs on its own schedule.
        selection=dg.AssetSelection.assets(tenant.names.asset_key("journeys"))
        - dg.AssetSelection.checks(dg.AssetCheckKey(tenant.names.asset_key("journeys"), FRESHNESS_CHECK)),
        description="Rebuild one date x branch partition of journeys from the raw tables (no API call).",
    )
    retention = dg.define_asset_job(
        tenant.names.job("retention"),
        selection=dg.AssetSelection.assets(tenant.names.asset_key("history_retention")),
        description="Prune raw payloads and sync history older than the retention period.",
    )
    return raw, journeys, retention


def range_tags(dates: list[dt.date]) -> dict[str, str]:
    """Tags that make one run cover ``dates`` (consecutive) of the date-partitioned raw assets."""
    return {
        ASSET_PARTITION_RANGE_START_TAG: min(dates).isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: max(dates).isoformat(),
    }


def window_run_requests(tenant: Tenant, now: dt.datetime) -> list[dg.RunRequest]:
    window = tenant.sync_window(now)
    return [dg.RunRequest(run_key=f"window@{now.isoformat()}", tags=range_tags(window))]


def catch_up_run_config(tenant: Tenant) -> dict:
    """Past dates' details are refetched only when their jobs changed or work was newly Completed.

    Why: refetching every past opportunity daily would cost ~1,400 calls a day at LGM's volume, and
    refetching on every status change ~330 (each booked job is completed, then closed); statuses
    come from the customers list, which the catch-up pulls anyway (docs/performance.md).
    """
    max_age = 24.0 * (tenant.catch_up_days + 1)
    op = tenant.names.op("smartmoving_opportunities")
    return {"ops": {op: {"config": {"detail_max_age_hours": max_age, "refetch_on_status_change": False}}}}


def catch_up_dates(tenant: Tenant, today: dt.date) -> list[dt.date]:
    days = [today - dt.timedelta(days=n) for n in range(tenant.catch_up_days, 0, -1)]
    return [d for d in days if d >= tenant.first_service_date]


def build_catch_up_schedule(tenant: Tenant, raw_job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=tenant.names.schedule("daily_catch_up"),
        cron_schedule=CATCH_UP_CRON,
        job=raw_job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Refresh the last {tenant.catch_up_days} service dates once a day, so jobs whose date has passed "
            "reach Completed and Closed (details refetched only where the customers list shows a change)."
        ),
    )
    def catch_up(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        dates = catch_up_dates(tenant, tenant.today(now))
        if not dates:
            return dg.SkipReason(f"catch_up_days is {tenant.catch_up_days} or no past date is a partition yet")
        return [
            dg.RunRequest(
                run_key=f"catch-up@{now.isoformat()}", tags=range_tags(dates), run_config=catch_up_run_config(tenant)
            )
        ]

    return catch_up


def branches_job_name(tenant: Tenant) -> str:
    return tenant.names.job("smartmoving_branches")


def build_branches_schedule(tenant: Tenant) -> tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    job = dg.define_asset_job(
        branches_job_name(tenant),
        selection=dg.AssetSelection.assets(tenant.names.asset_key("smartmoving_branches")),
        description="Pull SmartMoving's branches (dispatch addresses): one API call.",
    )
    schedule = dg.ScheduleDefinition(
        name=tenant.names.schedule("daily_branches"),
        cron_schedule=CATCH_UP_CRON,
        job=job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return job, schedule


def build_refresh_schedule(tenant: Tenant, raw_job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=tenant.names.schedule("every_2_hours"),
        cron_schedule=REFRESH_CRON,
        job=raw_job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Refresh today and tomorrow (tenant timezone) from SmartMoving every 2 hours.",
    )
    def refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        return window_run_requests(tenant, now)

    return refresh


def build_retention_schedule(tenant: Tenant, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=tenant.names.schedule("daily_retention"),
        cron_schedule=RETENTION_CRON,
        job=job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


def build_fan_out_sensor(tenant: Tenant, journeys_job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    jobs_key = tenant.names.asset_key("smartmoving_jobs")

    @dg.sensor(
        name=tenant.names.sensor("journeys_after_refresh"),
        job=journeys_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="For every new smartmoving_jobs partition, rebuild journeys for each branch of that date.",
    )
    def fan_out(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest]:
        after = int(context.cursor) if context.cursor else None
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=jobs_key, after_storage_id=after), limit=100, ascending=True
        )
        for record in result.records:
            day = record.partition_key
            run = context.instance.get_run_by_id(record.run_id)
            if day is None or (run is not None and JOURNEYS_HANDLED_TAG in run.tags):
                continue
            for location_id in tenant.location_ids:
                yield dg.RunRequest(
                    run_key=f"{record.storage_id}:{location_id}",
                    partition_key=journey_partition_key(day, location_id),
                    tags={"lgm/triggered_by_run": record.run_id},
                )
        if result.records:
            context.update_cursor(str(result.records[-1].storage_id))

    return fan_out


def build_arrival_windows_schedule(
    tenant: Tenant,
) -> tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    job = dg.define_asset_job(
        tenant.names.job("arrival_windows"),
        selection=dg.AssetSelection.assets(tenant.names.asset_key("smartmoving_arrival_windows")),
        description="Fetch tomorrow's arrival windows: one call per booked opportunity, when the quota allows.",
    )

    @dg.schedule(
        name=tenant.names.schedule("daily_arrival_windows"),
        cron_schedule=ARRIVAL_WINDOWS_CRON,
        job=job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Once a day, tomorrow's arrival windows (skipped by the asset when the month's quota has no room).",
    )
    def arrival_windows(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        tomorrow = tenant.today(now) + dt.timedelta(days=1)
        return dg.RunRequest(run_key=f"arrival-windows@{now.isoformat()}", partition_key=tomorrow.isoformat())

    return job, arrival_windows


def leads_job_name(tenant: Tenant) -> str:
    return tenant.names.job("leads")


def lead_dates(tenant: Tenant, now: dt.datetime | None = None) -> list[dt.date]:
    """Yesterday and today (tenant time): leads created late yesterday are still being worked on."""
    today = tenant.today(now)
    return [d for d in (today - dt.timedelta(days=1), today) if d >= tenant.first_service_date]


def build_leads_schedule(tenant: Tenant) -> tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    job = dg.define_asset_job(
        leads_job_name(tenant),
        selection=dg.AssetSelection.groups(tenant.names.group("leads")),
        description="Pull new SmartMoving leads (creation dates) and merge them into the leads table.",
    )

    @dg.schedule(
        name=tenant.names.schedule("leads_every_2_hours"),
        cron_schedule=REFRESH_CRON,
        job=job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Yesterday's and today's leads (tenant time) in one run: one date-range list call.",
    )
    def leads_refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        return [dg.RunRequest(run_key=f"leads@{now.isoformat()}", tags=range_tags(lead_dates(tenant, now)))]

    return job, leads_refresh
