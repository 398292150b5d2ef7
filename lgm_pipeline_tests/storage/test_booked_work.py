"""Journeys are booked work; the CRM owns field progress; migration 4 carries an old database forward."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lgm_pipeline.storage.access import crm_writer_role
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.migrations import MIGRATIONS, migrate
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline_tests.storage.conftest import FETCHED_AT, Writer, journey_row

#: What a database at version 3 gets applied: migration 4 and every later one.
SINCE_4 = [m.version for m in MIGRATIONS if m.version >= 4]

LATER = FETCHED_AT + dt.timedelta(hours=2)
NOON = "2026-11-25T17:00:00Z"  # 12:00 in Toronto


def _journeys(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM tenant_lgm.journeys")).mappings().all()
    return {r["id"]: dict(r) for r in rows}


def _view(engine: Engine, view: str, columns: str = "id") -> list[tuple]:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT set_config('lgm.clock', :t, false)"), {"t": NOON})
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT {columns} FROM tenant_lgm.{view} ORDER BY id"))]


def test_a_job_first_seen_cancelled_or_as_a_lead_never_becomes_a_journey(writer: Writer, engine: Engine) -> None:
    cancelled = journey_row("c", status="CANCELLED", smartmoving_status=20, booked=False)
    lead = journey_row("l", status="UNBOOKED", smartmoving_status=0, booked=False)
    result = writer.journeys(pd.DataFrame([journey_row("b"), cancelled, lead]))
    assert result["inserted"] == 1
    assert set(_journeys(engine)) == {"jrn_b"}


def test_a_booked_journey_cancelled_later_stays_visible_as_cancelled(writer: Writer, engine: Engine) -> None:
    writer.journeys(pd.DataFrame([journey_row("b"), journey_row("keep")]))
    cancelled = journey_row("b", status="CANCELLED", smartmoving_status=20, booked=False, source_fetched_at=LATER)
    writer.journeys(pd.DataFrame([cancelled, journey_row("keep")]))
    assert _journeys(engine)["jrn_b"]["status"] == "CANCELLED"
    assert _view(engine, "journeys_today") == [("jrn_keep",)]
    assert _view(engine, "journeys_cancelled", "id, status") == [("jrn_b", "CANCELLED")]


def test_the_sync_never_touches_the_crms_progress_and_the_board_shows_the_furthest_stage(
    writer: Writer, engine: Engine
) -> None:
    writer.journeys(pd.DataFrame([journey_row("a"), journey_row("b")]))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tenant_lgm.journey_progress (journey_id, stage, at, by) VALUES "
                "('jrn_a', 'EN_ROUTE', '2026-11-25T13:00Z', 'crew-7'),"
                "('jrn_a', 'ONSITE', '2026-11-25T14:00Z', 'crew-7'),"
                "('jrn_b', 'EN_ROUTE', '2026-11-25T13:00Z', 'crew-9')"
            )
        )
    # SmartMoving changes the phone and closes b: a full rebuild updates journeys, not the progress.
    closed = journey_row("b", status="CLOSED", smartmoving_status=11, source_fetched_at=LATER)
    result = writer.journeys(
        pd.DataFrame([journey_row("a", customer_phone="+14035550111", source_fetched_at=LATER), closed])
    )
    assert result["updated"] == 2
    with engine.connect() as conn:
        progress = conn.execute(sa.text("SELECT journey_id, stage FROM tenant_lgm.journey_progress ORDER BY 1, 2"))
        assert [tuple(r) for r in progress] == [("jrn_a", "EN_ROUTE"), ("jrn_a", "ONSITE"), ("jrn_b", "EN_ROUTE")]
    board = _view(engine, "journeys_board", "id, status, progress_stage, board_stage, progress_by")
    assert board == [
        # by is the session's login whatever the insert says (the pipeline's own connection here)
        ("jrn_a", "BOOKED", "ONSITE", "ONSITE", engine.url.username),
        ("jrn_b", "CLOSED", "EN_ROUTE", "CLOSED", engine.url.username),
    ]
    assert _view(engine, "journeys_active") == [("jrn_a",)]


def test_progress_stages_are_the_crms_vocabulary(writer: Writer, engine: Engine) -> None:
    writer.journeys(pd.DataFrame([journey_row("a")]))
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="ck_journey_progress_stage"):
        conn.execute(sa.text("INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('jrn_a', 'LOST')"))


@pytest.fixture
def crm_login(database_url: str, engine: Engine, tenant: Tenant) -> Iterator[Engine]:
    name, password = f"crm_app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        conn.exec_driver_sql(f'GRANT "{crm_writer_role(tenant, engine.url.database)}" TO {name}')
    crm = create_engine(
        make_url(database_url).set(username=name, password=password).render_as_string(hide_password=False),
        poolclass=sa.pool.NullPool,
    )
    yield crm
    crm.dispose()
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP OWNED BY {name}")
        conn.exec_driver_sql(f"DROP ROLE {name}")
    admin.dispose()


def test_the_crm_writer_records_progress_but_cannot_change_synced_rows(writer: Writer, crm_login: Engine) -> None:
    writer.journeys(pd.DataFrame([journey_row("a")]))
    with crm_login.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('jrn_a', 'EN_ROUTE')")
        )
        by = conn.execute(sa.text("SELECT by FROM tenant_lgm.journey_progress")).scalar()
        assert by.startswith("crm_app_")  # who recorded it, from the login itself
    with crm_login.begin() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        conn.execute(sa.text("UPDATE tenant_lgm.journeys SET status = 'COMPLETED'"))


def _downgrade_to_version_3(engine: Engine) -> None:
    """The tenant schema as migration 3 left it (before booked-work-only), with rows of that era."""
    with engine.begin() as conn:
        for view in (
            "unscheduled_jobs",
            "journeys_cancelled",
            "journeys_active",
            "journeys_tomorrow",
            "journeys_today",
            "journeys_board",
        ):
            conn.exec_driver_sql(f"DROP VIEW tenant_lgm.{view}")
        conn.exec_driver_sql("DROP VIEW tenant_lgm.leads_recent")
        conn.exec_driver_sql(
            "DROP TABLE tenant_lgm.journey_progress, tenant_lgm.raw_branches, tenant_lgm.raw_job_timelines,"
            " tenant_lgm.raw_leads, tenant_lgm.leads, tenant_lgm.leads_quarantine, tenant_lgm.lead_audit"
        )
        conn.exec_driver_sql("ALTER TABLE tenant_lgm.journeys RENAME COLUMN pickup_address TO start_location")
        conn.exec_driver_sql("ALTER TABLE tenant_lgm.journeys RENAME COLUMN dropoff_address TO end_location")
        for column in (
            "stop_addresses",
            "needs_truck",
            "opportunity_type",
            "customer_phone_type",
            "actual_cost",
            "opportunity_subtotal",
            "opportunity_tax",
            "opportunity_total",
            "currency",
            "volume",
            "weight",
            "sales_assignee",
        ):
            conn.exec_driver_sql(f"ALTER TABLE tenant_lgm.journeys DROP COLUMN {column}")
        conn.exec_driver_sql("DELETE FROM tenant_lgm.schema_migrations WHERE version >= 4")
        conn.exec_driver_sql(
            """
            UPDATE tenant_lgm.journeys SET
              status = CASE smartmoving_status WHEN 11 THEN 'AUDITED' ELSE 'MORNING_PREP' END,
              estimated_cost = 1050.00
            """
        )


def test_migration_4_carries_an_existing_database_forward(writer: Writer, engine: Engine, tenant: Tenant) -> None:
    payload = {
        "job": {
            "jobDate": 20261125,
            "estimatedCharges": [{"totalCost": 400.0}, {"totalCost": 0.5}],
            "actualCharges": [],
        },
        "opportunity": {"estimatedTotal": {"subtotal": 1000.0, "tax": 50.0, "finalTotal": 1050.0}},
    }
    # The lead is written as booked, then made a lead as the old pipeline stored every status.
    writer.journeys(
        pd.DataFrame(
            [
                journey_row("booked", raw_payload=payload),
                journey_row("closed", smartmoving_status=11, status="CLOSED"),
                journey_row("lead", smartmoving_status=0, status="BOOKED"),
                # filed on its opportunity's date although its own was "TBD": a phantom journey
                journey_row("phantom", raw_payload={"job": {"jobDate": None}, "opportunity": {}}),
            ]
        )
    )
    _downgrade_to_version_3(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE tenant_lgm.journeys SET smartmoving_status = 0 WHERE id = 'jrn_lead'")

    assert migrate(engine, tenant) == SINCE_4

    rows = _journeys(engine)
    assert set(rows) == {"jrn_booked", "jrn_closed"}  # the lead and the phantom left journeys...
    with engine.connect() as conn:
        audit = conn.execute(
            sa.text(
                "SELECT action, before FROM tenant_lgm.journey_audit WHERE journey_id = 'jrn_lead'"
                " ORDER BY audit_id DESC"
            )
        ).first()
    assert audit.action == "delete" and audit.before["customer_name"] == "Jane Doe"  # ...with its whole row kept
    booked = rows["jrn_booked"]
    assert booked["pickup_address"] == "123 Main St SW, Calgary, AB"  # renamed, data kept
    assert float(booked["estimated_cost"]) == 400.5  # this job's charges, not the opportunity's total
    assert (float(booked["opportunity_subtotal"]), float(booked["opportunity_total"])) == (1000.0, 1050.0)
    assert booked["currency"] == "CAD" and booked["status"] == "BOOKED"
    assert rows["jrn_closed"]["status"] == "CLOSED"  # not AUDITED: no audit happened
    assert _view(engine, "journeys_board", "id, board_stage") == [("jrn_booked", "BOOKED"), ("jrn_closed", "CLOSED")]
    assert migrate(engine, tenant) == []


def test_the_crm_writer_reads_the_board_and_cannot_sign_for_someone_else(writer: Writer, crm_login: Engine) -> None:
    writer.journeys(pd.DataFrame([journey_row("a")]))
    with crm_login.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.journeys_board")).scalar() == 1
    with crm_login.begin() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        conn.execute(
            sa.text("INSERT INTO tenant_lgm.journey_progress (journey_id, stage, by) VALUES ('jrn_a', 'ONSITE', 'x')")
        )


def test_a_new_board_column_reaches_the_day_views(engine: Engine, tenant: Tenant, monkeypatch) -> None:
    from lgm_pipeline.storage import migrations

    original = migrations._view_statements

    def with_extra_column(conn: sa.Connection, tenant: Tenant) -> dict[str, str]:
        statements = original(conn, tenant)
        board = statements["journeys_board"]
        statements["journeys_board"] = board.replace(" AS arrival_window_end ", " AS arrival_window_end, 1 AS extra ")
        return statements

    monkeypatch.setattr(migrations, "_view_statements", with_extra_column)
    with engine.begin() as conn:
        replaced = migrations.sync_views(conn, tenant)
        columns = conn.execute(
            sa.text(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = 'tenant_lgm'"
                " AND column_name = 'extra' ORDER BY 1"
            )
        ).scalars()
        assert list(columns) == [
            "journeys_active",
            "journeys_board",
            "journeys_cancelled",
            "journeys_today",
            "journeys_tomorrow",
        ]
    assert "journeys_today" in replaced


@pytest.mark.parametrize(
    "value",
    [
        20261125,
        "20261125",
        " 20261125 ",
        "+20261125",
        20261125.7,
        20260231,
        20261399,
        -2026112,
        2026112,
        "2026-11-25",
        "2026-11-25T00:00:00",
        "2026-11-25T09:30:00-07:00",
        "2026-02-30",
        "",
        None,
        True,
        1764028800,
        99991231,
        19000101,
        [20261125],
        {"d": 1},
        1e30,
    ],
)
def test_the_database_reads_a_job_date_exactly_as_the_pipeline(engine: Engine, value: object) -> None:
    from lgm_pipeline.transform.raw import yyyymmdd_to_date

    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT tenant_lgm.lgm_service_date(CAST(:v AS jsonb))"), {"v": json.dumps(value)}
        ).scalar()
    assert stored == yyyymmdd_to_date(value)


def test_migration_4_survives_an_amount_no_column_can_hold(writer: Writer, engine: Engine, tenant: Tenant) -> None:
    payload = {
        "job": {"jobDate": 20261125, "estimatedCharges": [{"totalCost": 1e13}, {"totalCost": 10.0}]},
        "opportunity": {"estimatedTotal": {"subtotal": 1e13, "finalTotal": 5.0}},
    }
    writer.journeys(pd.DataFrame([journey_row("huge", raw_payload=payload)]))
    _downgrade_to_version_3(engine)
    assert migrate(engine, tenant) == SINCE_4
    row = _journeys(engine)["jrn_huge"]
    assert float(row["estimated_cost"]) == 10.0  # the impossible charge is no amount; the payload keeps it
    assert row["opportunity_subtotal"] is None and float(row["opportunity_total"]) == 5.0
