"""The database layout: one ``MetaData`` describing every table of a tenant schema.

Tables carry ``schema=None``; the tenant's schema is applied at execution time with
``schema_translate_map={None: tenant.schema}`` (see :func:`tenant_options`), so one definition
serves every tenant and no schema name is ever formatted into SQL by hand.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from lgm_pipeline.domain.mappings import CRM_PROGRESS_STAGES
from lgm_pipeline.tenants.config import Tenant

metadata = sa.MetaData()

_TS = sa.DateTime(timezone=True)


def _now() -> sa.TextClause:
    return sa.text("now()")


raw_customers = sa.Table(
    "raw_customers",
    metadata,
    sa.Column("service_date", sa.Date, primary_key=True),
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("fetched_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)

raw_opportunities = sa.Table(
    "raw_opportunities",
    metadata,
    sa.Column("service_date", sa.Date, primary_key=True),
    sa.Column("opportunity_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("summary_hash", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    # When the opportunity details were fetched from the API (the detail cache's age).
    sa.Column("fetched_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    # The detail cache looks opportunities up by id across dates.
    sa.Index("ix_raw_opportunities_opportunity_id", "opportunity_id"),
)

raw_jobs = sa.Table(
    "raw_jobs",
    metadata,
    sa.Column("service_date", sa.Date, primary_key=True),
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("opportunity_id", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("job_number", sa.Text, nullable=True),
    sa.Column("job_type", sa.Integer, nullable=True),
    sa.Column("confirmed", sa.Boolean, nullable=True),
    sa.Column("addresses", JSONB, nullable=False),
    sa.Column("estimated_charges", JSONB, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("fetched_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)

_MONEY = sa.Numeric(12, 2)
#: The first amount a money column cannot hold: a larger one would fail the whole partition's write, so the
#: transform leaves it out (the payload keeps it verbatim) and the migration's CHECK says the same.
MAX_MONEY = Decimal(10) ** (_MONEY.precision - _MONEY.scale)

journeys = sa.Table(
    "journeys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("location_id", sa.Text, nullable=False),
    sa.Column("service_date", sa.Date, nullable=False),
    # The synced stage (domain.mappings.STATUS_MAPPING); the CRM's field progress is journey_progress.
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("smartmoving_status", sa.Integer, nullable=True),
    sa.Column("smartmoving_status_name", sa.Text, nullable=True),
    sa.Column("job_number", sa.Text, nullable=True),
    sa.Column("quote_number", sa.Text, nullable=True),
    sa.Column("job_type", sa.Integer, nullable=True),
    sa.Column("job_type_name", sa.Text, nullable=True),
    sa.Column("needs_truck", sa.Boolean, nullable=True),
    sa.Column("opportunity_type", sa.Text, nullable=True),
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("customer_name", sa.Text, nullable=True),
    sa.Column("customer_phone", sa.Text, nullable=True),
    sa.Column("customer_phone_type", sa.Text, nullable=True),
    sa.Column("customer_email", sa.Text, nullable=True),
    sa.Column("pickup_address", sa.Text, nullable=True),
    sa.Column("dropoff_address", sa.Text, nullable=True),
    sa.Column("stop_addresses", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("addresses", JSONB, nullable=False),
    # This job's own estimate and actual charges before tax; the opportunity's totals (all its jobs,
    # tax included in opportunity_total) are repeated per job and must never be summed over jobs.
    sa.Column("estimated_cost", _MONEY, nullable=True),
    sa.Column("actual_cost", _MONEY, nullable=True),
    sa.Column("opportunity_subtotal", _MONEY, nullable=True),
    sa.Column("opportunity_tax", _MONEY, nullable=True),
    sa.Column("opportunity_total", _MONEY, nullable=True),
    sa.Column("currency", sa.Text, nullable=True),
    sa.Column("move_size", sa.Text, nullable=True),
    sa.Column("volume", sa.Numeric(12, 2), nullable=True),
    sa.Column("weight", sa.Numeric(12, 2), nullable=True),
    sa.Column("sales_assignee", sa.Text, nullable=True),
    sa.Column("confirmed", sa.Boolean, nullable=True),
    sa.Column("booked", sa.Boolean, nullable=False),
    sa.Column("branch_name", sa.Text, nullable=True),
    sa.Column("external_ids", JSONB, nullable=False),
    sa.Column("smartmoving_job_id", sa.Text, nullable=False),
    sa.Column("raw_payload", JSONB, nullable=False),
    sa.Column("dq_flags", JSONB, nullable=False),
    sa.Column("source_fetched_at", _TS, nullable=False),
    sa.Column("synced_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    # Every partition write and the CRM's day views filter on these two.
    sa.Index("ix_journeys_service_date_location_id", "service_date", "location_id"),
)

#: The CRM's own record of a journey's day (crew on the way, on site, done; finance's audit). Written
#: by the CRM (group role lgm-<key>-<db>-crm_writer), read by the board view, never written by the sync.
#: Migration 12's trigger (``migrations.PROGRESS_GUARD``) holds what a declaration cannot: the journey
#: exists when a row is recorded (no declared foreign key: the sync deletes a journey that leaves the
#: pulled dates and inserts it again with the same id, and its progress must outlive that), ``at`` is
#: not in the future, and ``by`` is the session's login.
journey_progress = sa.Table(
    "journey_progress",
    metadata,
    # Always generated: an id given by a writer would collide with the next generated one.
    sa.Column("progress_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("journey_id", sa.Text, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("at", _TS, nullable=False, server_default=_now()),
    # session_user, not current_user: SET ROLE to the CRM group would sign as the group.
    sa.Column("by", sa.Text, nullable=False, server_default=sa.text("session_user")),
    sa.Column("note", sa.Text, nullable=True),
    sa.CheckConstraint(
        "stage IN ({})".format(", ".join(f"'{s}'" for s in CRM_PROGRESS_STAGES)), name="ck_journey_progress_stage"
    ),
    sa.Index("ix_journey_progress_journey_id_at", "journey_id", "at"),
)

journeys_quarantine = sa.Table(
    "journeys_quarantine",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    # NULL: the job's SmartMoving branch is not in the tenants file.
    sa.Column("location_id", sa.Text, nullable=True),
    sa.Column("service_date", sa.Date, nullable=True),
    sa.Column("smartmoving_job_id", sa.Text, nullable=False),
    sa.Column("job_number", sa.Text, nullable=True),
    sa.Column("branch_name", sa.Text, nullable=True),
    # [{rule, column, check, value}, ...]
    sa.Column("reasons", JSONB, nullable=False),
    sa.Column("record", JSONB, nullable=False),
    sa.Column("raw_payload", JSONB, nullable=False),
    sa.Column("first_seen_at", _TS, nullable=False),
    sa.Column("last_seen_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Index("ix_journeys_quarantine_service_date_location_id", "service_date", "location_id"),
)


def _audit_table(name: str, key: str, *extra: sa.Column | sa.Index | sa.CheckConstraint) -> sa.Table:
    """One row per insert/update/delete of a merged row (``key``), with its run and partition."""
    return sa.Table(
        name,
        metadata,
        sa.Column("audit_id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column(key, sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("changed_columns", ARRAY(sa.Text), nullable=False),
        sa.Column("before", JSONB, nullable=True),
        sa.Column("after", JSONB, nullable=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("partition_key", sa.Text, nullable=True),
        sa.Column("at", _TS, nullable=False, server_default=_now()),
        sa.CheckConstraint("action IN ('insert', 'update', 'delete')", name=f"ck_{name}_action"),
        sa.Index(f"ix_{name}_{key}", key),
        *extra,
    )


#: Why a journey left its date: the values of ``journey_audit.reason`` (the delete row of a job no
#: pull files on a pulled date any more; NULL for any other audit row, or a departure no detail explains).
DEPARTURE_REASONS: tuple[str, ...] = ("rescheduled", "cancelled", "deleted")


def _departure_reason_check(table: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(
        "reason IN ({})".format(", ".join(f"'{r}'" for r in DEPARTURE_REASONS)), name=f"ck_{table}_reason"
    )


journey_audit = _audit_table(
    "journey_audit",
    "journey_id",
    sa.Column("reason", sa.Text, nullable=True),
    # A rescheduled job's new date, as its opportunity's details give it (NULL: no date yet, "TBD").
    sa.Column("new_service_date", sa.Date, nullable=True),
    _departure_reason_check("journey_audit"),
    # The view of jobs that left the board reads only these few rows of a table that only grows.
    sa.Index("ix_journey_audit_departures", "at", postgresql_where=sa.text("reason IS NOT NULL")),
)

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("asset", sa.Text, nullable=False),
    sa.Column("partition_key", sa.Text, nullable=True),
    sa.Column("service_date", sa.Date, nullable=True),
    sa.Column("location_id", sa.Text, nullable=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("started_at", _TS, nullable=False),
    sa.Column("finished_at", _TS, nullable=False),
    sa.Column("rows_written", sa.Integer, nullable=False),
    sa.Column("inserted", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("deleted", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("api_calls", sa.Integer, nullable=True),
    sa.Column("api_calls_by_endpoint", JSONB, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    # The partition's failed asset checks by severity (journeys; NULL for assets without checks).
    sa.Column("checks_warned", sa.Integer, nullable=True),
    sa.Column("checks_failed", sa.Integer, nullable=True),
    # A pull's records (first date's row, like api_calls): served by SmartMoving, and those quarantined
    # in unreadable_records; NULL for writes that pull nothing.
    sa.Column("served", sa.Integer, nullable=True),
    sa.Column("unreadable", sa.Integer, nullable=True),
    sa.Index("ix_sync_runs_asset_date_location", "asset", "service_date", "location_id"),
)

company = sa.Table(
    "company",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("updated_at", _TS, nullable=False, server_default=_now()),
)

locations = sa.Table(
    "locations",
    metadata,
    sa.Column("location_id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("smartmoving_branch_name", sa.Text, nullable=False),
    # The branch's IANA time zone (tenants file): the day views compute each row's "today" on it.
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("updated_at", _TS, nullable=False, server_default=_now()),
)

#: Each configured zone's offsets from UTC, from the pipeline's bundled IANA data (``tenants.timezones``):
#: the day views take a branch's midnight from here, not from the server's own time-zone files, so
#: they agree with the sync window Python computes whatever IANA release the server has.
zone_offsets = sa.Table(
    "zone_offsets",
    metadata,
    sa.Column("zone", sa.Text, primary_key=True),
    # The offset holds from this instant to the zone's next row.
    sa.Column("valid_from", _TS, primary_key=True),
    sa.Column("utc_offset", sa.Interval, nullable=False),
)

#: Branch-bound reader logins (``lgm db grant-reader --location``) and the branches each may read.
#: Row-level security looks the session's login up here; only the schema owner writes it. A branch
#: leaving the tenants file takes its bindings with it, so its logins then read nothing.
branch_logins = sa.Table(
    "branch_logins",
    metadata,
    sa.Column("login", sa.Text, primary_key=True),
    sa.Column("location_id", sa.Text, sa.ForeignKey("locations.location_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("granted_at", _TS, nullable=False, server_default=_now()),
)

raw_leads = sa.Table(
    "raw_leads",
    metadata,
    # The lead's creation date in the tenant's timezone: the partition it belongs to.
    sa.Column("created_date", sa.Date, primary_key=True),
    sa.Column("lead_id", sa.Text, primary_key=True),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("fetched_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)

#: New SmartMoving leads for the CRM's sales follow-up; merged by id with audit, like journeys.
leads = sa.Table(
    "leads",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    # NULL when the lead names no branch (or one the tenants file does not map: flagged).
    sa.Column("location_id", sa.Text, nullable=True),
    sa.Column("created_date", sa.Date, nullable=False),
    sa.Column("created_at", _TS, nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("phone", sa.Text, nullable=True),
    sa.Column("phone_type", sa.Text, nullable=True),
    sa.Column("email", sa.Text, nullable=True),
    sa.Column("source", sa.Text, nullable=True),
    sa.Column("move_date", sa.Date, nullable=True),
    sa.Column("move_size", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=True),
    sa.Column("smartmoving_status", sa.Integer, nullable=True),
    sa.Column("converted_opportunity_id", sa.Text, nullable=True),
    # An earlier lead (last 30 days) with the same phone or email: the same household enquiring again.
    sa.Column("probable_duplicate_of", sa.Text, nullable=True),
    sa.Column("branch_name", sa.Text, nullable=True),
    sa.Column("smartmoving_lead_id", sa.Text, nullable=False),
    sa.Column("raw_payload", JSONB, nullable=False),
    sa.Column("dq_flags", JSONB, nullable=False),
    sa.Column("source_fetched_at", _TS, nullable=False),
    sa.Column("synced_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Index("ix_leads_created_date_location_id", "created_date", "location_id"),
)

leads_quarantine = sa.Table(
    "leads_quarantine",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("location_id", sa.Text, nullable=True),
    sa.Column("created_date", sa.Date, nullable=True),
    sa.Column("smartmoving_lead_id", sa.Text, nullable=False),
    sa.Column("branch_name", sa.Text, nullable=True),
    sa.Column("reasons", JSONB, nullable=False),
    sa.Column("record", JSONB, nullable=False),
    sa.Column("raw_payload", JSONB, nullable=False),
    sa.Column("first_seen_at", _TS, nullable=False),
    sa.Column("last_seen_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Index("ix_leads_quarantine_created_date", "created_date"),
)

lead_audit = _audit_table("lead_audit", "lead_id")

#: ``/opportunities/{id}/jobs`` of tomorrow's booked work: start and end times (the arrival window).
raw_job_timelines = sa.Table(
    "raw_job_timelines",
    metadata,
    sa.Column("service_date", sa.Date, primary_key=True),
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("opportunity_id", sa.Text, nullable=False),
    # startTimeUtc / endTimeUtc, parsed when written (NULL when not a timestamp; the payload keeps it).
    sa.Column("start_at", _TS, nullable=True),
    sa.Column("end_at", _TS, nullable=True),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("fetched_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)

#: Jobs that had a journey on a pulled date and that the pull files on none of its dates, with why
#: (from their opportunity's details, fetched for the purpose when the customers list no longer shows
#: it; ``deleted`` when SmartMoving answers 400 for it). Replaced per date by every pull, like the other
#: raw tables; the journeys merge copies the reason into the delete's audit row.
raw_job_departures = sa.Table(
    "raw_job_departures",
    metadata,
    # The date the job left: its journey's date.
    sa.Column("service_date", sa.Date, primary_key=True),
    sa.Column("job_id", sa.Text, primary_key=True),
    sa.Column("opportunity_id", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("new_service_date", sa.Date, nullable=True),
    # When the evidence was fetched: only a departure seen after the journey's own fetch explains it.
    sa.Column("fetched_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    _departure_reason_check("raw_job_departures"),
)

#: SmartMoving's branches (``/api/branches``) as last pulled: the dispatch address the board shows.
raw_branches = sa.Table(
    "raw_branches",
    metadata,
    sa.Column("branch_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("fetched_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)

#: Served records the pipeline could not read (no id, an unreadable date or enum...): kept raw, with a
#: reason naming the field and the value, under the pulled date they came with. Each pull replaces its
#: dates' rows of its kind, in the same transaction as its own rows: served = stored + these (+ the
#: records a pull sets aside, counted in ``sync_runs``).
unreadable_records = sa.Table(
    "unreadable_records",
    metadata,
    sa.Column("record_kind", sa.Text, primary_key=True),  # customer, opportunity, job, lead, branch
    sa.Column("service_date", sa.Date, primary_key=True),
    # Its id, or where it was served when it has none ("#3": the fourth record of the list).
    sa.Column("record_key", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("fetched_at", _TS, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)

#: What a webhook event is in the inbox: waiting for a refresh run, or settled by one (done; failed on an error
#: retrying cannot heal), or at receipt (ignored: nothing serves its kind; unreadable).
WEBHOOK_STATES = ("pending", "done", "ignored", "unreadable", "failed")

#: SmartMoving's webhook deliveries, the inbox: each is committed here before the receiver answers 2xx,
#: then served by a targeted refresh run (``assets/webhooks.py``) that records its run id and outcome.
webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("event_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("received_at", _TS, nullable=False, server_default=_now()),
    # The latest delivery of the same body while it waited: a refresh that fetched before it serves it not.
    sa.Column("last_received_at", _TS, nullable=False, server_default=_now()),
    # SHA-256 of the body as delivered: a redelivery while the first copy waits is stored once.
    sa.Column("delivery_hash", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=True),
    sa.Column("opportunity_id", sa.Text, nullable=True),
    sa.Column("customer_id", sa.Text, nullable=True),
    # The body as delivered (a JSON value; not necessarily an object).
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("state", sa.Text, nullable=False, server_default="pending"),
    # Why an event was ignored, unreadable (naming the field and value) or failed.
    sa.Column("reason", sa.Text, nullable=True),
    # The refresh run that served it, and the journeys partitions that run changed.
    sa.Column("run_id", sa.Text, nullable=True),
    sa.Column("partitions", ARRAY(sa.Text), nullable=True),
    sa.Column("processed_at", _TS, nullable=True),
    # Refreshes that took it and failed: after a few, it is settled failed (the cycle reconciles it).
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint(
        "state IN (" + ", ".join(f"'{s}'" for s in WEBHOOK_STATES) + ")", name="ck_webhook_events_state"
    ),
    sa.Index(
        "ux_webhook_events_pending_delivery",
        "delivery_hash",
        unique=True,
        postgresql_where=sa.text("state = 'pending'"),
    ),
    sa.Index("ix_webhook_events_state", "state", "event_id"),
)

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", _TS, nullable=False, server_default=_now()),
)

#: Asset name (last element of the asset key) -> the table the IO manager stores it in.
ASSET_TABLES: dict[str, sa.Table] = {
    "smartmoving_customers": raw_customers,
    "smartmoving_opportunities": raw_opportunities,
    "smartmoving_job_departures": raw_job_departures,
    "smartmoving_jobs": raw_jobs,
    "journeys": journeys,
    "smartmoving_branches": raw_branches,
    "smartmoving_arrival_windows": raw_job_timelines,
    "smartmoving_leads": raw_leads,
    "leads": leads,
}

#: Tables with one row per source record and date; pruned by retention, never merged.
RAW_TABLES: tuple[sa.Table, ...] = (
    raw_customers,
    raw_opportunities,
    raw_jobs,
    raw_job_timelines,
    raw_leads,
    raw_job_departures,
    unreadable_records,
)

#: Journey-level tables the CRM filters by branch (row-level security applies to these).
BRANCH_SCOPED_TABLES: tuple[sa.Table, ...] = (journeys, journeys_quarantine, leads, leads_quarantine)

#: Date-partitioned tables whose partition date is not ``service_date`` (leads: their creation date).
_PARTITION_DATE_COLUMNS = {t.name: "created_date" for t in (raw_leads, leads, leads_quarantine)}


def date_column(table: sa.Table) -> str:
    """The column a daily partition key selects in ``table``."""
    return _PARTITION_DATE_COLUMNS.get(table.name, "service_date")


def tenant_options(tenant: Tenant) -> dict[str, object]:
    """Execution options that place the schema-less tables in the tenant's schema."""
    return {"schema_translate_map": {None: tenant.schema}}
