"""Serving the inbox: the pending events of a tenant, and one refresh's changes applied in one transaction.

A refresh fetches the current details of each opportunity its events name (once, however many events
name it: the details say what is true now, so duplicates, bursts and events out of order all come to
the same rows) and rewrites that opportunity's rows of the raw tables on every date it has work on,
and on every date it had. The journeys partitions it touched inside their branch's window are what the
webhook sensor rebuilds next (``assets/webhooks.py``); a change on any other date stays in the raw
tables for the cycle or the catch-up to build from.

Everything one refresh writes (raw rows, departures, unreadable jobs, the events' outcome and its
``sync_runs`` row) commits together: a failed refresh leaves the inbox pending and the tables as they were.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.smartmoving.shapes import UnreadableValue, read_id
from lgm_pipeline.storage.tables import (
    journeys,
    raw_customers,
    raw_job_departures,
    raw_jobs,
    raw_opportunities,
    sync_runs,
    tenant_options,
    unreadable_records,
    webhook_events,
)
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.journeys import clean_text
from lgm_pipeline.transform.raw import (
    OpportunitySummary,
    departure_reason,
    jobs_account,
    jobs_frame,
    opportunities_frame,
    opportunity_dates,
    summary_hash,
    unreadable_frame,
)

#: Events one refresh serves at most; the rest wait for the next (a flood costs runs, not memory).
MAX_EVENTS_PER_REFRESH = 1000
#: The asset name of a refresh in ``sync_runs`` (its API calls count against the month's quota there).
REFRESH_ASSET = "webhook_updates"
#: Refreshes an event may fail in before it is settled failed: an opportunity whose details never come (a
#: persistent 5xx) must not hold the inbox, nor spend its calls every minute, forever.
MAX_REFRESH_ATTEMPTS = 3


@dataclass(frozen=True)
class PendingEvent:
    event_id: int
    event_type: str | None
    opportunity_id: str
    attempts: int = 0


@dataclass(frozen=True)
class InboxBacklog:
    """What waits in a tenant's inbox: the sensor's view."""

    pending: int
    newest_event_id: int | None


@dataclass
class RefreshOutcome:
    """What a refresh did, per opportunity and in all."""

    #: The journeys partitions to rebuild now (inside their branch's window), per opportunity.
    rebuild: dict[str, set[str]] = field(default_factory=dict)
    #: What each opportunity's events are marked with (why nothing was rebuilt, or that it is gone).
    notes: dict[str, str] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    raw_rows: int = 0
    jobs_served: int = 0
    jobs_unreadable: int = 0
    events_done: int = 0

    @property
    def partitions(self) -> set[str]:
        return set().union(*self.rebuild.values()) if self.rebuild else set()


def _scoped(conn: Connection, tenant: Tenant) -> Connection:
    return conn.execution_options(**tenant_options(tenant))


def inbox_backlogs(engine: Engine, tenants: Sequence[Tenant]) -> dict[str, InboxBacklog]:
    """What waits in each tenant's inbox (tenant key -> backlog), in one query for all of them: the webhook
    sensor asks every few seconds, and a query a tenant was most of its cost at rest (docs/performance.md,
    section 12)."""
    schemas = {t.schema: t.key for t in tenants}
    with engine.connect() as conn:
        rows = conn.execute(_backlog_query(tuple(schemas))).all()
    return {schemas[schema]: InboxBacklog(int(count), newest) for schema, count, newest in rows}


@functools.lru_cache(maxsize=8)
def _backlog_query(schemas: tuple[str, ...]) -> sa.Select[Any] | sa.CompoundSelect:
    """Each schema's pending count and newest event id, one row a schema (built once per set of tenants)."""
    parts = []
    for schema in schemas:
        state, event_id = webhook_events.c.state.name, webhook_events.c.event_id.name
        e = sa.table(webhook_events.name, sa.column(state), sa.column(event_id), schema=schema)
        count, newest = sa.func.count(), sa.func.max(e.c[event_id])
        parts.append(sa.select(sa.literal(schema), count, newest).where(e.c[state] == "pending"))
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


def pending_events(engine: Engine, tenant: Tenant, limit: int = MAX_EVENTS_PER_REFRESH) -> list[PendingEvent]:
    """The oldest pending events, up to ``limit`` (a pending event always names an opportunity)."""
    e = webhook_events
    stmt = (
        sa.select(e.c.event_id, e.c.event_type, e.c.opportunity_id, e.c.attempts)
        .where(e.c.state == "pending", e.c.opportunity_id.is_not(None))
        .order_by(e.c.event_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [PendingEvent(*row) for row in _scoped(conn, tenant).execute(stmt).all()]


def count_attempt(engine: Engine, tenant: Tenant, events: Iterable[PendingEvent]) -> None:
    """One more refresh takes these events (committed before its calls, so a crash counts too)."""
    e = webhook_events
    ids = [ev.event_id for ev in events]
    with engine.begin() as conn:
        _scoped(conn, tenant).execute(e.update().where(e.c.event_id.in_(ids)).values(attempts=e.c.attempts + 1))


def mark_failed(engine: Engine, tenant: Tenant, events: Iterable[PendingEvent], reason: str, run_id: str) -> int:
    """Settle ``events`` as failed: a refresh met an error retrying cannot heal (settings, key, quota)."""
    e = webhook_events
    stmt = (
        e.update()
        .where(e.c.event_id.in_([ev.event_id for ev in events]), e.c.state == "pending")
        .values(state="failed", reason=reason, run_id=run_id, processed_at=sa.func.now())
    )
    with engine.begin() as conn:
        return _scoped(conn, tenant).execute(stmt).rowcount


def refreshed_partitions(engine: Engine, tenant: Tenant, run_id: str) -> list[str]:
    """The journeys partitions a refresh run left to rebuild (its events' ``partitions``)."""
    e = webhook_events
    key = sa.func.unnest(e.c.partitions)
    stmt = sa.select(key).where(e.c.run_id == run_id).distinct()
    with engine.connect() as conn:
        return sorted(_scoped(conn, tenant).execute(stmt).scalars())


def _customer_summary(opportunity: Mapping[str, Any]) -> dict[str, Any]:
    """The opportunity as the customers list summarizes it: what the next cycle's list will show."""
    return {
        "id": str(opportunity.get("id")),
        "quoteNumber": opportunity.get("quoteNumber"),
        "status": opportunity.get("status"),
        "jobs": [
            {"id": j.get("id"), "jobNumber": j.get("jobNumber"), "serviceDate": j.get("jobDate"), "type": j.get("type")}
            for j in opportunity.get("jobs") or []
            if isinstance(j, dict)
        ],
    }


def _customer_id(detail: Mapping[str, Any], stored: str | None) -> str | None:
    try:
        return read_id(detail.get("customer"), "customer.id")
    except UnreadableValue:
        return stored


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


class RefreshWriter:
    """The changes of one refresh, in the caller's transaction."""

    def __init__(self, conn: Connection, tenant: Tenant, now: dt.datetime, run_id: str) -> None:
        self.conn = _scoped(conn, tenant)
        self.tenant = tenant
        self.now = now
        self.run_id = run_id
        self.outcome = RefreshOutcome()
        self._branches = tenant.branch_by_smartmoving_name()
        # The last date the cycle pulls now. Rows on a later date would hold a moved job's journey on its old
        # date (the merge keeps a job some newer raw row files elsewhere until that partition is built, and
        # nothing builds it before its date is in the window): a later date is the cycle's to pull when it comes.
        self.horizon = max(tenant.sync_window(now))

    def apply(self, opportunity_ids: Collection[str], details: Mapping[str, dict[str, Any]]) -> RefreshOutcome:
        ids = sorted(set(opportunity_ids))
        journeys_before = self._journeys_of(ids)
        customers_before = self._customers_of(ids)
        for oid in ids:
            before = journeys_before.get(oid, [])
            detail = details.get(oid)
            self._delete_raw({oid, str(detail.get("id", oid))} if detail else {oid})
            if detail is None:
                self.outcome.gone.add(oid)
                self.outcome.notes[oid] = "gone: SmartMoving answers 400 for it (deleted)"
                self._write_departures(oid, before, None)
                touched = {(day, location) for day, location, _ in before}
            else:
                touched = self._write_opportunity(oid, detail, customers_before.get(oid)) | {
                    (day, location) for day, location, _ in before
                }
                self._write_departures(oid, before, detail)
            self.outcome.rebuild[oid] = {
                str(journey_partition_key(day.isoformat(), location))
                for day, location in touched
                if location is not None and self._in_window(location, day)
            }
            if touched and not self.outcome.rebuild[oid] and oid not in self.outcome.notes:
                self.outcome.notes[oid] = (
                    "its dates are outside the window: raw tables updated, journeys left to the cycle"
                )
        return self.outcome

    def _in_window(self, location_id: str, day: dt.date) -> bool:
        branch = next((b for b in self.tenant.branches if b.location_id == location_id), None)
        return branch is not None and day in branch.window(self.now)

    def _journeys_of(self, ids: list[str]) -> dict[str, list[tuple[dt.date, str | None, str]]]:
        opportunity = journeys.c.external_ids["smartmoving_opportunity_id"].astext
        stmt = sa.select(
            opportunity, journeys.c.service_date, journeys.c.location_id, journeys.c.smartmoving_job_id
        ).where(opportunity.in_(ids))
        found: dict[str, list[tuple[dt.date, str | None, str]]] = defaultdict(list)
        for oid, day, location, job_id in self.conn.execute(stmt):
            found[oid].append((day, location, job_id))
        return found

    def _customers_of(self, ids: list[str]) -> dict[str, str]:
        stmt = sa.select(raw_opportunities.c.opportunity_id, raw_opportunities.c.customer_id).where(
            raw_opportunities.c.opportunity_id.in_(ids)
        )
        return dict(self.conn.execute(stmt).all())

    def _delete_raw(self, oids: Collection[str]) -> None:
        for table in (raw_opportunities, raw_jobs):
            self.conn.execute(
                table.delete().where(table.c.opportunity_id.in_(list(oids)), table.c.service_date <= self.horizon)
            )

    def _write_opportunity(
        self, oid: str, detail: dict[str, Any], stored_customer: str | None
    ) -> set[tuple[dt.date, str | None]]:
        """Its raw rows on every date it has work on; returns the (date, branch) of its dated jobs."""
        customer_id = _customer_id(detail, stored_customer)
        dates = sorted(d for d in opportunity_dates(detail) if self.tenant.first_service_date <= d <= self.horizon)
        filed_on = dates or [self.tenant.today(self.now)]  # undated work is kept too (unscheduled_jobs)
        summary = _customer_summary(detail)
        if customer_id is not None:
            self._patch_customer(customer_id, detail, summary, filed_on)
        summaries = {oid: OpportunitySummary(oid, customer_id or "", summary_hash(summary))}
        opportunities = opportunities_frame({oid: detail}, summaries, {oid: self.now}, filed_on, self.run_id)
        jobs = pd.concat([jobs_frame(opportunities, day, self.run_id) for day in filed_on], ignore_index=True)
        for table, frame in ((raw_opportunities, opportunities), (raw_jobs, jobs)):
            if len(frame):
                self.conn.execute(table.insert(), _records(frame))
                self.outcome.raw_rows += len(frame)
        account = jobs_account(opportunities, jobs, dates)
        self.outcome.jobs_served += account.served
        u = unreadable_records
        job_ids = [str(j.get("id")) for j in detail.get("jobs") or [] if isinstance(j, dict)]
        # What an earlier pull quarantined of this opportunity's jobs: read again now, whatever it became.
        self.conn.execute(
            u.delete().where(
                u.c.record_kind == "job",
                u.c.service_date <= self.horizon,
                sa.or_(u.c.record_key.in_(job_ids), u.c.record_key.like(f"{oid}#%")),
            )
        )
        unreadable = account.unreadable
        if unreadable:
            rows = _records(unreadable_frame(unreadable, self.now, self.run_id))
            stmt = insert(unreadable_records)
            self.conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["record_kind", "service_date", "record_key"],
                    set_={c: stmt.excluded[c] for c in ("reason", "payload", "fetched_at", "run_id")},
                ),
                rows,
            )
            self.outcome.jobs_unreadable += len(unreadable)
        branch = detail.get("branch")
        branch_name = clean_text(branch.get("name")) if isinstance(branch, dict) else None
        mapped = self._branches.get(branch_name) if branch_name else None
        location = mapped.location_id if mapped is not None else None
        return {(day, location) for day in jobs["service_date"]}

    def _patch_customer(
        self, customer_id: str, detail: Mapping[str, Any], summary: dict[str, Any], dates: Iterable[dt.date]
    ) -> None:
        """The customer's rows list the opportunity as it is now, on its dates too: journeys take the listed
        status and the contacts from the list's customer."""
        c = raw_customers
        rows = {
            row.service_date: row.payload
            for row in self.conn.execute(sa.select(c.c.service_date, c.c.payload).where(c.c.customer_id == customer_id))
        }
        latest = rows[max(rows)] if rows else {**dict(detail.get("customer") or {}), "opportunities": []}
        for day in sorted(set(rows) | set(dates)):
            payload = dict(rows.get(day) or latest)
            listed = [
                o
                for o in payload.get("opportunities") or []
                if not (isinstance(o, dict) and str(o.get("id")) == summary["id"])
            ]
            payload["opportunities"] = [*listed, summary]
            values = {"payload": payload, "fetched_at": self.now, "run_id": self.run_id}
            if day in rows:
                self.conn.execute(
                    c.update().where(c.c.service_date == day, c.c.customer_id == customer_id).values(**values)
                )
            else:
                self.conn.execute(
                    c.insert().values(service_date=day, customer_id=customer_id, name=payload.get("name"), **values)
                )

    def _write_departures(
        self, oid: str, before: list[tuple[dt.date, str | None, str]], detail: Mapping[str, Any] | None
    ) -> None:
        """Why each of its journeys leaves its date, for the audit row the journeys merge writes."""
        rows = []
        for day, _, job_id in before:
            why = departure_reason(job_id, detail, {day})
            if why is not None:
                rows.append(
                    {
                        "service_date": day,
                        "job_id": job_id,
                        "opportunity_id": oid,
                        "reason": why[0],
                        "new_service_date": why[1],
                        "fetched_at": self.now,
                        "run_id": self.run_id,
                    }
                )
        if rows:
            stmt = insert(raw_job_departures)
            self.conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["service_date", "job_id"],
                    set_={
                        c: stmt.excluded[c]
                        for c in ("opportunity_id", "reason", "new_service_date", "fetched_at", "run_id")
                    },
                ),
                rows,
            )

    def settle(self, events: Iterable[PendingEvent], calls: Mapping[str, int], started_at: dt.datetime) -> None:
        """Mark the events done with this run and what it rebuilds; record the refresh in ``sync_runs``."""
        by_opportunity: dict[str, list[int]] = defaultdict(list)
        for event in events:
            by_opportunity[event.opportunity_id].append(event.event_id)
        e = webhook_events
        for oid, event_ids in by_opportunity.items():
            done = self.conn.execute(
                e.update()
                .where(e.c.event_id.in_(event_ids), e.c.state == "pending")
                .values(
                    state="done",
                    run_id=self.run_id,
                    partitions=sorted(self.outcome.rebuild.get(oid, ())),
                    reason=self.outcome.notes.get(oid),
                    processed_at=self.now,
                )
            )
            self.outcome.events_done += done.rowcount
        self.conn.execute(
            sync_runs.insert().values(
                asset=REFRESH_ASSET,
                run_id=self.run_id,
                started_at=started_at,
                finished_at=sa.func.clock_timestamp(),
                rows_written=self.outcome.raw_rows,
                inserted=self.outcome.raw_rows,
                updated=0,
                deleted=0,
                quarantined=self.outcome.jobs_unreadable,
                api_calls=sum(calls.values()),
                api_calls_by_endpoint=dict(calls),
                status="success",
                # Jobs, as a pull counts its records: those of the details fetched, and those quarantined.
                served=self.outcome.jobs_served,
                unreadable=self.outcome.jobs_unreadable,
            )
        )


def apply_refresh(
    engine: Engine,
    tenant: Tenant,
    events: list[PendingEvent],
    details: Mapping[str, dict[str, Any]],
    *,
    calls: Mapping[str, int],
    started_at: dt.datetime,
    run_id: str,
    now: dt.datetime | None = None,
) -> RefreshOutcome:
    """Apply fetched ``details`` (an opportunity missing from it: SmartMoving answered 400) for ``events``."""
    now = now or dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        e = webhook_events
        # Taken by this refresh: a second one (there should be none) waits here, then finds them done.
        still_pending = set(
            _scoped(conn, tenant)
            .execute(
                sa.select(e.c.event_id)
                .where(
                    e.c.event_id.in_([ev.event_id for ev in events]),
                    e.c.state == "pending",
                    # A copy delivered after the fetch began may announce a later change: it waits for the next.
                    e.c.last_received_at <= started_at,
                )
                .with_for_update()
            )
            .scalars()
        )
        served = [ev for ev in events if ev.event_id in still_pending]
        writer = RefreshWriter(conn, tenant, now, run_id)
        # Every fetched opportunity is written, served or not: what was fetched is the newest there is.
        writer.apply({ev.opportunity_id for ev in events}, details)
        writer.settle(served, calls, started_at)
    return writer.outcome
