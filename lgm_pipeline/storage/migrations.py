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
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.storage.access import apply_access, quote_ident, quote_literal
from lgm_pipeline.storage.tables import company, journeys, locations, metadata, schema_migrations, tenant_options
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline.transform.mappings import INACTIVE_STAGES

log = logging.getLogger(__name__)

#: Session setting that overrides "now" for the day views (tests, replays); empty = real clock.
CLOCK_SETTING = "lgm.clock"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection, Tenant], object]  # a return value (e.g. views replaced) is ignored


def _create_tables(conn: Connection, tenant: Tenant) -> None:
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(conn, tenant.schema)}")
    metadata.create_all(conn.execution_options(**tenant_options(tenant)), checkfirst=False)


def _view_statements(conn: Connection, tenant: Tenant) -> dict[str, str]:
    """The day views, with the tenant's timezone and the inactive stages written in."""
    schema = quote_ident(conn, tenant.schema)
    source = f"{schema}.{quote_ident(conn, journeys.name)}"
    columns = ", ".join(quote_ident(conn, c.name) for c in journeys.columns)
    clock = f"coalesce(nullif(current_setting({quote_literal(conn, CLOCK_SETTING)}, true), '')::timestamptz, now())"
    local_today = f"({clock} AT TIME ZONE {quote_literal(conn, tenant.timezone)})::date"
    inactive = ", ".join(quote_literal(conn, str(s)) for s in sorted(INACTIVE_STAGES))
    wheres = {
        "journeys_today": f"service_date = {local_today}",
        "journeys_tomorrow": f"service_date = {local_today} + 1",
        "journeys_active": f"status NOT IN ({inactive})",
    }
    return {
        name: (
            # security_invoker: the reader's own rights and row-level security apply through
            # the view, not the owner's (PostgreSQL >= 15).
            f"CREATE OR REPLACE VIEW {schema}.{quote_ident(conn, name)} WITH (security_invoker = true) "
            f"AS SELECT {columns} FROM {source} WHERE {where}"
        )
        for name, where in wheres.items()
    }


def sync_views(conn: Connection, tenant: Tenant) -> list[str]:
    """(Re)create the day views whose definition changed (timezone, stages, columns).

    Each view's comment holds a digest of the statement that made it, so an unchanged view is
    not replaced (replacing takes an exclusive lock that would queue behind CRM readers).
    """
    replaced = []
    for name, statement in _view_statements(conn, tenant).items():
        digest = "lgm:" + hashlib.sha256(statement.encode()).hexdigest()
        current = conn.execute(
            sa.text("SELECT obj_description(to_regclass(:v), 'pg_class')"),
            {"v": f"{quote_ident(conn, tenant.schema)}.{quote_ident(conn, name)}"},
        ).scalar()
        if current == digest:
            continue
        conn.exec_driver_sql(statement)
        conn.exec_driver_sql(
            f"COMMENT ON VIEW {quote_ident(conn, tenant.schema)}.{quote_ident(conn, name)} "
            f"IS {quote_literal(conn, digest)}"
        )
        replaced.append(name)
    return replaced


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "schema and tables", _create_tables),
    Migration(2, "day views (today, tomorrow, active)", sync_views),
    Migration(3, "reader/writer roles, grants, row-level security", apply_access),
)


def sync_config_rows(conn: Connection, tenant: Tenant) -> None:
    """Make ``company`` and ``locations`` match the tenants file (rows touched only on change)."""
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
        }
        for b in tenant.branches
    ]
    if rows:
        stmt = insert(locations).values(rows)
        compared = ("client_id", "name", "smartmoving_branch_name")
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


def _applied_versions(conn: Connection, tenant: Tenant) -> set[int]:
    qualified = f"{quote_ident(conn, tenant.schema)}.{quote_ident(conn, schema_migrations.name)}"
    if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
        return set()
    scoped = conn.execution_options(**tenant_options(tenant))
    return set(scoped.execute(sa.select(schema_migrations.c.version)).scalars())


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
