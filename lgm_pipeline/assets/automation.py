"""What runs without anyone clicking: the 2-hour refresh and the fan-out to branch partitions.

The schedule pulls the raw assets for today and tomorrow (tenant timezone). A sensor watches
``smartmoving_jobs`` materializations and requests every branch partition of ``journeys`` for that
date, so the 12 date x branch partitions are rebuilt from the fresh pull. (A sensor rather than
declarative automation: eager conditions only cover the latest time partition, and we need two.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg

from lgm_pipeline.assets.freshness import FRESHNESS_CHECK
from lgm_pipeline.assets.partitions import journey_partition_key
from lgm_pipeline.tenants import Tenant

#: Raw runs carrying this tag had their journeys rebuilt by the caller (``lgm sync``); the sensor skips them.
JOURNEYS_HANDLED_TAG = "lgm/journeys_handled_by"

REFRESH_CRON = "0 */2 * * *"
RETENTION_CRON = "30 3 * * *"


def raw_job_name(tenant: Tenant) -> str:
    return f"{tenant.key}_smartmoving_refresh"


def journeys_job_name(tenant: Tenant) -> str:
    return f"{tenant.key}_journeys"


def build_jobs(tenant: Tenant) -> tuple[dg.UnresolvedAssetJobDefinition, ...]:
    raw = dg.define_asset_job(
        raw_job_name(tenant),
        selection=dg.AssetSelection.groups(f"{tenant.key}_raw"),
        description="Pull one service date from SmartMoving into the raw tables.",
    )
    journeys = dg.define_asset_job(
        journeys_job_name(tenant),
        # Only the per-partition checks: the freshness check spans every branch and runs on its own schedule.
        selection=dg.AssetSelection.assets(dg.AssetKey([tenant.key, "journeys"]))
        - dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey([tenant.key, "journeys"]), FRESHNESS_CHECK)),
        description="Rebuild one date x branch partition of journeys from the raw tables (no API call).",
    )
    retention = dg.define_asset_job(
        f"{tenant.key}_retention",
        selection=dg.AssetSelection.assets(dg.AssetKey([tenant.key, "history_retention"])),
        description="Prune raw payloads and sync history older than the retention period.",
    )
    return raw, journeys, retention


def window_run_requests(tenant: Tenant, now: dt.datetime) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(run_key=f"{day.isoformat()}@{now.isoformat()}", partition_key=day.isoformat())
        for day in tenant.sync_window(now)
    ]


def build_refresh_schedule(tenant: Tenant, raw_job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{tenant.key}_every_2_hours",
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
        name=f"{tenant.key}_daily_retention",
        cron_schedule=RETENTION_CRON,
        job=job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


def build_fan_out_sensor(tenant: Tenant, journeys_job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    jobs_key = dg.AssetKey([tenant.key, "smartmoving_jobs"])

    @dg.sensor(
        name=f"{tenant.key}_journeys_after_refresh",
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
