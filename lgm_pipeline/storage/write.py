"""``write_frame``: a DataFrame into partition(s) of a tenant table, in one transaction.

Every write stages the frame (:mod:`staging`), then applies the table's strategy, listed in
:data:`WRITE_STRATEGIES`: the raw tables are replaced partition by partition (:mod:`replace`),
``journeys`` and ``leads`` are merged by id with audit and quarantine (:mod:`merge`). The same
transaction records each partition's ``sync_runs`` row, so a failure or a killed connection
anywhere leaves the previous rows and no record of the failed write. Identifiers come from
:mod:`tables` and the validated tenant config and are quoted; values only travel as COPY data or
bound parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.domain.mappings import JOURNEY_CREATING_STAGES
from lgm_pipeline.storage.access import quote_ident
from lgm_pipeline.storage.merge import Departure, MergeById
from lgm_pipeline.storage.replace import ReplacePartitions
from lgm_pipeline.storage.scope import FrameError, PartitionScope, WriteResult
from lgm_pipeline.storage.staging import ExtraColumns, check_frame_columns
from lgm_pipeline.storage.tables import (
    date_column,
    journey_audit,
    journeys,
    journeys_quarantine,
    lead_audit,
    leads,
    leads_quarantine,
    locations,
    raw_branches,
    raw_customers,
    raw_job_departures,
    raw_job_timelines,
    raw_jobs,
    raw_leads,
    raw_opportunities,
    sync_runs,
    tenant_options,
    unreadable_records,
)
from lgm_pipeline.tenants.config import Tenant


class WriteStrategy(Protocol):
    """How a table's partitions are written once the frame fits the table."""

    @property
    def extra_columns(self) -> ExtraColumns:
        """Columns the frame carries beyond the table's own (staged, not stored as such)."""
        ...

    def check(self, table: sa.Table, df: pd.DataFrame, scopes: Sequence[PartitionScope]) -> None:
        """Raise :class:`FrameError` for a frame the strategy cannot write, before any SQL."""
        ...

    def write(
        self,
        conn: Connection,
        tenant: Tenant,
        table: sa.Table,
        df: pd.DataFrame,
        scopes: Sequence[PartitionScope],
        constants: Mapping[str, Any],
        run_id: str,
    ) -> Mapping[PartitionScope, WriteResult]:
        """Stage and write ``df`` in the caller's transaction; one result per scope."""
        ...


_REPLACE = ReplacePartitions()


def _journey_filed_elsewhere(conn: Connection, tenant: Tenant) -> str:
    """A journey whose job the latest pull files under another date or branch (rescheduled, re-branched).

    The raw tables are rewritten per date on every pull, so a job seen, by a fetch newer than the
    journey's, on another date (or under another mapped branch on its own date) has moved there.
    """
    schema = quote_ident(conn, tenant.schema)
    return (
        f"EXISTS (SELECT 1 FROM {schema}.{raw_jobs.name} rj "
        f"LEFT JOIN {schema}.{raw_opportunities.name} ro "
        "ON ro.opportunity_id = rj.opportunity_id AND ro.service_date = rj.service_date "
        f"LEFT JOIN {schema}.{locations.name} l "
        "ON l.smartmoving_branch_name = btrim(ro.payload -> 'branch' ->> 'name') "
        "WHERE rj.job_id = p.smartmoving_job_id AND rj.fetched_at > p.source_fetched_at "
        "AND (rj.service_date <> p.service_date OR l.location_id <> p.location_id))"
    )


def _journey_departure(conn: Connection, tenant: Tenant) -> str:
    """Why a journey ``g`` leaving its partition left: the latest pull of its date, if it saw the job go.

    ``raw_job_departures`` holds what the raw pull of each date found (its opportunity's details, or
    SmartMoving's 400), newer than the journey's own fetch; no such row: no reason (NULL).
    """
    schema = quote_ident(conn, tenant.schema)
    return (
        f"SELECT d.reason, d.new_service_date FROM {schema}.{raw_job_departures.name} d "
        "WHERE d.service_date = g.service_date AND d.job_id = g.smartmoving_job_id "
        "AND d.fetched_at > g.source_fetched_at"
    )


#: Each table's write strategy, by table name: the one place that decides replace or merge.
WRITE_STRATEGIES: Mapping[str, WriteStrategy] = {
    raw_customers.name: _REPLACE,
    raw_opportunities.name: _REPLACE,
    raw_jobs.name: _REPLACE,
    raw_job_departures.name: _REPLACE,
    raw_job_timelines.name: _REPLACE,
    raw_branches.name: _REPLACE,
    raw_leads.name: _REPLACE,
    journeys.name: MergeById(
        journeys_quarantine,
        journey_audit,
        "journey_id",
        # Only booked work becomes a journey: a lead or a job first seen cancelled never does.
        {"status": frozenset(str(s) for s in JOURNEY_CREATING_STAGES)},
        filed_elsewhere=_journey_filed_elsewhere,
        departure=Departure(("reason", "new_service_date"), _journey_departure),
    ),
    leads.name: MergeById(leads_quarantine, lead_audit, "lead_id"),
}


@dataclass(frozen=True)
class ApiCalls:
    """SmartMoving calls spent producing a frame, recorded with its write in ``sync_runs``."""

    total: int
    by_endpoint: Mapping[str, int] | None = None


@dataclass(frozen=True)
class CheckCounts:
    """A partition's failed asset checks by severity, recorded with its write in ``sync_runs``."""

    warned: int
    failed: int


@dataclass(frozen=True)
class PulledRecords:
    """What a pull served and the records of it that could not be read (``unreadable_records`` rows of
    one kind), written with the pull's own rows so that served = stored + quarantined holds in the
    database at every commit."""

    kind: str
    served: int
    unreadable: list[dict[str, Any]]


def _replace_unreadable(
    conn: Connection, tenant: Tenant, pulled: PulledRecords, scopes: Sequence[PartitionScope], run_id: str
) -> None:
    scoped = conn.execution_options(**tenant_options(tenant))
    stale = unreadable_records.delete().where(unreadable_records.c.record_kind == pulled.kind)
    dates = [s.service_date for s in scopes if s.service_date is not None]
    if dates:  # an unpartitioned pull (branches) replaces all of its kind
        stale = stale.where(unreadable_records.c.service_date.in_(dates))
    scoped.execute(stale)
    if pulled.unreadable:
        rows = [{**row, "record_kind": pulled.kind, "run_id": run_id} for row in pulled.unreadable]
        scoped.execute(unreadable_records.insert(), rows)


def write_frame(
    engine: Engine,
    tenant: Tenant,
    table: sa.Table,
    df: pd.DataFrame,
    *,
    scope: PartitionScope | Sequence[PartitionScope],
    run_id: str,
    asset: str,
    api_calls: ApiCalls | None = None,
    check_counts: Mapping[str, CheckCounts] | None = None,
    pulled: PulledRecords | None = None,
) -> WriteResult:
    """Write ``df`` as partition(s) ``scope`` of ``table`` with the table's strategy.

    Several scopes (the dates of a single-run range) are written in one transaction, each with its
    ``sync_runs`` row; the result adds them up. Every row gets ``run_id`` (the writing run is the
    one source of that fact, whatever the frame says); a single scope's ``service_date`` /
    ``location_id`` fill those columns when the frame lacks them; every other column of the table
    must be present. ``api_calls`` go to the first scope's ``sync_runs`` row: the calls served the
    whole range. ``check_counts``: each partition's failed checks by severity (by partition key), kept
    beside its counts.
    """
    scopes = [scope] if isinstance(scope, PartitionScope) else list(scope)
    if not scopes:
        raise FrameError(f"frame for {table.name}: no partition to write")
    strategy = WRITE_STRATEGIES.get(table.name)
    if strategy is None:
        raise FrameError(f"frame for {table.name}: no write strategy for this table")
    constants: dict[str, Any] = {"run_id": run_id}
    only = scopes[0] if len(scopes) == 1 else PartitionScope()
    date = date_column(table)
    if only.service_date is not None and date in table.columns and date not in df.columns:
        constants[date] = only.service_date
    if only.location_id is not None and "location_id" in table.columns and "location_id" not in df.columns:
        constants["location_id"] = only.location_id
    check_frame_columns(df, table, constants, strategy.extra_columns)
    strategy.check(table, df, scopes)

    started_at = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        results = strategy.write(conn, tenant, table, df, scopes, constants, run_id)
        if pulled is not None:
            _replace_unreadable(conn, tenant, pulled, scopes, run_id)
        for index, part in enumerate(scopes):
            _record_sync_run(
                conn,
                tenant,
                asset=asset,
                scope=part,
                run_id=run_id,
                started_at=started_at,
                result=results[part],
                api_calls=api_calls if index == 0 else None,
                check_counts=(check_counts or {}).get(str(part.key)),
                pulled=pulled if index == 0 else None,
            )
    return WriteResult(
        table.name,
        rows=sum(r.rows for r in results.values()),
        inserted=sum(r.inserted for r in results.values()),
        updated=sum(r.updated for r in results.values()),
        deleted=sum(r.deleted for r in results.values()),
        quarantined=sum(r.quarantined for r in results.values()),
    )


def _record_sync_run(
    conn: Connection,
    tenant: Tenant,
    *,
    asset: str,
    scope: PartitionScope,
    run_id: str,
    started_at: dt.datetime,
    result: WriteResult,
    api_calls: ApiCalls | None,
    check_counts: CheckCounts | None = None,
    pulled: PulledRecords | None = None,
) -> None:
    conn.execution_options(**tenant_options(tenant)).execute(
        sync_runs.insert().values(
            asset=asset,
            partition_key=scope.key,
            service_date=scope.service_date,
            location_id=scope.location_id,
            run_id=run_id,
            started_at=started_at,
            finished_at=sa.func.clock_timestamp(),
            rows_written=result.rows,
            inserted=result.inserted,
            updated=result.updated,
            deleted=result.deleted,
            quarantined=result.quarantined,
            api_calls=api_calls.total if api_calls else None,
            api_calls_by_endpoint=(
                dict(api_calls.by_endpoint) if api_calls and api_calls.by_endpoint is not None else None
            ),
            status="success",
            checks_warned=check_counts.warned if check_counts else None,
            checks_failed=check_counts.failed if check_counts else None,
            served=pulled.served if pulled else None,
            unreadable=len(pulled.unreadable) if pulled else None,
        )
    )
