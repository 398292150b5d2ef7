"""``PostgresResource``: the database as a Dagster resource, and the queries assets need.

Its one field is a nested resource, :class:`PostgresDatabase`, holding the server's URL: the definitions
bind it to ``dg.EnvVar("LGM_DATABASE_URL")``, which Dagster resolves when a run starts and shows by name
only. Nested, it is no part of any run config: a launch cannot point a run at another server, or name
another variable for the URL (issue 25).

Migrations are a step of their own, before any run (``lgm db migrate``, the start-up of ``lgm up``,
``lgm serve`` and ``lgm sync``): a run only checks, once per process and tenant, that the schema is at the
code's version, and fails at once with one line when it is behind.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.dialects.postgresql import JSONB, distinct_on
from sqlalchemy.engine import Engine

from lgm_pipeline.naming import CONFIGURATION_ERROR, STOP_CYCLE
from lgm_pipeline.settings import DATABASE_URL_ENV
from lgm_pipeline.storage import database
from lgm_pipeline.storage.access import quote_ident
from lgm_pipeline.storage.migrations import SCHEMA_VERSION, migrate, schema_version
from lgm_pipeline.storage.tables import (
    RAW_TABLES,
    date_column,
    journeys,
    leads,
    leads_quarantine,
    raw_opportunities,
    sync_runs,
    tenant_options,
    unreadable_records,
    webhook_events,
)
from lgm_pipeline.tenants.config import Tenant

# (database URL, tenant schema) pairs this process found at the code's version (or migrated itself).
_checked: set[tuple[str, str]] = set()
_checked_lock = threading.Lock()


class DatabaseNotReadyError(dg.Failure):
    """The database cannot serve a run as deployed: its URL is unset, or a tenant's schema is behind the code.

    A ``dg.Failure`` whose description is one line: the step fails at once, without retries, and stops the
    cycle as a configuration error (``lgm sync`` exits 2); no retry can heal it, an operator must act.
    """

    def __init__(self, description: str) -> None:
        super().__init__(
            description=description, allow_retries=False, metadata={STOP_CYCLE: True, CONFIGURATION_ERROR: True}
        )

    def __reduce__(self) -> tuple[type[DatabaseNotReadyError], tuple[str]]:
        return (type(self), (self.description or "",))


class PostgresDatabase(dg.ConfigurableResource):
    """Where the tenant databases are: the server's URL (it may hold a password).

    Bound in code, never run config: the definitions pass ``dg.EnvVar(LGM_DATABASE_URL)`` (see
    ``definitions.postgres_resource``); empty, every use fails with one line naming the variable.
    """

    url: str = Field(default="", description="SQLAlchemy URL of the PostgreSQL database, from LGM_DATABASE_URL")

    @classmethod
    def from_settings(cls) -> PostgresDatabase:
        """Outside Dagster (the CLI, tests): ``LGM_DATABASE_URL``, or the embedded server, resolved once now."""
        return cls(url=database.database_url())


@dataclass(frozen=True)
class CachedDetail:
    """The newest stored details of an opportunity (any service date)."""

    summary_hash: str
    fetched_at: dt.datetime
    payload: dict[str, Any]
    service_date: dt.date
    customer_id: str


@dataclass(frozen=True)
class JourneyJob:
    """A stored journey's SmartMoving job, where it is now and which opportunity it belongs to."""

    service_date: dt.date
    job_id: str
    opportunity_id: str


class PostgresResource(dg.ConfigurableResource):
    """The tenant databases, at :attr:`database`. ``PostgresResource()`` alone (the CLI, tests) takes the URL
    from the settings once, at construction; the definitions bind ``dg.EnvVar`` instead."""

    database: PostgresDatabase

    def __init__(self, database: PostgresDatabase | None = None, **kwargs: Any) -> None:
        super().__init__(database=database if database is not None else PostgresDatabase.from_settings(), **kwargs)

    @property
    def database_url(self) -> str:
        url = self.database.url
        if not url:
            raise DatabaseNotReadyError(
                f"{DATABASE_URL_ENV} is not set where this run started: set it to the database's URL "
                "(postgresql://user:password@host:5432/lgm) for the code server and its runs"
            )
        return url

    def engine(self) -> Engine:
        return database.shared_engine(self.database_url)

    def migrate(self, tenant: Tenant) -> list[int]:
        """Apply the tenant's pending migrations and sync its config rows and views; returns the versions applied.

        A step of its own, before runs (``lgm db migrate``, the CLI's start-up, test fixtures), never a run's."""
        url = self.database_url
        applied = migrate(database.shared_engine(url), tenant)
        with _checked_lock:
            _checked.add((url, tenant.schema))
        return applied

    def ensure_tenant(self, tenant: Tenant) -> Engine:
        """The engine, once the tenant's schema is known to be at the code's version (checked once per process).

        Never migrates: a schema behind the code fails at once with one line saying what to run."""
        url = self.database_url
        engine = database.shared_engine(url)
        if (url, tenant.schema) in _checked:
            return engine
        try:
            found = schema_version(engine, tenant)
        except sa.exc.OperationalError as error:
            raise database.unavailable(url, error.orig or error) from None
        if found < SCHEMA_VERSION:
            raise DatabaseNotReadyError(
                f"database schema of tenant {tenant.key} is at version {found}, the code needs {SCHEMA_VERSION}: "
                "run `lgm db migrate`"
            )
        with _checked_lock:
            _checked.add((url, tenant.schema))
        return engine

    def row_count(self, tenant: Tenant, table: sa.Table) -> int:
        stmt = sa.select(sa.func.count()).select_from(table)
        with self.ensure_tenant(tenant).connect() as conn:
            return int(conn.execution_options(**tenant_options(tenant)).execute(stmt).scalar_one())

    def cached_opportunity_details(self, tenant: Tenant, ids: Iterable[str]) -> dict[str, CachedDetail]:
        """For each known id, the most recently fetched details across all service dates."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        t = raw_opportunities
        stmt = (
            sa.select(
                t.c.opportunity_id, t.c.summary_hash, t.c.fetched_at, t.c.payload, t.c.service_date, t.c.customer_id
            )
            .where(t.c.opportunity_id.in_(wanted))
            .ext(distinct_on(t.c.opportunity_id))
            .order_by(t.c.opportunity_id, t.c.fetched_at.desc(), t.c.service_date.desc())
        )
        with self.ensure_tenant(tenant).connect() as conn:
            rows = conn.execution_options(**tenant_options(tenant)).execute(stmt).all()
        return {
            r.opportunity_id: CachedDetail(r.summary_hash, r.fetched_at, r.payload, r.service_date, r.customer_id)
            for r in rows
        }

    def opportunity_ids_with_jobs_on(self, tenant: Tenant, dates: Iterable[dt.date], since: dt.date) -> set[str]:
        """Opportunities stored since ``since`` whose details have a job dated on one of ``dates``.

        Why: read as "opportunities whose first day is in the range", the customers list misses the
        later days of a multi-day move; the details pulled for its first day name them.
        """
        wanted = sorted({f"{d:%Y%m%d}" for d in dates})
        if not wanted:
            return set()
        t = raw_opportunities
        jobs = (
            sa.func.jsonb_array_elements(
                sa.case(
                    (sa.func.jsonb_typeof(t.c.payload["jobs"]) == "array", t.c.payload["jobs"]),
                    else_=sa.text("'[]'::jsonb"),
                )
            )
            .table_valued(sa.column("value", JSONB))
            .alias("job")
        )
        has_job = (
            sa.select(sa.literal(1))
            .select_from(jobs)
            .where(
                sa.func.jsonb_typeof(jobs.c.value) == "object",
                jobs.c.value["jobDate"].astext.in_(wanted),
            )
            .exists()
        )
        stmt = sa.select(t.c.opportunity_id).distinct().where(t.c.service_date >= since, has_job)
        with self.ensure_tenant(tenant).connect() as conn:
            return set(conn.execution_options(**tenant_options(tenant)).execute(stmt).scalars())

    def journey_jobs_on(self, tenant: Tenant, dates: Iterable[dt.date]) -> list[JourneyJob]:
        """The jobs of the journeys stored on ``dates`` (any branch), with their opportunities."""
        opportunity = journeys.c.external_ids["smartmoving_opportunity_id"].astext
        stmt = (
            sa.select(journeys.c.service_date, journeys.c.smartmoving_job_id, opportunity)
            .where(journeys.c.service_date.in_(sorted(set(dates))), opportunity.is_not(None))
            .order_by(journeys.c.service_date, journeys.c.smartmoving_job_id)
        )
        with self.ensure_tenant(tenant).connect() as conn:
            rows = conn.execution_options(**tenant_options(tenant)).execute(stmt).all()
        return [JourneyJob(*row) for row in rows]

    def existing_journey_ids(self, tenant: Tenant, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are journeys already (in any partition)."""
        wanted = sorted(set(ids))
        if not wanted:
            return set()
        with self.ensure_tenant(tenant).connect() as conn:
            stmt = sa.select(journeys.c.id).where(journeys.c.id.in_(wanted))
            return set(conn.execution_options(**tenant_options(tenant)).execute(stmt).scalars())

    def journey_counts(self, tenant: Tenant, location_id: str, days: Iterable[dt.date]) -> dict[dt.date, int]:
        """Stored journeys of one branch on each of ``days`` (a day without any is absent)."""
        wanted = sorted(set(days))
        stmt = (
            sa.select(journeys.c.service_date, sa.func.count())
            .where(journeys.c.location_id == location_id, journeys.c.service_date.in_(wanted))
            .group_by(journeys.c.service_date)
        )
        with self.ensure_tenant(tenant).connect() as conn:
            rows = conn.execution_options(**tenant_options(tenant)).execute(stmt).all()
        return {day: int(n) for day, n in rows}

    def recent_lead_contacts(self, tenant: Tenant, since: dt.date, exclude: Iterable[str]) -> pd.DataFrame:
        """Stored leads created since ``since`` (``id, phone, email, created_at``), but the ``exclude`` ids."""
        skipped = sorted(set(exclude))
        stmt = sa.select(leads.c.id, leads.c.phone, leads.c.email, leads.c.created_at).where(
            leads.c.created_date >= since, leads.c.id.not_in(skipped)
        )
        with self.ensure_tenant(tenant).connect() as conn:
            rows = conn.execution_options(**tenant_options(tenant)).execute(stmt).all()
        return pd.DataFrame.from_records(rows, columns=["id", "phone", "email", "created_at"])

    def lead_counts(self, tenant: Tenant) -> dict[str, int]:
        """Leads created today (tenant time), open in ``leads_recent``, and held in quarantine."""
        today = sa.select(sa.func.count()).select_from(leads).where(leads.c.created_date == tenant.today())
        held = sa.select(sa.func.count()).select_from(leads_quarantine)
        with self.ensure_tenant(tenant).connect() as conn:
            scoped = conn.execution_options(**tenant_options(tenant))
            recent = f"{quote_ident(conn, tenant.schema)}.{quote_ident(conn, 'leads_recent')}"
            return {
                "today": int(scoped.execute(today).scalar_one()),
                "recent": int(conn.exec_driver_sql(f"SELECT count(*) FROM {recent}").scalar_one()),
                "quarantined": int(scoped.execute(held).scalar_one()),
            }

    def records_today(self, tenant: Tenant, since: dt.datetime) -> dict[str, int]:
        """Records SmartMoving served to pulls since ``since`` and how many were unreadable; and the
        records held in ``unreadable_records`` now (from ``since``'s date on), by kind."""
        served = sa.func.coalesce(sa.func.sum(sync_runs.c.served), 0)
        unreadable = sa.func.coalesce(sa.func.sum(sync_runs.c.unreadable), 0)
        pulled = sa.select(served, unreadable).where(sync_runs.c.started_at >= since)
        held = (
            sa.select(unreadable_records.c.record_kind, sa.func.count())
            .where(unreadable_records.c.service_date >= since.date())
            .group_by(unreadable_records.c.record_kind)
        )
        with self.ensure_tenant(tenant).connect() as conn:
            scoped = conn.execution_options(**tenant_options(tenant))
            served, unreadable = scoped.execute(pulled).one()
            return {"served": int(served), "unreadable": int(unreadable)} | {
                f"held_{kind}": int(n) for kind, n in scoped.execute(held).all()
            }

    def calls_this_month(self, tenant: Tenant, today: dt.date) -> int:
        """SmartMoving calls recorded since the first of ``today``'s month (tenant time)."""
        start = dt.datetime.combine(today.replace(day=1), dt.time(), tzinfo=tenant.tz)
        stmt = sa.select(sa.func.coalesce(sa.func.sum(sync_runs.c.api_calls), 0)).where(sync_runs.c.started_at >= start)
        with self.ensure_tenant(tenant).connect() as conn:
            return int(conn.execution_options(**tenant_options(tenant)).execute(stmt).scalar_one())

    def prune_history(self, tenant: Tenant, keep_days: int, today: dt.date) -> dict[str, int]:
        """Delete raw rows of service dates before ``today - keep_days`` and older sync runs.

        ``journeys`` (the CRM's data) and the audit trail are never touched.
        """
        if keep_days < 0:
            raise ValueError("keep_days must be >= 0")
        cutoff = today - dt.timedelta(days=keep_days)
        cutoff_at = dt.datetime.combine(cutoff, dt.time(), tzinfo=tenant.tz)
        deleted: dict[str, int] = {}
        with self.ensure_tenant(tenant).begin() as conn:
            conn = conn.execution_options(**tenant_options(tenant))
            for table in RAW_TABLES:
                deleted[table.name] = conn.execute(table.delete().where(table.c[date_column(table)] < cutoff)).rowcount
            deleted[sync_runs.name] = conn.execute(
                sync_runs.delete().where(sync_runs.c.finished_at < cutoff_at)
            ).rowcount
            # Served webhook events go with the history; a pending one stays until it is served.
            deleted[webhook_events.name] = conn.execute(
                webhook_events.delete().where(
                    webhook_events.c.received_at < cutoff_at, webhook_events.c.state != "pending"
                )
            ).rowcount
        return deleted

    def latest_sync_status(self, tenant: Tenant) -> list[dict[str, Any]]:
        """The latest ``journeys`` write per (location_id, service_date), newest dates first."""
        s = sync_runs
        latest = (
            sa.select(
                s.c.location_id,
                s.c.service_date,
                s.c.partition_key,
                s.c.run_id,
                s.c.status,
                s.c.rows_written,
                s.c.inserted,
                s.c.updated,
                s.c.deleted,
                s.c.quarantined,
                s.c.checks_warned,
                s.c.checks_failed,
                s.c.api_calls,
                s.c.finished_at,
                (sa.func.now() - s.c.finished_at).label("age"),
            )
            .where(s.c.asset == journeys.name)
            .ext(distinct_on(s.c.location_id, s.c.service_date))
            .order_by(s.c.location_id, s.c.service_date, s.c.finished_at.desc(), s.c.id.desc())
            .subquery()
        )
        stmt = sa.select(latest).order_by(latest.c.service_date.desc(), latest.c.location_id)
        with self.ensure_tenant(tenant).connect() as conn:
            rows = conn.execution_options(**tenant_options(tenant)).execute(stmt).mappings().all()
        return [dict(r) for r in rows]
