"""One time-zone database: the bundled IANA data in Python and in the day views, and where the server's own differs.

Every test here passes on the embedded server and on the machine's PostgreSQL alike, whatever IANA
release each carries: the pipeline's dates never come from the server's data.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lgm_pipeline.storage.access import grant_reader
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.migrations import migrate
from lgm_pipeline.storage.tables import journeys, tenant_options
from lgm_pipeline.storage.zones import (
    EARLIEST_ZONE,
    compare_offsets,
    configured_zones,
    server_offsets,
    sync_zone_offsets,
    time_zone_warnings,
)
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline.tenants.timezones import offset_transitions, utc_offset, zone
from lgm_pipeline_tests.storage.conftest import journey_row

VANCOUVER = "loc_lgm_vancouver_001"
HOUR = dt.timedelta(hours=1)


# --- the bundled data in the database ------------------------------------------------------------


def test_migrate_stores_the_offsets_of_every_configured_zone(engine: Engine, tenant: Tenant) -> None:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT zone, valid_from, utc_offset FROM tenant_lgm.zone_offsets")).all()
    assert {r.zone for r in rows} == set(configured_zones([tenant])) >= {EARLIEST_ZONE, "America/Vancouver"}
    assert {(r.zone, r.valid_from, r.utc_offset) for r in rows} == {
        (name, start, offset) for name in configured_zones([tenant]) for start, offset in offset_transitions(name)
    }


def test_the_database_date_agrees_with_python_at_every_hour_of_the_coming_year(engine: Engine, tenant: Tenant) -> None:
    zones = configured_zones([tenant])
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT z.name, tenant_lgm.lgm_local_date(z.name, t) AS local_date, t AS at "
                "FROM unnest(CAST(:zones AS text[])) AS z(name) "
                "CROSS JOIN generate_series(CAST(:start AS timestamptz), CAST(:start AS timestamptz) "
                "+ interval '15 months', interval '1 hour') AS t"
            ),
            {"zones": zones, "start": start},
        ).all()
    assert len(rows) > 10_000 * len(zones)
    wrong = [(r.name, r.at, r.local_date) for r in rows if r.at.astimezone(zone(r.name)).date() != r.local_date]
    assert wrong == []


def test_a_zone_the_tenant_never_configured_falls_back_on_the_server_data(engine: Engine) -> None:
    with engine.connect() as conn:
        ours, servers = conn.execute(
            sa.text(
                "SELECT tenant_lgm.lgm_local_date('Asia/Tokyo', CAST(:t AS timestamptz)), "
                "CAST(CAST(:t AS timestamptz) AT TIME ZONE 'Asia/Tokyo' AS date)"
            ),
            {"t": "2026-11-27T15:30:00Z"},
        ).one()
    assert ours == servers == dt.date(2026, 11, 28)


def test_the_offsets_are_rewritten_only_when_the_zones_change(engine: Engine, tenant: Tenant) -> None:
    def stored() -> dict[str, Any]:
        with engine.connect() as conn:
            query = "SELECT zone, count(*) AS n, min(xmin::text) AS xmin FROM tenant_lgm.zone_offsets GROUP BY zone"
            return {r.zone: (r.n, r.xmin) for r in conn.execute(sa.text(query))}

    before = stored()
    with engine.begin() as conn:
        assert sync_zone_offsets(conn, tenant) is False  # every process migrates: an unchanged table is only read
    assert stored() == before

    halifax = replace(
        tenant,
        branches=tuple(
            replace(b, timezone="America/Halifax") if b.timezone == "America/Vancouver" else b for b in tenant.branches
        ),
    )
    with engine.begin() as conn:
        assert sync_zone_offsets(conn, halifax) is True
    after = stored()
    assert "America/Halifax" in after and "America/Vancouver" not in after  # no branch left on Vancouver's clock
    assert {k: v for k, v in after.items() if k != "America/Halifax"} == {
        k: v for k, v in before.items() if k != "America/Vancouver"
    }


def test_migration_10_gives_an_existing_database_its_zone_offsets(
    engine: Engine, tenant: Tenant, branch_login: Engine
) -> None:
    """A database of before the change (no ``zone_offsets``) gets the table, its rows and the grants on it."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE tenant_lgm.zone_offsets")  # the views' function only reads it when run
        conn.exec_driver_sql("DELETE FROM tenant_lgm.schema_migrations WHERE version = 10")
    assert migrate(engine, tenant) == [10]
    with engine.connect() as conn:
        zones = set(conn.execute(sa.text("SELECT DISTINCT zone FROM tenant_lgm.zone_offsets")).scalars())
    assert zones == set(configured_zones([tenant]))
    with branch_login.connect() as conn:  # bound to Vancouver before the migration: its day views still read
        conn.execute(sa.text("SELECT set_config('lgm.clock', '2026-11-28T07:30:00Z', false)"))
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.journeys_today")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.zone_offsets")).scalar() > 0


# --- who reads it, and the plans of the day views ---------------------------------------------------


@pytest.fixture
def branch_login(engine: Engine, tenant: Tenant, database_url: str) -> Iterator[Engine]:
    """An engine logged in as a new login bound to Vancouver (dropped afterwards: roles are global)."""
    name, password = f"crm_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    grant_reader(engine, tenant, name, password, [VANCOUVER])
    url = make_url(database_url).set(username=name, password=password).render_as_string(hide_password=False)
    reader = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        yield reader
    finally:
        reader.dispose()
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            conn.execute(sa.text("DELETE FROM tenant_lgm.branch_logins WHERE login = :l"), {"l": name})
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


def _journeys_scans(plan: dict[str, Any], under_subplan: bool = False) -> list[dict[str, Any]]:
    """The plan's scans of ``journeys`` that read the view's rows, not the row-level policies' subqueries."""
    found = []
    nested = under_subplan or plan.get("Parent Relationship") in ("SubPlan", "InitPlan")
    if plan.get("Relation Name") == "journeys" and not nested:
        found.append(plan)
    for child in plan.get("Plans", []):
        found += _journeys_scans(child, nested)
    return found


@pytest.mark.parametrize("view", ["journeys_today", "journeys_tomorrow", "journeys_active"])
def test_a_branch_login_reads_the_day_views_by_an_index_range_of_its_dates(
    engine: Engine, tenant: Tenant, branch_login: Engine, view: str
) -> None:
    """Under row-level security the dates still reach the index: ``lgm_local_date`` is given no journeys column.

    Sequential scans, hash and merge joins are switched off to ask, on a tiny table, the one question
    that matters at 100k rows (bench/view_plans.py): can the branch's date (and, from today on, the
    earliest today on Earth) bound the index scan (an ``Index Cond`` on service_date), or would it only
    filter every row the login may see.
    """
    rows = [
        journey_row(f"van_{n}", location_id=VANCOUVER, service_date=dt.date(2026, 11, 1) + dt.timedelta(days=n % 60))
        for n in range(300)
    ]
    with engine.begin() as conn:
        conn.execution_options(**tenant_options(tenant)).execute(
            journeys.insert(), [{k: v for k, v in r.items() if k != "quarantine_reasons"} for r in rows]
        )
        conn.exec_driver_sql("ANALYZE tenant_lgm.journeys, tenant_lgm.locations")
    with branch_login.connect() as conn:
        for plan in ("seqscan", "hashjoin", "mergejoin"):
            conn.exec_driver_sql(f"SET enable_{plan} = off")
        conn.execute(sa.text("SELECT set_config('lgm.clock', '2026-11-28T07:30:00Z', false)"))
        assert conn.execute(sa.text(f"SELECT count(*) FROM tenant_lgm.{view}")).scalar() > 0
        document = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) SELECT * FROM tenant_lgm.{view}").scalar()
    scans = _journeys_scans(document[0]["Plan"])
    assert scans, document
    for scan in scans:
        index_scan = scan if "Index Cond" in scan else (scan.get("Plans") or [{}])[0]  # a bitmap scan's index
        assert "service_date" in index_scan.get("Index Cond", ""), scan


def test_a_branch_login_reads_the_zone_offsets(engine: Engine, branch_login: Engine) -> None:
    with branch_login.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.zone_offsets")).scalar() > 0


# --- where another copy of the data disagrees ------------------------------------------------------


def test_what_the_server_is_said_to_disagree_on_is_what_its_own_data_says(engine: Engine, tenant: Tenant) -> None:
    """Against the test server, whichever IANA release it has: each disagreement is the server's own offset."""
    zones = configured_zones([tenant])
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    found = {d.zone: d for d in compare_offsets(zones, server_offsets(engine), start=start)}
    with engine.connect() as conn:

        def server_offset(name: str, at: dt.datetime) -> int:
            local = conn.execute(sa.text("SELECT CAST(:t AS timestamptz) AT TIME ZONE :z"), {"t": at, "z": name})
            return int((local.scalar() - at.replace(tzinfo=None)).total_seconds())

        for name in zones:
            if name in found:
                d = found[name]
                assert (d.theirs, d.ours) == (server_offset(name, d.at), int(utc_offset(name, d.at).total_seconds()))
                assert d.theirs != d.ours
                assert (
                    d.at == start or server_offset(name, d.at - HOUR) == utc_offset(name, d.at - HOUR).total_seconds()
                )
            else:  # agreed all year: sampled at the first of each month
                for month in range(12):
                    at = start + dt.timedelta(days=30 * month)
                    assert server_offset(name, at) == utc_offset(name, at).total_seconds(), (name, at)
    assert EARLIEST_ZONE not in found  # a fixed offset every release agrees on
    lines = time_zone_warnings(engine, [tenant], start=start)
    assert lines == [found[name].warning() for name in sorted(found)]
