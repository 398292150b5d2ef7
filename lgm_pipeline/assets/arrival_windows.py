"""Arrival windows of tomorrow's booked work: one ``/opportunities/{id}/jobs`` call per opportunity, once a day.

Opportunity details carry no times; the jobs endpoint does (``startTimeUtc``/``endTimeUtc``). It costs
a call per booked opportunity of the date (~140 a day at LGM's volume, ~4,200 a month), so the asset
fetches only while the tenant's month, projected from the calls recorded so far, leaves room for it.
"""

import calendar
import datetime as dt
from collections import Counter
from typing import Any

import dagster as dg
import pandas as pd

from lgm_pipeline.assets.metadata import preview
from lgm_pipeline.assets.partitions import TenantPartitions
from lgm_pipeline.assets.raw import api_asset, call_api, open_client
from lgm_pipeline.domain.mappings import STATUS_MAPPING
from lgm_pipeline.smartmoving.errors import NotFoundError
from lgm_pipeline.smartmoving.resource import SmartMovingResource
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.raw import read_status, timelines_frame


class ArrivalWindowsConfig(dg.Config):
    quota_share: float = 0.9
    """Fetch only while the month's projected calls, these included every day, stay under this share of the quota."""


def booked_opportunity_ids(jobs: pd.DataFrame, opportunities: pd.DataFrame) -> list[str]:
    """Opportunities of booked work with a job on the date (a lead's times are nobody's plan)."""
    booked = {
        oid
        for oid, payload in zip(opportunities["opportunity_id"], opportunities["payload"], strict=True)
        if (mapping := STATUS_MAPPING.get(read_status(payload.get("status")))) is not None and mapping.booked  # type: ignore[arg-type]
    }
    return sorted(set(jobs["opportunity_id"]) & booked)


def month_allows(used: int, needed_per_day: int, quota: int, today: dt.date, share: float) -> tuple[bool, int]:
    """(fits, projected calls this month) if ``needed_per_day`` calls are added every remaining day."""
    days = calendar.monthrange(today.year, today.month)[1]
    elapsed = max(today.day, 1)
    projected = round(used / elapsed * days + needed_per_day * (days - elapsed + 1))
    return projected <= quota * share, projected


def build_arrival_windows_asset(tenant: Tenant, partitions: TenantPartitions) -> dg.AssetsDefinition:
    names = tenant.names

    @dg.asset(
        key=names.asset_key("smartmoving_arrival_windows"),
        description=(
            f"{tenant.name}: start and end times of the date's booked jobs (the arrival window the board shows), "
            "one /opportunities/{id}/jobs call per booked opportunity; skipped when the month's quota has no "
            "room. Table raw_job_timelines."
        ),
        group_name=names.group("arrival_windows"),
        partitions_def=partitions.service_date,
        ins={
            "smartmoving_jobs": dg.AssetIn(names.asset_key("smartmoving_jobs")),
            "smartmoving_opportunities": dg.AssetIn(names.asset_key("smartmoving_opportunities")),
        },
        output_required=False,
        **api_asset(tenant, "smartmoving_arrival_windows"),
    )
    def smartmoving_arrival_windows(
        context: dg.AssetExecutionContext,
        config: ArrivalWindowsConfig,
        smartmoving: SmartMovingResource,
        postgres: PostgresResource,
        smartmoving_jobs: pd.DataFrame,
        smartmoving_opportunities: pd.DataFrame,
    ) -> Any:
        service_date = dt.date.fromisoformat(context.partition_key)
        ids = booked_opportunity_ids(smartmoving_jobs, smartmoving_opportunities)
        today = tenant.today()
        used = postgres.calls_this_month(tenant, today)
        fits, projected = month_allows(used, len(ids), tenant.smartmoving.monthly_call_quota, today, config.quota_share)
        if not fits:
            # Nothing is written: the windows fetched earlier stay, and the board shows them.
            context.log.warning(
                f"arrival windows of {service_date} skipped: {len(ids)} calls a day would take the month to "
                f"{projected} of {tenant.smartmoving.monthly_call_quota} calls ({used} used so far)"
            )
            return
        jobs_by_opportunity: dict[str, list[dict]] = {}
        with open_client(smartmoving, tenant, context) as client:
            for oid in ids:
                try:
                    jobs_by_opportunity[oid] = call_api(client.get_opportunity_jobs, oid, tenant=tenant)
                except NotFoundError:
                    continue  # deleted since the pull: its journeys leave with the next merge
            calls = Counter(client.calls)
        frame = timelines_frame(jobs_by_opportunity, service_date, dt.datetime.now(dt.UTC), context.run.run_id)
        yield dg.Output(
            frame,
            metadata={
                "rows": dg.MetadataValue.int(len(frame)),
                "api_calls": dg.MetadataValue.int(sum(calls.values())),
                "api_calls_by_endpoint": dg.MetadataValue.json(dict(sorted(calls.items()))),
                "projected_monthly_calls": dg.MetadataValue.int(projected),
                "without_times": dg.MetadataValue.int(int(frame["start_at"].isna().sum())),
                "preview": preview(frame, ["job_id", "start_at", "end_at"]),
            },
        )

    return smartmoving_arrival_windows
