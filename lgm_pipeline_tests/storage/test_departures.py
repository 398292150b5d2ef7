"""Why a journey left its date: raw_job_departures -> the delete's audit reason -> journeys_moved_out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lgm_pipeline.storage.access import grant_reader
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.migrations import migrate
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline_tests.storage.conftest import (
    CALGARY,
    DAY,
    FETCHED_AT,
    TORONTO,
    Writer,
    journey_key,
    journey_row,
    journeys_frame,
)
from lgm_pipeline_tests.storage.test_branch_clocks import branch_login  # noqa: F401 (fixture)

PULLED_AT = FETCHED_AT + dt.timedelta(hours=2)  # the pull that saw the jobs go
LATER = DAY + dt.timedelta(days=20)
MORNING = "2026-11-25T15:00:00Z"  # 08:00 in Calgary on DAY


def _departure(job: str, reason: str, new_date: dt.date | None = None, fetched_at: dt.datetime = PULLED_AT) -> dict:
    return {
        "service_date": DAY,
        "job_id": job,
        "opportunity_id": f"opp_{job}",
        "reason": reason,
        "new_service_date": new_date,
        "fetched_at": fetched_at,
        "run_id": "run-pull",
    }


def _pulled(writer: Writer, rows: list[dict]) -> None:
    """The raw pull's departures of DAY, written as the IO manager writes asset smartmoving_job_departures."""
    writer.raw(
        "smartmoving_job_departures", pd.DataFrame(rows, columns=list(_departure("x", "deleted"))), DAY, "run-pull"
    )


def _moved_out(conn: sa.Connection) -> dict[str, tuple]:
    conn.execute(sa.text("SELECT set_config('lgm.clock', :t, false)"), {"t": MORNING})
    rows = conn.execute(
        sa.text(
            "SELECT journey_id, customer_name, branch, old_service_date, new_service_date, reason "
            "FROM tenant_lgm.journeys_moved_out ORDER BY journey_id"
        )
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def _reasons(engine: Engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT journey_id, reason, new_service_date FROM tenant_lgm.journey_audit "
                "WHERE action = 'delete' ORDER BY journey_id"
            )
        )
        return {r[0]: (r[1], r[2]) for r in rows}


def test_each_leaving_job_is_audited_with_why_and_dispatch_sees_it(
    writer: Writer, engine: Engine, postgres: PostgresResource, tenant: Tenant
) -> None:
    jobs = ["moved", "cancelled", "deleted", "undated", "stale", "unexplained", "keep"]
    writer.journeys(journeys_frame([journey_row(j) for j in jobs]))
    _pulled(
        writer,
        [
            _departure("moved", "rescheduled", LATER),
            _departure("cancelled", "cancelled"),
            _departure("deleted", "deleted"),
            _departure("undated", "rescheduled"),  # no date yet ("TBD")
            # seen before the journey's own fetch: says nothing about where the job is now
            _departure("stale", "deleted", fetched_at=FETCHED_AT - dt.timedelta(hours=1)),
        ],
    )
    result = writer.journeys(journeys_frame([journey_row("keep")]))
    assert result["deleted"] == 6

    assert _reasons(engine) == {
        "jrn_moved": ("rescheduled", LATER),
        "jrn_cancelled": ("cancelled", None),
        "jrn_deleted": ("deleted", None),
        "jrn_undated": ("rescheduled", None),
        "jrn_stale": (None, None),
        "jrn_unexplained": (None, None),
    }
    with engine.connect() as conn:
        branch = conn.execute(sa.text(f"SELECT name FROM tenant_lgm.locations WHERE location_id = '{CALGARY}'"))
        calgary = branch.scalar_one()
        assert _moved_out(conn) == {
            "jrn_cancelled": ("Jane Doe", calgary, DAY, None, "cancelled"),
            "jrn_deleted": ("Jane Doe", calgary, DAY, None, "deleted"),
            "jrn_moved": ("Jane Doe", calgary, DAY, LATER, "rescheduled"),
            "jrn_undated": ("Jane Doe", calgary, DAY, None, "rescheduled"),
        }
        # The next day, a job of yesterday that left is history (the audit), not dispatch's concern.
        conn.execute(sa.text("SELECT set_config('lgm.clock', '2026-11-26T15:00:00Z', false)"))
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.journeys_moved_out")).scalar() == 0

    # The rescheduled job comes back into the pulled dates: it is on the board again, not "moved out".
    back = journey_row("moved", source_fetched_at=PULLED_AT + dt.timedelta(hours=2))
    writer.journeys(journeys_frame([journey_row("keep"), back]))
    with engine.connect() as conn:
        assert "jrn_moved" not in _moved_out(conn)


def test_moved_out_is_narrowed_to_the_branches_a_session_may_read(
    writer: Writer,
    engine: Engine,
    postgres: PostgresResource,
    tenant: Tenant,
    database_url: str,
    branch_login: Callable[[], tuple[str, str]],  # noqa: F811
) -> None:
    for branch in (CALGARY, TORONTO):
        writer.journeys(journeys_frame([journey_row(branch, location_id=branch)]), key=journey_key(DAY, branch))
    _pulled(writer, [_departure(CALGARY, "deleted"), _departure(TORONTO, "cancelled")])
    for branch in (CALGARY, TORONTO):
        writer.journeys(journeys_frame([]).reindex(columns=list(journey_row("x"))), key=journey_key(DAY, branch))

    with engine.connect() as conn:
        assert set(_moved_out(conn)) == {f"jrn_{CALGARY}", f"jrn_{TORONTO}"}
        conn.execute(sa.text("SELECT set_config('lgm.allowed_locations', :b, false)"), {"b": TORONTO})
        assert set(_moved_out(conn)) == {f"jrn_{TORONTO}"}

    login = branch_login()
    grant_reader(engine, tenant, *login, [CALGARY])
    url = make_url(database_url).set(username=login[0], password=login[1]).render_as_string(hide_password=False)
    reader = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:
            assert set(_moved_out(conn)) == {f"jrn_{CALGARY}"}
    finally:
        reader.dispose()


def test_migration_9_keeps_every_audit_row_and_adds_the_reason(engine: Engine, tenant: Tenant) -> None:
    """A database as migration 8 left it: no departures table, no reason; its audit rows survive as they were."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP VIEW tenant_lgm.journeys_moved_out")
        conn.exec_driver_sql("DROP TABLE tenant_lgm.raw_job_departures")
        conn.exec_driver_sql("ALTER TABLE tenant_lgm.journey_audit DROP COLUMN reason, DROP COLUMN new_service_date")
        conn.exec_driver_sql("DELETE FROM tenant_lgm.schema_migrations WHERE version = 9")
        conn.exec_driver_sql(
            "INSERT INTO tenant_lgm.journey_audit (journey_id, action, changed_columns, before, run_id) "
            """VALUES ('jrn_old', 'delete', '{}', '{"service_date": "2026-11-25"}', 'run-old')"""
        )
        before = conn.execute(sa.text("SELECT * FROM tenant_lgm.journey_audit ORDER BY audit_id")).all()

    assert migrate(engine, tenant) == [9]
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT * FROM tenant_lgm.journey_audit ORDER BY audit_id")).mappings().all()
        assert [tuple(r.values())[: len(before[0])] for r in after] == [tuple(r) for r in before]
        assert {(r["reason"], r["new_service_date"]) for r in after} == {(None, None)}
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.raw_job_departures")).scalar() == 0
        with pytest.raises(sa.exc.IntegrityError):  # the reasons are the three the view explains
            conn.exec_driver_sql("UPDATE tenant_lgm.journey_audit SET reason = 'moved'")
    assert migrate(engine, tenant) == []
