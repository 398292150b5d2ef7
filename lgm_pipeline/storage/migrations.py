"""Versioned schema migrations per tenant, and the config-derived rows and views kept in step.

``migrate`` is the only place DDL runs. It takes a transaction-scoped advisory lock per tenant
schema, so processes starting together (Dagster run workers, the CLI) apply each migration once
and wait for one another; everything it does commits or rolls back together.

Migration 1 creates the tables from :data:`tables.metadata` as they are *now*. A later change
to the metadata therefore needs a migration that tolerates fresh databases, where migration 1
already produced the new shape (``ADD COLUMN IF NOT EXISTS``, ``create(checkfirst=True)``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.domain.mappings import FALLEN_THROUGH_STAGES, FINISHED_STAGES, STAGE_ORDER, STATUS_MAPPING
from lgm_pipeline.smartmoving.enums import OpportunityStatus
from lgm_pipeline.storage.access import (
    apply_access,
    apply_branch_access,
    apply_crm_access,
    branch_predicate,
    carry_legacy_groups,
    grant_branch_views,
    quote_ident,
    quote_literal,
)
from lgm_pipeline.storage.tables import (
    MAX_MONEY,
    branch_logins,
    company,
    journey_audit,
    journey_progress,
    journeys,
    lead_audit,
    leads,
    leads_quarantine,
    locations,
    metadata,
    raw_branches,
    raw_job_departures,
    raw_job_timelines,
    raw_leads,
    raw_opportunities,
    schema_migrations,
    sync_runs,
    tenant_options,
    unreadable_records,
    webhook_events,
    zone_offsets,
)
from lgm_pipeline.storage.zones import (
    EARLIEST_ZONE,
    LOCAL_DATE_FUNCTION,
    create_local_date_function,
    sync_zone_offsets,
)
from lgm_pipeline.tenants.config import Tenant

log = logging.getLogger(__name__)

#: Session setting that overrides "now" for the day views (tests, replays); empty = real clock.
CLOCK_SETTING = "lgm.clock"

#: SQLSTATE of "cannot drop/change columns of a view" from CREATE OR REPLACE VIEW.
INVALID_TABLE_DEFINITION = "42P16"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection, Tenant], object]  # a return value (e.g. views replaced) is ignored


def _create_tables(conn: Connection, tenant: Tenant) -> None:
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(conn, tenant.schema)}")
    metadata.create_all(conn.execution_options(**tenant_options(tenant)), checkfirst=False)


#: SQL twin of ``transform.raw.yyyymmdd_to_date``: a job's date as the pipeline reads it, or NULL.
#: The views and migration 4 must call a date what Python calls one, or an odd value would make a
#: job neither a journey nor unscheduled.
SERVICE_DATE_FUNCTION = "lgm_service_date"


def _create_functions(conn: Connection, tenant: Tenant) -> None:
    function = f"{quote_ident(conn, tenant.schema)}.{SERVICE_DATE_FUNCTION}"
    conn.exec_driver_sql(
        rf"""
        CREATE OR REPLACE FUNCTION {function}(value jsonb) RETURNS date
        LANGUAGE plpgsql IMMUTABLE AS $fn$
        DECLARE n numeric; t text;
        BEGIN
          t := btrim(value #>> '{{}}');
          IF jsonb_typeof(value) = 'string'
             AND t ~ '^\d{{4}}-\d{{2}}-\d{{2}}([T ][0-9:.]+(Z|[+-]\d{{2}}:?\d{{2}})?)?$' THEN
            -- An ISO date or date-time: its date as written (SmartMoving's dates are the branch's own).
            RETURN make_date(substr(t, 1, 4)::int, substr(t, 6, 2)::int, substr(t, 9, 2)::int);
          END IF;
          IF jsonb_typeof(value) = 'number' AND (value #>> '{{}}')::numeric = trunc((value #>> '{{}}')::numeric) THEN
            n := (value #>> '{{}}')::numeric;
          ELSIF jsonb_typeof(value) = 'string' AND t ~ '^[0-9]{{8}}$' THEN
            n := t::numeric;
          ELSE
            RETURN NULL;
          END IF;
          t := n::text;
          IF n <= 0 OR length(t) <> 8 THEN
            RETURN NULL;
          END IF;
          RETURN make_date(substr(t, 1, 4)::int, substr(t, 5, 2)::int, substr(t, 7, 2)::int);
        EXCEPTION WHEN others THEN
          RETURN NULL;
        END
        $fn$
        """
    )
    create_local_date_function(conn, tenant)


def booked_status_keys() -> list[str]:
    """A booked status as the payload may send it: its code, or its name normalised like
    ``smartmoving.shapes.read_enum`` does (lower case, letters and digits only)."""
    keys = {str(code) for code, mapping in STATUS_MAPPING.items() if mapping.booked}
    for name, code in OpportunityStatus.__members__.items():
        if str(int(code)) in keys:
            keys.add(re.sub(r"[^a-z0-9]", "", name.lower()))
    return sorted(keys)


def _status_key(payload: str) -> str:
    return f"lower(regexp_replace(btrim({payload} ->> 'status'), '[^a-zA-Z0-9]', '', 'g'))"


def _in_list(conn: Connection, stages: Iterable[str]) -> str:
    return "(" + ", ".join(quote_literal(conn, str(s)) for s in sorted(stages)) + ")"


def _stage_rank(conn: Connection, expression: str) -> str:
    whens = " ".join(f"WHEN {quote_literal(conn, str(s))} THEN {rank}" for s, rank in STAGE_ORDER.items())
    return f"(CASE {expression} {whens} ELSE 0 END)"


def today_sql(conn: Connection, tenant: Tenant, zone: str) -> str:
    """SQL for today's date on the clock of ``zone`` (SQL: a literal or a column), ``lgm.clock`` or now().

    The date comes from the tenant's ``zone_offsets`` (the pipeline's bundled IANA data), not from
    ``AT TIME ZONE``: the server's own data may be another release than the one Python's window uses.
    """
    setting = f"current_setting({quote_literal(conn, CLOCK_SETTING)}, true)"
    # CASE, not coalesce(nullif(...)): row-level security lets a filter into an index scan only when
    # PostgreSQL can tell it leaks nothing, and it gives up on COALESCE and NULLIF (every CRM login
    # then read the day views by a seq scan of all journeys). The date function passes: it is given
    # no column of the filtered table.
    clock = f"(CASE WHEN {setting} <> '' THEN {setting}::timestamptz ELSE now() END)"
    return f"{quote_ident(conn, tenant.schema)}.{LOCAL_DATE_FUNCTION}({zone}, {clock})"


def _view_statements(conn: Connection, tenant: Tenant) -> dict[str, str]:
    """The CRM's views, with the tenant's timezone and the mapping table's stages written in.

    ``journeys_board`` is every journey with the CRM's latest field progress, the stage to show and
    the branch's dispatch address; the day views read it and list booked, not fallen-through work.
    "Today" is each row's branch's (``locations.timezone``), so the day views are driven by
    ``locations``: per branch, an index scan of its journeys of its own date (from today on: one
    index range from the earliest today on Earth, joined to the branches). A journey whose branch
    left the tenants file (no ``locations`` row) falls out of the day views; the board keeps it.
    """
    schema = quote_ident(conn, tenant.schema)

    def table(t: sa.Table | str) -> str:
        return f"{schema}.{quote_ident(conn, t if isinstance(t, str) else t.name)}"

    columns = ", ".join(f"j.{quote_ident(conn, c.name)}" for c in journeys.columns)
    branch_today = today_sql(conn, tenant, "l.timezone")
    earliest_today = today_sql(conn, tenant, quote_literal(conn, EARLIEST_ZONE))
    fallen = _in_list(conn, FALLEN_THROUGH_STAGES)
    booked = _in_list(conn, (m.stage for m in STATUS_MAPPING.values() if m.booked))
    finished = _in_list(conn, FINISHED_STAGES)
    board = (
        f"SELECT {columns}, p.stage AS progress_stage, p.at AS progress_at, p.by AS progress_by, "
        f"CASE WHEN j.status IN {fallen} THEN j.status "
        f"WHEN {_stage_rank(conn, 'p.stage')} > {_stage_rank(conn, 'j.status')} THEN p.stage "
        f"ELSE j.status END AS board_stage, "
        f"l.name AS branch, b.payload -> 'dispatchLocation' ->> 'fullAddress' AS dispatch_address, "
        f"w.start_at AS arrival_window_start, w.end_at AS arrival_window_end "
        f"FROM {table(journeys)} j "
        f"LEFT JOIN LATERAL (SELECT x.stage, x.at, x.by FROM {table(journey_progress)} x "
        f"WHERE x.journey_id = j.id ORDER BY x.at DESC, x.progress_id DESC LIMIT 1) p ON true "
        f"LEFT JOIN {table(locations)} l ON l.location_id = j.location_id "
        f"LEFT JOIN LATERAL (SELECT y.payload FROM {table(raw_branches)} y "
        f"WHERE btrim(y.name) = l.smartmoving_branch_name ORDER BY y.fetched_at DESC LIMIT 1) b ON true "
        f"LEFT JOIN LATERAL (SELECT z.start_at, z.end_at FROM {table(raw_job_timelines)} z "
        f"WHERE z.job_id = j.smartmoving_job_id AND z.service_date = j.service_date "
        f"ORDER BY z.fetched_at DESC LIMIT 1) w ON true"
    )
    board_view = table("journeys_board")
    # A booked opportunity's job without a date (a storage delivery "to be decided") is no journey yet:
    # it is listed here, from the latest pull of its opportunity, until SmartMoving dates it.
    unscheduled = (
        "SELECT o.opportunity_id, o.payload ->> 'quoteNumber' AS quote_number, "
        "l.location_id, btrim(o.payload -> 'branch' ->> 'name') AS branch_name, "
        "o.payload -> 'customer' ->> 'name' AS customer_name, "
        "(o.payload ->> 'status') AS smartmoving_status, "
        "job ->> 'id' AS smartmoving_job_id, job ->> 'jobNumber' AS job_number, "
        "job ->> 'type' AS job_type, job -> 'jobAddresses' AS addresses, "
        "o.service_date AS opportunity_service_date, o.fetched_at "
        f"FROM (SELECT DISTINCT ON (r.opportunity_id) r.* FROM {table(raw_opportunities)} r "
        "ORDER BY r.opportunity_id, r.fetched_at DESC, r.service_date DESC) o "
        "CROSS JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(o.payload -> 'jobs') "
        "WHEN 'array' THEN o.payload -> 'jobs' ELSE '[]'::jsonb END) job "
        f"LEFT JOIN {table(locations)} l ON l.smartmoving_branch_name = btrim(o.payload -> 'branch' ->> 'name') "
        "WHERE jsonb_typeof(job) = 'object' "
        # No date at all: not yet scheduled. A date present but unreadable is no "to be decided": that
        # job is quarantined in unreadable_records by the pull.
        "AND coalesce(jsonb_typeof(job -> 'jobDate'), 'null') IN ('null', 'string') "
        f"AND coalesce(btrim(job ->> 'jobDate'), '') = '' "
        f"AND {_status_key('o.payload')} IN {_in_list(conn, booked_status_keys())}"
    )
    # Each branch's dates, then its journeys: the planner loops over the few branches with a
    # parameterized index scan of (service_date, location_id) instead of building the board for
    # every journey. MATERIALIZED keeps the dates plain columns: inlined, they are expressions over
    # locations' columns in functions that are not leakproof (lgm_local_date, date + 1), which
    # row-level security (every CRM login) keeps out of the journeys scan: a seq scan of them all.
    # b.* only: the day views keep the board's columns.
    by_branch = (
        f"WITH d AS MATERIALIZED (SELECT l.location_id, {branch_today} AS today, {branch_today} + 1 AS tomorrow "
        f"FROM {table(locations)} l) "
        f"SELECT b.* FROM d JOIN {board_view} b ON b.location_id = d.location_id AND b.service_date"
    )
    # "From today on" compares with a per-branch date the planner cannot estimate (it guessed a third
    # of the table and hashed a scan of every journey): the earliest today on Earth, implied by each
    # branch's, bounds the index range to the window's dates.
    from_today = f"{by_branch} >= d.today AND b.service_date >= {earliest_today}"
    # A lead naming no branch (or one no longer configured) is on the tenant's clock; the earliest
    # today bounds created_date's index scan the same way.
    lead_today = today_sql(conn, tenant, f"coalesce(l.timezone, {quote_literal(conn, tenant.timezone)})")
    # Jobs that left a branch's coming days with a known reason (rescheduled past the pulled dates,
    # cancelled, deleted), from the latest audit row of each: a job that came back (a later insert) or
    # left again unexplained is not listed. The delete's image holds the journey as it was.
    was = "a.before ->> "
    moved_out = (
        f"SELECT a.journey_id, {was}'smartmoving_job_id' AS smartmoving_job_id, {was}'job_number' AS job_number, "
        f"{was}'quote_number' AS quote_number, {was}'customer_name' AS customer_name, "
        f"{was}'customer_phone' AS customer_phone, l.location_id, l.name AS branch, "
        f"CAST({was}'service_date' AS date) AS old_service_date, a.new_service_date, a.reason, "
        f"a.at AS seen_at, a.run_id "
        f"FROM {table(journey_audit)} a JOIN {table(locations)} l ON l.location_id = {was}'location_id' "
        "WHERE a.reason IS NOT NULL "
        f"AND CAST({was}'service_date' AS date) >= {branch_today} "
        f"AND NOT EXISTS (SELECT 1 FROM {table(journey_audit)} b "
        "WHERE b.journey_id = a.journey_id AND b.audit_id > a.audit_id) "
        # The audit table has no branch column for the CRM's per-request filter: the image names it.
        f"AND {branch_predicate(conn, 'l.location_id')}"
    )
    definitions = {
        "journeys_board": board,
        "journeys_today": f"{by_branch} = d.today WHERE b.status IN {booked}",
        "journeys_tomorrow": f"{by_branch} = d.tomorrow WHERE b.status IN {booked}",
        "journeys_active": f"{from_today} WHERE b.board_stage NOT IN {finished}",
        "journeys_cancelled": f"{from_today} WHERE b.status IN {fallen}",
        "unscheduled_jobs": unscheduled,
        # The last 7 days' leads (each lead's branch's time) sales has not turned into an opportunity yet.
        "leads_recent": (
            f"SELECT r.* FROM {table(leads)} r LEFT JOIN {table(locations)} l ON l.location_id = r.location_id "
            f"WHERE r.created_date > {lead_today} - 7 "
            f"AND r.created_date > {earliest_today} - 7 "
            "AND r.converted_opportunity_id IS NULL"
        ),
        "journeys_moved_out": moved_out,
    }
    # security_invoker: the reader's own rights and row-level security apply through the view, not
    # the owner's (PostgreSQL >= 15).
    return {
        name: f"VIEW {table(name)} WITH (security_invoker = true) AS {select}" for name, select in definitions.items()
    }


def sync_views(conn: Connection, tenant: Tenant) -> list[str]:
    """(Re)create the views whose definition changed (timezone, stages, columns), in dependency order.

    Each view's comment holds a digest of the statement that made it, so an unchanged view is
    not replaced (replacing takes an exclusive lock that would queue behind CRM readers). A view
    whose columns changed cannot be replaced in place: it is dropped and created again.
    """
    replaced = []
    schema = quote_ident(conn, tenant.schema)
    _create_functions(conn, tenant)
    chain = hashlib.sha256()
    for name, statement in _view_statements(conn, tenant).items():
        qualified = f"{schema}.{quote_ident(conn, name)}"
        # Each digest covers the views before it too: a day view selects * from the board, and
        # PostgreSQL fixes that * when the view is made, so a new board column must remake it.
        chain.update(statement.encode())
        digest = "lgm:" + chain.hexdigest()
        current = conn.execute(
            sa.text("SELECT obj_description(to_regclass(:v), 'pg_class')"), {"v": qualified}
        ).scalar()
        if current == digest:
            continue
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(f"CREATE OR REPLACE {statement}")
        except sa.exc.DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != INVALID_TABLE_DEFINITION:
                raise
            # Columns renamed, removed or reordered: dependent views come later in this loop and
            # are recreated too (RESTRICT refuses to drop a view someone else built on ours).
            for dependent in reversed(list(_view_statements(conn, tenant))):
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {schema}.{quote_ident(conn, dependent)}")
                if dependent == name:
                    break
            conn.exec_driver_sql(f"CREATE {statement}")
        conn.exec_driver_sql(f"COMMENT ON VIEW {qualified} IS {quote_literal(conn, digest)}")
        replaced.append(name)
    if replaced:
        # Default privileges cover the tenant-wide groups; the branch group is granted by name.
        grant_branch_views(conn, tenant)
    return replaced


def _add_missing_columns(conn: Connection, tenant: Tenant, table: sa.Table) -> list[str]:
    """ALTER TABLE ADD COLUMN for every column of the metadata the database table lacks (nullable)."""
    present = set(
        conn.execute(
            sa.text("SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = :t"),
            {"s": tenant.schema, "t": table.name},
        ).scalars()
    )
    added = []
    for column in table.columns:
        if column.name in present:
            continue
        server_default = column.server_default
        default = f" DEFAULT {server_default.arg.text}" if server_default is not None else ""  # type: ignore[attr-defined]
        conn.exec_driver_sql(
            f"ALTER TABLE {quote_ident(conn, tenant.schema)}.{quote_ident(conn, table.name)} "
            f"ADD COLUMN {quote_ident(conn, column.name)} {column.type.compile(conn.dialect)}{default}"
        )
        added.append(column.name)
    return added


def _add_missing_checks_and_indexes(conn: Connection, tenant: Tenant, table: sa.Table) -> None:
    """The CHECK constraints and indexes of the metadata the database table lacks, as declared there."""
    qualified = f"{quote_ident(conn, tenant.schema)}.{quote_ident(conn, table.name)}"
    present = set(
        conn.execute(
            sa.text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"), {"t": qualified}
        ).scalars()
    )
    for constraint in table.constraints:
        if isinstance(constraint, sa.CheckConstraint) and constraint.name not in present:
            conn.exec_driver_sql(
                f"ALTER TABLE {qualified} ADD CONSTRAINT {quote_ident(conn, str(constraint.name))} "
                f"CHECK ({constraint.sqltext})"
            )
    scoped = conn.execution_options(**tenant_options(tenant))
    for index in table.indexes:
        index.create(scoped, checkfirst=True)


def _booked_work_only(conn: Connection, tenant: Tenant) -> None:
    """Migration 4: journeys are booked work; money per job; address roles; the CRM's progress table.

    Carries an existing database forward without losing anything: renamed columns keep their
    data; the money columns are recomputed from each row's own payload; stages are renamed by the
    mapping table; rows that were never booked work (leads, and jobs first seen cancelled or lost)
    leave ``journeys`` with a ``delete`` audit row holding the whole row.
    """
    schema = quote_ident(conn, tenant.schema)
    target = f"{schema}.{quote_ident(conn, journeys.name)}"
    for old, new in (("start_location", "pickup_address"), ("end_location", "dropoff_address")):
        conn.exec_driver_sql(
            f"""
            DO $$ BEGIN
              IF EXISTS (SELECT 1 FROM information_schema.columns
                         WHERE table_schema = {quote_literal(conn, tenant.schema)}
                           AND table_name = 'journeys' AND column_name = {quote_literal(conn, old)}) THEN
                ALTER TABLE {target} RENAME COLUMN {quote_ident(conn, old)} TO {quote_ident(conn, new)};
              END IF;
            END $$
            """
        )
    _add_missing_columns(conn, tenant, journeys)
    scoped = conn.execution_options(**tenant_options(tenant))
    for table in (journey_progress, raw_branches, raw_job_timelines):
        table.create(scoped, checkfirst=True)

    stage_by_status = " ".join(
        f"WHEN {code} THEN {quote_literal(conn, m.stage.value)}" for code, m in STATUS_MAPPING.items()
    )
    # As transform.journeys.as_money: an amount the column cannot hold is no amount (NULL), never a
    # failed migration; each charge and the sum are bounded like the pipeline's own.
    bound = f"{MAX_MONEY}"
    charges = (
        "(SELECT CASE WHEN abs(sum(a)) < " + bound + " THEN round(sum(a), 2) END FROM ("
        "SELECT (c ->> 'totalCost')::numeric AS a FROM jsonb_array_elements("
        "CASE jsonb_typeof(raw_payload -> 'job' -> {key}) WHEN 'array' THEN raw_payload -> 'job' -> {key} "
        "ELSE '[]'::jsonb END) c WHERE jsonb_typeof(c -> 'totalCost') = 'number') x WHERE abs(a) < " + bound + ")"
    )
    total = (
        "(SELECT CASE WHEN abs(v) < " + bound + " THEN round(v, 2) END FROM (SELECT CASE "
        "jsonb_typeof(raw_payload -> 'opportunity' -> 'estimatedTotal' -> {key}) WHEN 'number' "
        "THEN (raw_payload -> 'opportunity' -> 'estimatedTotal' ->> {key})::numeric END AS v) x)"
    )
    conn.exec_driver_sql(
        f"""
        UPDATE {target} SET
          status = coalesce(CASE smartmoving_status {stage_by_status} END, status),
          estimated_cost = {charges.format(key="'estimatedCharges'")},
          actual_cost = {charges.format(key="'actualCharges'")},
          opportunity_subtotal = {total.format(key="'subtotal'")},
          opportunity_tax = {total.format(key="'tax'")},
          opportunity_total = {total.format(key="'finalTotal'")},
          currency = coalesce(currency, {quote_literal(conn, tenant.currency)})
        """
    )
    _create_functions(conn, tenant)
    codes = [str(code) for code, m in STATUS_MAPPING.items() if m.creates_journey]
    creating, creating_text = ", ".join(codes), ", ".join(f"'{c}'" for c in codes)
    audit = f"{schema}.{quote_ident(conn, journey_audit.name)}"
    conn.exec_driver_sql(
        f"""
        WITH gone AS (
          DELETE FROM {target} j
          WHERE (
              coalesce(j.smartmoving_status NOT IN ({creating}), false)
              AND NOT EXISTS (
                SELECT 1 FROM {audit} a
                WHERE a.journey_id = j.id AND (a.before ->> 'smartmoving_status') IN ({creating_text})
              )
            )
            -- filed on its opportunity's date for want of its own: a phantom second journey
            OR (j.raw_payload -> 'job' IS NOT NULL
                AND {schema}.{SERVICE_DATE_FUNCTION}(j.raw_payload -> 'job' -> 'jobDate') IS NULL)
          RETURNING j.*
        )
        INSERT INTO {audit} (journey_id, action, changed_columns, before, after, run_id, partition_key)
        SELECT g.id, 'delete', '{{}}', to_jsonb(g) - 'raw_payload', NULL,
               'migration-4: not booked work, or no job date', NULL
        FROM gone g
        """
    )
    apply_crm_access(conn, tenant)


def _leads(conn: Connection, tenant: Tenant) -> None:
    """Migration 5: the leads tables, under the same grants and branch policy as journeys."""
    scoped = conn.execution_options(**tenant_options(tenant))
    for table in (raw_leads, leads, leads_quarantine, lead_audit):
        table.create(scoped, checkfirst=True)
    apply_crm_access(conn, tenant)  # grants on the new tables, the branch policy on leads too


def _branch_logins(conn: Connection, tenant: Tenant) -> None:
    """Migration 6: logins bound to branches by the owner's ``branch_logins``, not by a session setting."""
    branch_logins.create(conn.execution_options(**tenant_options(tenant)), checkfirst=True)
    apply_branch_access(conn, tenant)


def _branch_time_zones(conn: Connection, tenant: Tenant) -> None:
    """Migration 7: ``locations.timezone``, each branch's clock, which the day views read.

    A fresh database has the column already (migration 1 creates today's tables); an existing one
    gets it filled from the tenants file before it becomes NOT NULL. A row of a branch the file no
    longer has gets the tenant's timezone: ``sync_config_rows`` deletes it right after, but NOT NULL
    must hold first.
    """
    _add_missing_columns(conn, tenant, locations)
    scoped = conn.execution_options(**tenant_options(tenant))
    zones = {b.location_id: b.timezone for b in tenant.branches}
    zone = sa.case(zones, value=locations.c.location_id, else_=tenant.timezone) if zones else tenant.timezone
    scoped.execute(
        locations.update().where(locations.c.timezone.is_(None)).values(timezone=zone, updated_at=sa.func.now())
    )
    conn.exec_driver_sql(
        f"ALTER TABLE {quote_ident(conn, tenant.schema)}.{quote_ident(conn, locations.name)} "
        f"ALTER COLUMN {quote_ident(conn, locations.c.timezone.name)} SET NOT NULL"
    )


def _check_counts(conn: Connection, tenant: Tenant) -> None:
    """Migration 8: ``sync_runs.checks_warned`` / ``checks_failed``, which ``lgm status`` shows per branch."""
    _add_missing_columns(conn, tenant, sync_runs)


def _departure_reasons(conn: Connection, tenant: Tenant) -> None:
    """Migration 9: why a journey left its date: ``raw_job_departures`` and ``journey_audit.reason``.

    Existing audit rows keep every value: the new columns are NULL for them (a delete written before
    this change says no more than it did). A fresh database has it all from migration 1.
    """
    scoped = conn.execution_options(**tenant_options(tenant))
    raw_job_departures.create(scoped, checkfirst=True)
    _add_missing_columns(conn, tenant, journey_audit)
    _add_missing_checks_and_indexes(conn, tenant, journey_audit)


def _zone_offsets(conn: Connection, tenant: Tenant) -> None:
    """Migration 10: ``zone_offsets``, the bundled IANA data's offsets the day views take dates from.

    ``sync_config_rows`` fills it right after, and ``sync_views`` remakes the views on it (their
    statements changed). Every group reads it: it says nothing of any branch's rows.
    """
    zone_offsets.create(conn.execution_options(**tenant_options(tenant)), checkfirst=True)
    apply_crm_access(conn, tenant)
    apply_branch_access(conn, tenant)


def _unreadable_records(conn: Connection, tenant: Tenant) -> None:
    """Migration 11: ``unreadable_records`` and each pull's ``sync_runs.served`` / ``unreadable`` counts."""
    unreadable_records.create(conn.execution_options(**tenant_options(tenant)), checkfirst=True)
    _add_missing_columns(conn, tenant, sync_runs)


#: How far ahead of the server's clock a CRM device's ``journey_progress.at`` may be (clock skew).
PROGRESS_CLOCK_SKEW = "5 minutes"
#: The trigger (and its function) guarding ``journey_progress`` (see ``tables.journey_progress``).
PROGRESS_GUARD = "lgm_journey_progress_guard"


def _progress_guard(conn: Connection, tenant: Tenant) -> None:
    """``journey_progress``: id always generated, ``by`` the session's login, ``at`` not ahead, journey known.

    The trigger function is SECURITY DEFINER so it finds (and key-share locks, as a foreign key
    would) a journey of another branch too: which journeys a writer may record is the row-level
    policy's to say, not this check's.
    """
    schema = quote_ident(conn, tenant.schema)
    progress = f"{schema}.{quote_ident(conn, journey_progress.name)}"
    target = f"{schema}.{quote_ident(conn, journeys.name)}"
    function = f"{schema}.{PROGRESS_GUARD}"
    conn.exec_driver_sql(f"ALTER TABLE {progress} ALTER COLUMN progress_id SET GENERATED ALWAYS")
    conn.exec_driver_sql(f"ALTER TABLE {progress} ALTER COLUMN {quote_ident(conn, 'by')} SET DEFAULT session_user")
    # Rows given explicit ids before this could sit ahead of the sequence: the next insert would collide.
    conn.exec_driver_sql(
        f"SELECT setval(pg_get_serial_sequence({quote_literal(conn, progress)}, 'progress_id'), "
        f"greatest((SELECT max(progress_id) FROM {progress}), 1), "
        f"(SELECT max(progress_id) IS NOT NULL FROM {progress}))"
    )
    # %% : the driver reads a lone % as a placeholder.
    conn.exec_driver_sql(
        f"""
        CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
        BEGIN
          IF TG_OP = 'UPDATE' THEN
            NEW."by" := OLD."by";  -- who recorded it stays who recorded it
          ELSE
            NEW."by" := session_user;  -- neither a value given nor SET ROLE changes who signs
          END IF;
          IF NEW.at > now() + interval {quote_literal(conn, PROGRESS_CLOCK_SKEW)} THEN
            RAISE EXCEPTION 'journey_progress.at %% is ahead of the server clock (%%)', NEW.at, now()
              USING ERRCODE = 'check_violation';
          END IF;
          IF TG_OP = 'INSERT' OR NEW.journey_id IS DISTINCT FROM OLD.journey_id THEN
            PERFORM 1 FROM {target} j WHERE j.id = NEW.journey_id FOR KEY SHARE;
            IF NOT FOUND THEN
              RAISE EXCEPTION 'journey_progress.journey_id %%: no such journey', quote_literal(NEW.journey_id)
                USING ERRCODE = 'foreign_key_violation';
            END IF;
          END IF;
          RETURN NEW;
        END
        $fn$
        """
    )
    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {PROGRESS_GUARD} ON {progress}")
    conn.exec_driver_sql(
        f"CREATE TRIGGER {PROGRESS_GUARD} BEFORE INSERT OR UPDATE ON {progress} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()"
    )


def _boundaries(conn: Connection, tenant: Tenant) -> None:
    """Migration 12: groups per database with names no other tenant's can take; every table bounds branch
    logins; ``journey_progress`` guarded.

    The groups' names were ``lgm_<key>_<kind>``: cluster-wide (one grant read the tenant in every
    database of the server) and ambiguous across keys. The new groups get the grants and policies,
    then :func:`access.carry_legacy_groups` moves the old groups' members over and drops them.
    """
    _progress_guard(conn, tenant)
    apply_crm_access(conn, tenant)
    apply_branch_access(conn, tenant)
    carry_legacy_groups(conn, tenant)


def _webhook_inbox(conn: Connection, tenant: Tenant) -> None:
    """Migration 13: ``webhook_events``, SmartMoving's webhook deliveries waiting for their refresh run.

    It holds every branch's events: branch logins see none of it (the restrictive bound, re-applied here).
    """
    webhook_events.create(conn.execution_options(**tenant_options(tenant)), checkfirst=True)
    apply_crm_access(conn, tenant)
    apply_branch_access(conn, tenant)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "schema and tables", _create_tables),
    Migration(2, "day views (today, tomorrow, active)", sync_views),
    Migration(3, "reader/writer roles, grants, row-level security", apply_access),
    Migration(4, "booked work only, money per job, address roles, CRM progress, board views", _booked_work_only),
    Migration(5, "leads, their quarantine and audit", _leads),
    Migration(6, "branch logins: row access bound to the login's branches", _branch_logins),
    Migration(7, "per-branch time zones: locations.timezone, day views on each branch's clock", _branch_time_zones),
    Migration(8, "failed checks per partition in sync_runs", _check_counts),
    Migration(9, "why a journey left its date: raw_job_departures, journey_audit.reason", _departure_reasons),
    Migration(10, "zone_offsets: day views on the pipeline's bundled IANA data, not the server's", _zone_offsets),
    Migration(11, "records served but unreadable, kept raw with their reason; served counts", _unreadable_records),
    Migration(12, "group roles per database and tenant, branch bound on every table, progress guarded", _boundaries),
    Migration(13, "webhook_events: SmartMoving's webhook deliveries, the inbox of targeted refreshes", _webhook_inbox),
)

#: The schema version this code needs: its newest migration.
SCHEMA_VERSION = MIGRATIONS[-1].version


def sync_config_rows(conn: Connection, tenant: Tenant) -> None:
    """Make ``company``, ``locations`` and ``zone_offsets`` match the tenants file (rows touched only on change)."""
    conn = conn.execution_options(**tenant_options(tenant))
    row = {"client_id": tenant.client_id, "name": tenant.name, "timezone": tenant.timezone}
    stmt = insert(company).values(row)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[company.c.client_id],
            set_={"name": stmt.excluded.name, "timezone": stmt.excluded.timezone, "updated_at": sa.func.now()},
            where=sa.tuple_(company.c.name, company.c.timezone).is_distinct_from(
                sa.tuple_(stmt.excluded.name, stmt.excluded.timezone)
            ),
        )
    )
    conn.execute(company.delete().where(company.c.client_id != tenant.client_id))

    rows = [
        {
            "location_id": b.location_id,
            "client_id": tenant.client_id,
            "name": b.name,
            "smartmoving_branch_name": b.smartmoving_branch_name,
            "timezone": b.timezone,
        }
        for b in tenant.branches
    ]
    if rows:
        stmt = insert(locations).values(rows)
        compared = ("client_id", "name", "smartmoving_branch_name", "timezone")
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[locations.c.location_id],
                set_={**{c: stmt.excluded[c] for c in compared}, "updated_at": sa.func.now()},
                where=sa.tuple_(*(locations.c[c] for c in compared)).is_distinct_from(
                    sa.tuple_(*(stmt.excluded[c] for c in compared))
                ),
            )
        )
    conn.execute(locations.delete().where(locations.c.location_id.not_in(tenant.location_ids)))
    sync_zone_offsets(conn, tenant)


def _applied_versions(conn: Connection, tenant: Tenant) -> set[int]:
    qualified = f"{quote_ident(conn, tenant.schema)}.{quote_ident(conn, schema_migrations.name)}"
    if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
        return set()
    scoped = conn.execution_options(**tenant_options(tenant))
    return set(scoped.execute(sa.select(schema_migrations.c.version)).scalars())


def schema_version(engine: Engine, tenant: Tenant) -> int:
    """The newest migration applied to the tenant's schema (0: no schema yet). One query, no lock, no DDL."""
    with engine.connect() as conn:
        return max(_applied_versions(conn, tenant), default=0)


def migrate(engine: Engine, tenant: Tenant) -> list[int]:
    """Apply the tenant's missing migrations, then sync config rows and views; returns versions applied."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"lgm.migrate.{tenant.schema}"},
        )
        applied = _applied_versions(conn, tenant)
        done = []
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            log.info("tenant %s: applying migration %d (%s)", tenant.key, migration.version, migration.description)
            migration.apply(conn, tenant)
            conn.execution_options(**tenant_options(tenant)).execute(
                schema_migrations.insert().values(version=migration.version, description=migration.description)
            )
            done.append(migration.version)
        sync_config_rows(conn, tenant)
        sync_views(conn, tenant)
    return done
