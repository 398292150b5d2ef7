"""``lgm status``: the old system's sync status, in the terminal, read from ``sync_runs``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from lgm_pipeline.assets.freshness import STALE_AFTER, is_stale
from lgm_pipeline.assets.metadata import cycles_per_day
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.storage.tables import sync_runs, tenant_options
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.webhooks.inbox import InboxCounts, inbox_counts


@dataclass
class TenantStatus:
    tenant: Tenant
    branches: list[dict[str, Any]]
    api_calls_today: int
    projected_monthly_calls: int
    leads: dict[str, int] | None = None  # today, recent (leads_recent), quarantined
    records: dict[str, int] | None = None  # served / unreadable today, held_<kind> in unreadable_records
    #: When it was read: each branch's window (its today and tomorrow) is taken at this moment.
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    webhooks: InboxCounts | None = None  # only for a tenant that takes webhooks (webhook_token_env)


def tenant_status(tenant: Tenant, postgres: PostgresResource | None = None) -> TenantStatus:
    postgres = postgres or PostgresResource()
    rows = postgres.latest_sync_status(tenant)
    day_start = dt.datetime.combine(tenant.today(), dt.time(), tzinfo=tenant.tz)
    with postgres.ensure_tenant(tenant).connect() as conn:
        calls_today = (
            conn.execution_options(**tenant_options(tenant))
            .execute(
                sa.select(sa.func.coalesce(sa.func.sum(sync_runs.c.api_calls), 0)).where(
                    sync_runs.c.started_at >= day_start
                )
            )
            .scalar_one()
        )
    leads = postgres.lead_counts(tenant)
    records = postgres.records_today(tenant, day_start)
    now = dt.datetime.now(dt.UTC)
    webhooks = None
    if tenant.smartmoving.webhook_token_env:
        webhooks = inbox_counts(postgres.ensure_tenant(tenant), tenant, now)
    elapsed_share = max((now - day_start).total_seconds() / 86400, 1 / cycles_per_day())
    projected = int(calls_today / elapsed_share * 30) if calls_today else 0
    return TenantStatus(
        tenant,
        with_unsynced_window_dates(tenant, rows, now),
        int(calls_today),
        projected,
        leads,
        records,
        webhooks=webhooks,
        now=now,
    )


def with_unsynced_window_dates(tenant: Tenant, rows: list[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """``rows`` plus a "never synced" row for each date of a branch's window that has no write yet."""
    written = {(r["location_id"], r["service_date"]) for r in rows}
    missing = [
        {"location_id": b.location_id, "service_date": day, "age": None}
        for b in tenant.branches
        for day in b.window(now)
        if (b.location_id, day) not in written
    ]
    return sorted([*rows, *missing], key=lambda r: (-r["service_date"].toordinal(), r["location_id"]))


def format_age(age: dt.timedelta) -> str:
    """``2m 5s``, ``3h 0m``, ``2d 4h``: the two largest units of a wait."""
    seconds = int(age.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def format_webhooks(counts: InboxCounts) -> str:
    """``webhooks: N received, P pending (oldest 2m 5s), D done, F failed, I ignored, U unreadable``."""
    oldest = f" (oldest {format_age(counts.oldest_pending_age)})" if counts.oldest_pending_age is not None else ""
    return (
        f"webhooks: {counts.received} received, {counts.pending} pending{oldest}, {counts.done} done, "
        f"{counts.failed} failed, {counts.ignored} ignored, {counts.unreadable} unreadable"
    )


def format_next_tick(tenant: Tenant, now: dt.datetime) -> str:
    """``next cycle tick: 2026-11-26 01:14 EST (in 1h 2m; cron 14 1-23/2 * * *, America/Toronto)``."""
    from lgm_pipeline.assets.automation import cycle_cron, next_cycle_tick  # late: loads Dagster's schedules

    tick = next_cycle_tick(tenant, now)
    return (
        f"next cycle tick: {tick:%Y-%m-%d %H:%M %Z} (in {format_age(tick - now)}; "
        f"cron {cycle_cron(tenant)}, {tenant.timezone})"
    )


def _check_counts(row: dict[str, Any]) -> str:
    warned, failed = row.get("checks_warned"), row.get("checks_failed")
    return "-" if warned is None and failed is None else f"{warned or 0}/{failed or 0}"


def format_status(status: TenantStatus) -> str:
    tenant = status.tenant
    quota = tenant.smartmoving.monthly_call_quota
    lines = [f"{tenant.name} ({tenant.key}, schema {tenant.schema})", f"  {format_next_tick(tenant, status.now)}"]
    if not status.branches:
        lines.append("  never synced: run `lgm sync`")
    else:
        # Each row is the latest journeys write of one (service date, branch); every header names its count.
        lines += [
            "  latest journeys write per service date and branch; jobs = journeys stored + quarantined",
            "  (jobs of branches not in the tenants file count in no branch: smartmoving_jobs' branch_mapping check);",
            "  checks warn/error = the partition's failed checks by severity; stale = a date of the branch's own",
            f"  today and tomorrow (its time zone) not written in the last {STALE_AFTER.total_seconds() // 60:.0f} min",
        ]
        lines.append(
            f"  {'service date':<14}{'branch':<32}{'written':>12}{'jobs':>10}{'added':>7}{'changed':>9}"
            f"{'removed':>9}{'quarantined':>13}{'checks warn/error':>19}  state"
        )
        for row in status.branches:
            age: dt.timedelta | None = row["age"]
            if age is None:
                lines.append(f"  {row['service_date'].isoformat():<14}{row['location_id']:<32}{'never':>12}  STALE")
                continue
            minutes = int(age.total_seconds() // 60)
            state = "STALE" if is_stale(tenant, row, status.now) else row["status"]
            lines.append(
                f"  {row['service_date'].isoformat():<14}{row['location_id']:<32}{f'{minutes} min ago':>12}"
                f"{row['rows_written']:>10}{row['inserted']:>7}{row['updated']:>9}{row['deleted']:>9}"
                f"{row['quarantined']:>13}{_check_counts(row):>19}  {state}"
            )
    if status.leads is not None:
        lines.append(
            f"  leads: {status.leads['today']} created today, {status.leads['recent']} open in leads_recent "
            f"(last 7 days, not converted), {status.leads['quarantined']} quarantined"
        )
    if status.records is not None:
        held = {k.removeprefix("held_"): n for k, n in status.records.items() if k.startswith("held_") and n}
        lines.append(
            f"  records today: {status.records['served']} served by SmartMoving, {status.records['unreadable']} "
            "unreadable (kept raw with their reason in unreadable_records"
            + (": " + ", ".join(f"{n} {kind}" for kind, n in sorted(held.items())) if held else "")
            + ")"
        )
    if status.webhooks is not None:
        lines.append(f"  {format_webhooks(status.webhooks)}")
    lines.append(
        f"  SmartMoving API calls today (tenant time) {status.api_calls_today}; at this pace this month "
        f"{status.projected_monthly_calls} of the {quota} quota ({status.projected_monthly_calls / quota:.0%})"
    )
    return "\n".join(lines)
