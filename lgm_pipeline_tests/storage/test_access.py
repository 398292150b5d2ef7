"""Migrations, day views, roles, grants and row-level security."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lgm_pipeline.storage.access import AccessError, grant_reader
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.migrations import MIGRATIONS, migrate
from lgm_pipeline.tenants.config import Tenant, parse_tenants
from lgm_pipeline_tests.storage.conftest import CALGARY, DAY, NEXT_DAY, TORONTO, Writer, journey_key, journey_row

TORONTO_TZ_BOUNDARY = "2026-11-26T03:00:00Z"  # 22:00 on Nov 25 in Toronto
FETCHED_LATER = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)


def _tenant_document(key: str, branches: list[tuple[str, str]], timezone: str = "America/Toronto") -> dict[str, Any]:
    return {
        "tenants": [
            {
                "key": key,
                "client_id": f"clm_{key}",
                "name": f"{key.title()} Movers",
                "timezone": timezone,
                "first_service_date": "2026-01-01",
                "smartmoving": {"api_key_env": "ACME_API_KEY", "base_url_env": "ACME_BASE_URL"},
                "branches": [
                    {"location_id": loc, "name": name, "smartmoving_branch_name": name.upper()}
                    for loc, name in branches
                ],
            }
        ]
    }


def _acme(branches: list[tuple[str, str]] | None = None) -> Tenant:
    return parse_tenants(_tenant_document("acme", branches or [("loc_acme_a", "Alpha"), ("loc_acme_b", "Beta")]))[0]


@pytest.fixture
def login(database_url: str) -> Iterator[tuple[str, str]]:
    """A throwaway LOGIN role name and password; the role is dropped afterwards (roles are global)."""
    name, password = f"crm_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}'\"$x"
    yield name, password
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


def _connect_as(database_url: str, login: tuple[str, str]) -> Engine:
    url = make_url(database_url).set(username=login[0], password=login[1])
    return create_engine(url.render_as_string(hide_password=False), poolclass=sa.pool.NullPool)


def test_migrations_are_recorded_and_idempotent(database_url: str, engine: Engine, tenant: Tenant) -> None:
    assert migrate(engine, tenant) == []
    with engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version FROM tenant_lgm.schema_migrations ORDER BY 1")).scalars()
        assert list(versions) == [m.version for m in MIGRATIONS]
    acme = _acme()
    assert migrate(engine, acme) == [m.version for m in MIGRATIONS]
    assert migrate(engine, acme) == []


def test_company_and_locations_follow_the_config(engine: Engine) -> None:
    migrate(engine, _acme())
    renamed = _acme([("loc_acme_a", "Alpha Prime"), ("loc_acme_c", "Gamma")])
    migrate(engine, renamed)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT location_id, name FROM tenant_acme.locations ORDER BY 1")).all()
        company = conn.execute(sa.text("SELECT client_id, name, timezone FROM tenant_acme.company")).all()
    assert [tuple(r) for r in rows] == [("loc_acme_a", "Alpha Prime"), ("loc_acme_c", "Gamma")]
    assert [tuple(r) for r in company] == [("clm_acme", "Acme Movers", "America/Toronto")]


def _seed_days(writer: Writer) -> None:
    writer.journeys(
        pd.DataFrame([journey_row("today"), journey_row("done", status="COMPLETED"), journey_row("lost")]),
        key=journey_key(DAY),
    )
    # Booked, then lost: a journey once booked stays, with its new status.
    lost = journey_row("lost", status="LOST", smartmoving_status=30, booked=False, source_fetched_at=FETCHED_LATER)
    writer.journeys(
        pd.DataFrame([journey_row("today"), journey_row("done", status="COMPLETED"), lost]), key=journey_key(DAY)
    )
    writer.journeys(pd.DataFrame([journey_row("tomorrow", service_date=NEXT_DAY)]), key=journey_key(NEXT_DAY))
    writer.journeys(pd.DataFrame([journey_row("toronto", location_id=TORONTO)]), key=journey_key(DAY, TORONTO))


def _allow(conn: sa.Connection, locations: str) -> None:
    conn.execute(sa.text("SELECT set_config('lgm.allowed_locations', :l, false)"), {"l": locations})


def _ids(conn: sa.Connection, view: str) -> list[str]:
    return list(conn.execute(sa.text(f"SELECT id FROM tenant_lgm.{view} ORDER BY id")).scalars())


def test_day_views_follow_the_tenant_clock(writer: Writer, engine: Engine) -> None:
    _seed_days(writer)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT set_config('lgm.clock', :t, false)"), {"t": TORONTO_TZ_BOUNDARY})
        # booked, not fallen-through work; the lost job shows among the cancellations
        assert _ids(conn, "journeys_today") == ["jrn_done", "jrn_today", "jrn_toronto"]
        assert _ids(conn, "journeys_tomorrow") == ["jrn_tomorrow"]
        assert _ids(conn, "journeys_active") == ["jrn_today", "jrn_tomorrow", "jrn_toronto"]
        assert _ids(conn, "journeys_cancelled") == ["jrn_lost"]
        # 00:00 in Calgary (02:00 in Toronto): the Calgary journey of the 26th is today there
        conn.execute(sa.text("SELECT set_config('lgm.clock', '2026-11-26T07:00:00Z', false)"))
        assert _ids(conn, "journeys_today") == ["jrn_tomorrow"]


def test_timezone_change_in_config_replaces_the_views(engine: Engine) -> None:
    migrate(engine, _acme())
    tokyo = parse_tenants(_tenant_document("acme", [("loc_acme_a", "Alpha")], timezone="Asia/Tokyo"))[0]
    migrate(engine, tokyo)
    with engine.connect() as conn:
        # leads without a branch fall back to the tenant's clock, written into the view
        definition = conn.execute(sa.text("SELECT pg_get_viewdef('tenant_acme.leads_recent')")).scalar()
        zones = conn.execute(sa.text("SELECT DISTINCT timezone FROM tenant_acme.locations")).scalars().all()
    assert "Asia/Tokyo" in definition
    assert zones == ["Asia/Tokyo"]  # the branch without a timezone of its own follows the tenant's


def test_reader_login_sees_its_tenant_filtered_by_branch(
    writer: Writer, engine: Engine, tenant: Tenant, database_url: str, login: tuple[str, str]
) -> None:
    _seed_days(writer)
    migrate(engine, _acme())
    grant_reader(engine, tenant, *login)
    grant_reader(engine, tenant, *login)  # idempotent: updates the password, keeps membership
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :n"), {"n": login[0]})
        assert stored.scalar().startswith("SCRAM-SHA-256$")  # only the verifier left this process
    reader = _connect_as(database_url, login)
    try:
        with reader.connect() as conn:
            everything = list(conn.execute(sa.text("SELECT id FROM tenant_lgm.journeys ORDER BY id")).scalars())
            assert len(everything) == 5
            _allow(conn, TORONTO)
            assert list(conn.execute(sa.text("SELECT id FROM tenant_lgm.journeys")).scalars()) == ["jrn_toronto"]
            conn.execute(sa.text("SELECT set_config('lgm.clock', :t, false)"), {"t": TORONTO_TZ_BOUNDARY})
            assert _ids(conn, "journeys_today") == ["jrn_toronto"]  # RLS applies through the view
            _allow(conn, f"{CALGARY}, {TORONTO}")
            assert len(_ids(conn, "journeys_today")) == 3
            _allow(conn, "")
            assert len(_ids(conn, "journeys")) == 5
        with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT * FROM tenant_acme.journeys"))
        with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("DELETE FROM tenant_lgm.journeys"))
    finally:
        reader.dispose()


def test_grant_reader_refuses_dangerous_logins(engine: Engine, tenant: Tenant) -> None:
    for bad in ['x"; DROP ROLE postgres; --', "Upper", "pg_monitor", "lgm_lgm_writer", ""]:
        with pytest.raises(AccessError):
            grant_reader(engine, tenant, bad, "secret")
    with pytest.raises(AccessError, match="not a plain login"):
        grant_reader(engine, tenant, "postgres", "secret")


def test_pipeline_connection_is_not_filtered(writer: Writer, engine: Engine) -> None:
    _seed_days(writer)
    with engine.connect() as conn:
        _allow(conn, TORONTO)
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.journeys")).scalar() == 5


def test_clock_boundary_matches_tenant_today(tenant: Tenant) -> None:
    now = dt.datetime.fromisoformat(TORONTO_TZ_BOUNDARY)
    assert tenant.today(now) == DAY
