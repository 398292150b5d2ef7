"""New SmartMoving leads of one tenant, partitioned by creation date (tenant timezone).

The leads ride in the raw run (the 2-hour window, the daily catch-up): one date-range list call pulls
the leads created from the day before the run's first date up to today (:func:`lead_pull_dates`; a
lead created late is worked on the next morning, so yesterday's still change), keeps the payloads in
``raw_leads`` and merges the typed rows into ``leads``, with audit and quarantine, like journeys. The
day before is rewritten in the same transaction as the run's own partitions
(:data:`ALSO_REWRITES_METADATA`); ``leads`` of a date reads the raw leads of that date and the day before.
"""

import datetime as dt
import time
from collections import Counter
from typing import Any

import dagster as dg
import pandas as pd

from lgm_pipeline.assets.journeys import rule_check
from lgm_pipeline.assets.metadata import api_cost_metadata, preview
from lgm_pipeline.assets.partitions import TenantPartitions
from lgm_pipeline.assets.raw import (
    account_metadata,
    api_asset,
    attach_account,
    call_api,
    open_client,
    records_read_check,
    records_read_spec,
    runs_per_day,
    service_dates,
)
from lgm_pipeline.naming import ALSO_REWRITES_METADATA, IO_MANAGER_KEY, OWNERS
from lgm_pipeline.quality.rules import lead_rules_for, validate_leads
from lgm_pipeline.smartmoving.resource import SmartMovingResource
from lgm_pipeline.storage.io_manager import table_metadata
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.leads import mark_probable_duplicates, normalize_leads, read_leads

#: Leads of the same phone or email within this many days are probably the same household.
DUPLICATE_WINDOW = dt.timedelta(days=30)


class LeadsConfig(dg.Config):
    max_quarantine_share: float = 0.05
    """The contact rule's check fails with ERROR when it quarantines more than this share of the leads."""


def utc_dates(tenant: Tenant, dates: list[dt.date]) -> tuple[dt.date, dt.date]:
    """The UTC calendar dates the tenant's local ``dates`` span (SmartMoving filters leads by UTC date)."""
    start = dt.datetime.combine(dates[0], dt.time(), tenant.tz).astimezone(dt.UTC).date()
    end_local = dt.datetime.combine(dates[-1] + dt.timedelta(days=1), dt.time(), tenant.tz)
    end = (end_local - dt.timedelta(microseconds=1)).astimezone(dt.UTC).date()
    return start, end


def lead_pull_dates(tenant: Tenant, dates: list[dt.date], now: dt.datetime | None = None) -> list[dt.date]:
    """The creation dates a run over ``dates`` pulls: from the day before the first up to the last, never
    past today (tenant time) nor before the first service date. The window (today, tomorrow) pulls
    yesterday and today."""
    first = max(min(dates) - dt.timedelta(days=1), tenant.first_service_date)
    last = min(max(dates), tenant.today(now))
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _also_rewrites(pulled: list[dt.date], dates: list[dt.date]) -> dict[str, dg.MetadataValue]:
    extra = [d.isoformat() for d in pulled if d not in dates]
    return {ALSO_REWRITES_METADATA: dg.MetadataValue.json(extra)} if extra else {}


def build_leads_assets(tenant: Tenant, partitions: TenantPartitions) -> list[dg.AssetsDefinition]:
    names = tenant.names
    group = names.group("leads")
    raw_key = names.asset_key("smartmoving_leads")
    leads_key = names.asset_key("leads")
    single_run = dg.BackfillPolicy.single_run()

    @dg.asset(
        key=raw_key,
        description=(
            f"{tenant.name}: SmartMoving leads created on the date (tenant time), one date-range list call per run, "
            "payload verbatim. Table raw_leads."
        ),
        group_name=group,
        partitions_def=partitions.service_date,
        backfill_policy=single_run,
        # After the pull, in the same run (the dispatcher's data first); skipped by Dagster when any step of the
        # pull failed, so an error that stops the cycle (settings, key, quota) costs no leads call either.
        deps=[names.asset_key("smartmoving_jobs")],
        check_specs=[records_read_spec(raw_key)],
        **api_asset(tenant, "smartmoving_leads"),
    )
    def smartmoving_leads(context: dg.AssetExecutionContext, smartmoving: SmartMovingResource) -> Any:
        dates = service_dates(context)
        created = lead_pull_dates(tenant, dates)
        pulled: list[Any] = []
        calls: Counter[str] = Counter()
        duplicates = 0
        if created:  # none when every date of the run is after tomorrow: no call
            with open_client(smartmoving, tenant, context) as client:
                pulled = call_api(client.list_leads, *utc_dates(tenant, created), tenant=tenant)
                calls = Counter(client.calls)
                duplicates = client.duplicates["leads"]
        fetched_at = dt.datetime.now(dt.UTC)
        frame, account = read_leads(tenant, pulled, created or dates, fetched_at, context.run.run_id, duplicates)
        yield dg.Output(
            attach_account(frame, account, fetched_at, context.run.run_id),
            metadata={
                **account_metadata(account),
                "rows": dg.MetadataValue.int(len(frame)),
                "pulled": dg.MetadataValue.int(len(pulled)),
                "dates": dg.MetadataValue.json([d.isoformat() for d in created]),
                **_also_rewrites(created, dates),
                **api_cost_metadata(tenant, calls, runs_per_day(tenant, dates)),
            },
        )
        yield records_read_check(account)

    @dg.asset(
        key=leads_key,
        description=(
            f"{tenant.name}: the CRM's leads (typed, contacts normalized, branch mapped, probable duplicates "
            "flagged), merged by id with audit; leads failing the contact rule go to leads_quarantine. Table leads "
            "(+ leads_quarantine, lead_audit); view leads_recent."
        ),
        group_name=group,
        partitions_def=partitions.service_date,
        backfill_policy=single_run,
        io_manager_key=IO_MANAGER_KEY,
        # A date's leads are normalized with the day before's: both are pulled and rewritten together.
        ins={
            "smartmoving_leads": dg.AssetIn(
                raw_key,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-1, allow_nonexistent_upstream_partitions=True
                ),
            )
        },
        check_specs=[
            dg.AssetCheckSpec(rule.name, asset=leads_key, description=f"[{rule.severity.value}] {rule.description}")
            for rule in lead_rules_for(tenant)
        ],
        kinds={"pandas", "postgres"},
        owners=OWNERS,
        tags=names.tags,
        metadata=table_metadata(tenant, "leads", definition=True),
    )
    def leads(
        context: dg.AssetExecutionContext,
        config: LeadsConfig,
        postgres: PostgresResource,
        smartmoving_leads: pd.DataFrame,
    ) -> Any:
        started = time.monotonic()
        dates = lead_pull_dates(tenant, service_dates(context))
        frame = normalize_leads(tenant, smartmoving_leads, dt.datetime.now(dt.UTC), context.run.run_id)
        earlier = postgres.recent_lead_contacts(
            tenant, min(dates or service_dates(context)) - DUPLICATE_WINDOW, exclude=frame["id"]
        )
        outcome = validate_leads(mark_probable_duplicates(frame, earlier), tenant)
        quarantined = outcome.frame["quarantine_reasons"].notna()
        stored = outcome.frame[~quarantined]
        yield dg.Output(
            outcome.frame,
            metadata={
                "leads": dg.MetadataValue.int(int((~quarantined).sum())),
                "quarantined": dg.MetadataValue.int(int(quarantined.sum())),
                "flagged": dg.MetadataValue.int(int(stored["dq_flags"].map(bool).sum())),
                "by_status": dg.MetadataValue.json(stored["status"].fillna("(none)").value_counts().to_dict()),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                "preview": preview(stored, ["created_date", "status", "source", "location_id"]),
                **_also_rewrites(dates, service_dates(context)),
            },
        )
        label = ", ".join(d.isoformat() for d in dates)
        for result in outcome.results:
            yield rule_check(result, result.rows_checked, config.max_quarantine_share, label)

    return [smartmoving_leads, leads]
