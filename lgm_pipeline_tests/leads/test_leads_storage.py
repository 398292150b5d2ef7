"""The leads table: merged by id with audit and quarantine, two creation dates in one write, the recent view."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lgm_pipeline.storage.io_manager import PostgresIOManager
from lgm_pipeline_tests.storage.conftest import DAILY

DAY = dt.date(2026, 11, 25)
YESTERDAY = DAY - dt.timedelta(days=1)
AT = dt.datetime(2026, 11, 25, 15, tzinfo=dt.UTC)
#: The views' "now" (``lgm.clock``): the day of the rows, not the machine's.
CLOCK = "2026-11-25T17:00:00Z"
REASON = [{"rule": "lead_contact", "column": "name", "check": "name_and_a_phone_or_email", "value": None}]


def lead_row(n: str, day: dt.date = DAY, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": f"lead_{n}",
        "client_id": "clm_f55e13de_a5c4_4990_ad02_34bb07187daa",
        "location_id": "loc_lgm_calgary_001",
        "created_date": day,
        "created_at": AT,
        "name": "Amélie Tremblay",
        "phone": "+14035550101",
        "phone_type": "Mobile",
        "email": "amelie@example.com",
        "source": "Google",
        "move_date": dt.date(2026, 12, 15),
        "move_size": "2 Bedroom",
        "status": "NEW",
        "smartmoving_status": 0,
        "converted_opportunity_id": None,
        "probable_duplicate_of": None,
        "branch_name": "CALGARY 🇨🇦 - Let's Get Moving",
        "smartmoving_lead_id": n,
        "raw_payload": {"id": n},
        "dq_flags": [],
        "source_fetched_at": AT,
        "synced_at": AT,
        "run_id": "run",
        "quarantine_reasons": None,
    }
    return row | overrides


def _write(io_manager: PostgresIOManager, rows: list[dict[str, Any]], first: dt.date, last: dt.date) -> dict:
    context = dg.build_output_context(
        asset_key=dg.AssetKey(["lgm", "leads"]),
        asset_partition_key_range=dg.PartitionKeyRange(first.isoformat(), last.isoformat()),
        asset_partitions_def=DAILY,
        run_id=f"run-{uuid.uuid4().hex[:8]}",
    )
    io_manager.handle_output(context, pd.DataFrame(rows))
    return {k: v.value for k, v in context.get_logged_metadata().items()}


def _rows(engine: Engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT set_config('lgm.clock', :now, false)"), {"now": CLOCK})
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_leads_of_two_dates_merge_with_audit_and_quarantine(io_manager: PostgresIOManager, engine: Engine) -> None:
    first = _write(
        io_manager,
        [lead_row("a", YESTERDAY), lead_row("b"), lead_row("c", name=None, quarantine_reasons=REASON)],
        YESTERDAY,
        DAY,
    )
    assert (first["inserted"], first["quarantined"]) == (2, 1)
    # Next cycle: a converted, b gone from SmartMoving, c fixed.
    converted = lead_row("a", YESTERDAY, status="CONVERTED", converted_opportunity_id="opp-1")
    second = _write(io_manager, [converted, lead_row("c")], YESTERDAY, DAY)
    assert (second["inserted"], second["updated"], second["deleted"], second["quarantined"]) == (1, 1, 1, 0)
    assert _rows(engine, "SELECT id, status FROM tenant_lgm.leads ORDER BY id") == [
        ("lead_a", "CONVERTED"),
        ("lead_c", "NEW"),
    ]
    assert _rows(engine, "SELECT count(*) FROM tenant_lgm.leads_quarantine") == [(0,)]
    audit = _rows(engine, "SELECT lead_id, action FROM tenant_lgm.lead_audit ORDER BY audit_id")
    # date by date in one transaction: yesterday's a is updated, then today's b leaves and c arrives
    assert audit == [
        ("lead_a", "insert"),
        ("lead_b", "insert"),
        ("lead_a", "update"),
        ("lead_b", "delete"),
        ("lead_c", "insert"),
    ]
    # the recent view: the last 7 days, not converted
    assert _rows(engine, "SELECT id FROM tenant_lgm.leads_recent ORDER BY id") == [("lead_c",)]


def test_branch_logins_see_their_branch_of_leads(
    io_manager: PostgresIOManager, engine: Engine, tenant, database_url: str
) -> None:
    from lgm_pipeline.storage.access import grant_reader
    from lgm_pipeline_tests.storage.test_access import _allow, _connect_as

    _write(
        io_manager,
        [lead_row("a"), lead_row("t", location_id="loc_lgm_toronto_001"), lead_row("n", location_id=None)],
        DAY,
        DAY,
    )
    name, password = f"crm_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    grant_reader(engine, tenant, name, password)
    reader = _connect_as(database_url, (name, password))
    try:
        with reader.connect() as conn:
            _allow(conn, "loc_lgm_toronto_001")
            assert conn.execute(sa.text("SELECT id FROM tenant_lgm.leads")).scalars().all() == ["lead_t"]
            _allow(conn, "")
            conn.execute(sa.text("SELECT set_config('lgm.clock', :now, false)"), {"now": CLOCK})
            assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.leads_recent")).scalar() == 3
    finally:
        reader.dispose()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {name}")
            conn.exec_driver_sql(f"DROP ROLE {name}")
