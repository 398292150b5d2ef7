"""The day views on each branch's clock (``locations.timezone``), not on the tenant's one clock.

Instants are wall-clock times converted by the pipeline's own zone data (the bundled IANA release):
the views and the sync window must agree on them whatever data the test server has, so no test
assumes a branch's offset (IANA 2026f keeps British Columbia, Alberta and Manitoba on daylight time
from November 2026; Debian 12's 2025b, which the machine's PostgreSQL reads, does not).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lgm_pipeline.storage.access import grant_reader
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.migrations import MIGRATIONS, migrate, today_sql
from lgm_pipeline.storage.tables import journeys, leads, tenant_options
from lgm_pipeline.tenants.config import Tenant, parse_tenants
from lgm_pipeline.tenants.timezones import zone
from lgm_pipeline_tests.leads.test_leads_storage import lead_row
from lgm_pipeline_tests.storage.conftest import CALGARY, TORONTO, journey_row

VANCOUVER = "loc_lgm_vancouver_001"
EDMONTON = "loc_lgm_edmonton_001"
WINNIPEG = "loc_lgm_winnipeg_001"
GONE = "loc_lgm_gone_001"  # a branch the tenants file no longer has
SHORT = {CALGARY: "cal", TORONTO: "tor", VANCOUVER: "van", EDMONTON: "edm", WINNIPEG: "win", GONE: "gone"}


def _local(wall: str, timezone: str) -> str:
    """The instant (ISO, UTC) of wall-clock time ``wall`` on ``timezone``'s clock, by the pipeline's zone data."""
    return dt.datetime.fromisoformat(wall).replace(tzinfo=zone(timezone)).astimezone(dt.UTC).isoformat()


VANCOUVER_LATE = _local("2026-11-27T23:30", "America/Vancouver")  # past midnight (Nov 28) in Toronto
TORONTO_PAST_MIDNIGHT = _local("2026-11-27T00:30", "America/Toronto")  # still Nov 26 in Calgary


def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _jid(location: str, day: dt.date, suffix: str = "") -> str:
    return f"jrn_{SHORT[location]}_{day:%m%d}{suffix}"


def _insert_journeys(engine: Engine, tenant: Tenant, rows: list[dict[str, Any]]) -> None:
    """Rows straight into ``journeys``: any branch of any tenant, whatever the partitions the writer knows."""
    with engine.begin() as conn:
        scoped = conn.execution_options(**tenant_options(tenant))
        scoped.execute(journeys.insert(), [{k: v for k, v in r.items() if k != "quarantine_reasons"} for r in rows])


def _seed(engine: Engine, tenant: Tenant, branches: list[str], days: list[dt.date]) -> None:
    """One booked journey per branch and date (id ``jrn_<branch>_<mmdd>``)."""
    rows = [
        journey_row(f"{SHORT[loc]}_{day:%m%d}", location_id=loc, service_date=day) for loc in branches for day in days
    ]
    _insert_journeys(engine, tenant, rows)


def _ids(conn: sa.Connection, schema: str, view: str) -> list[str]:
    return list(conn.execute(sa.text(f"SELECT id FROM {schema}.{view} ORDER BY id")).scalars())


def _at(conn: sa.Connection, clock: str) -> None:
    conn.execute(sa.text("SELECT set_config('lgm.clock', :t, false)"), {"t": clock})


def test_a_vancouver_evening_is_still_today_there_while_toronto_is_on_tomorrow(engine: Engine, tenant: Tenant) -> None:
    days = [_day("2026-11-26") + dt.timedelta(days=n) for n in range(4)]  # Nov 26 .. 29
    _seed(engine, tenant, [VANCOUVER, TORONTO], days)
    cancelled = journey_row("van_cancelled", location_id=VANCOUVER, service_date=days[1], status="CANCELLED")
    _insert_journeys(engine, tenant, [cancelled])
    with engine.connect() as conn:
        _at(conn, VANCOUVER_LATE)
        assert _ids(conn, "tenant_lgm", "journeys_today") == ["jrn_tor_1128", "jrn_van_1127"]
        assert _ids(conn, "tenant_lgm", "journeys_tomorrow") == ["jrn_tor_1129", "jrn_van_1128"]
        # From each branch's today on; the status filters are the ones they were.
        assert _ids(conn, "tenant_lgm", "journeys_active") == [
            "jrn_tor_1128",
            "jrn_tor_1129",
            "jrn_van_1127",
            "jrn_van_1128",
            "jrn_van_1129",
        ]
        assert _ids(conn, "tenant_lgm", "journeys_cancelled") == ["jrn_van_cancelled"]


def test_just_past_midnight_in_toronto_the_western_branches_are_still_on_yesterday(
    engine: Engine, tenant: Tenant
) -> None:
    days = [_day("2026-11-26"), _day("2026-11-27")]
    branches = [TORONTO, CALGARY, EDMONTON, WINNIPEG]
    _seed(engine, tenant, branches, days)
    now = dt.datetime.fromisoformat(TORONTO_PAST_MIDNIGHT)
    today = {location: tenant.branch(location).today(now) for location in branches}
    # Toronto 00:30 on the 27th; Calgary and Edmonton 22:30 or 23:30 on the 26th. Winnipeg is on the
    # 26th or, on UTC-5 from November 2026 (IANA 2026f), on Toronto's 27th: the zone data decides.
    assert today[TORONTO] == days[1] and today[CALGARY] == today[EDMONTON] == days[0]
    with engine.connect() as conn:
        _at(conn, TORONTO_PAST_MIDNIGHT)
        assert _ids(conn, "tenant_lgm", "journeys_today") == sorted(_jid(loc, today[loc]) for loc in branches)
        assert _ids(conn, "tenant_lgm", "journeys_tomorrow") == sorted(
            _jid(loc, today[loc] + dt.timedelta(days=1)) for loc in branches if today[loc] == days[0]
        )


@pytest.mark.parametrize(
    ("clock", "toronto_day", "vancouver_day"),
    [
        ("2026-03-08T07:30:00Z", "2026-03-08", "2026-03-07"),  # 03:30 EDT (just sprung forward) / 23:30 PST
        ("2026-03-09T04:30:00Z", "2026-03-09", "2026-03-08"),  # 00:30 EDT (23:30 in EST) / 21:30 PDT
        ("2026-11-01T07:30:00Z", "2026-11-01", "2026-11-01"),  # 02:30 EST (just fell back) / 00:30 PDT
        ("2026-11-01T06:30:00Z", "2026-11-01", "2026-10-31"),  # the second 01:30 EST / 23:30 PDT
        ("2026-11-02T04:30:00Z", "2026-11-01", "2026-11-01"),  # 23:30 EST (00:30 in EDT) / 21:30 (UTC-7)
    ],
)
def test_each_branch_date_follows_its_own_dst_change(
    engine: Engine, tenant: Tenant, clock: str, toronto_day: str, vancouver_day: str
) -> None:
    days = [_day(first) + dt.timedelta(days=n) for first in ("2026-03-06", "2026-10-30") for n in range(5)]
    _seed(engine, tenant, [VANCOUVER, TORONTO], days)
    now = dt.datetime.fromisoformat(clock)
    # The database and the pipeline's Python side agree on each branch's date.
    assert tenant.branch(TORONTO).today(now) == _day(toronto_day)
    assert tenant.branch(VANCOUVER).today(now) == _day(vancouver_day)
    with engine.connect() as conn:
        _at(conn, clock)
        assert _ids(conn, "tenant_lgm", "journeys_today") == [
            _jid(TORONTO, _day(toronto_day)),
            _jid(VANCOUVER, _day(vancouver_day)),
        ]


@pytest.mark.parametrize("evening", ["2026-11-27", "2027-01-15"])
@pytest.mark.parametrize("location", [VANCOUVER, CALGARY, WINNIPEG])
def test_a_western_branch_late_evening_is_today_there_and_an_hour_later_tomorrow(
    engine: Engine, tenant: Tenant, evening: str, location: str
) -> None:
    """23:30 and 00:30 on the branch's own clock, as the sync window computes it, whatever the server's data.

    At these instants the machine's PostgreSQL 15 (IANA 2025b: Vancouver on UTC-8 in winter) would
    say 22:30 and 23:30 by its own ``AT TIME ZONE``, both still the evening's date.
    """
    day = _day(evening)
    one = dt.timedelta(days=1)
    seeded = [day - one, day, day + one, day + 2 * one]
    _seed(engine, tenant, [location], seeded)
    branch = tenant.branch(location)
    next_morning = (day + one).isoformat()
    for wall, today in ((f"{evening}T23:30", day), (f"{next_morning}T00:30", day + one)):
        clock = _local(wall, branch.timezone)
        assert branch.window(dt.datetime.fromisoformat(clock)) == [today, today + one]  # Python's window
        with engine.connect() as conn:
            _at(conn, clock)
            assert _ids(conn, "tenant_lgm", "journeys_today") == [_jid(location, today)], wall
            assert _ids(conn, "tenant_lgm", "journeys_tomorrow") == [_jid(location, today + one)], wall
            assert _ids(conn, "tenant_lgm", "journeys_active") == [_jid(location, d) for d in seeded if d >= today]


def _tenant_document(timezone: str, branches: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "tenants": [
            {
                "key": "acme",
                "client_id": "clm_acme",
                "name": "Acme Movers",
                "timezone": timezone,
                "first_service_date": "2026-01-01",
                "smartmoving": {"api_key_env": "ACME_API_KEY", "base_url_env": "ACME_BASE_URL"},
                "branches": branches,
            }
        ]
    }


def test_a_branch_east_of_the_tenant_lives_its_own_later_date(engine: Engine) -> None:
    acme = parse_tenants(
        _tenant_document(
            "America/Vancouver",
            [
                {
                    "location_id": "loc_acme_hfx",
                    "name": "Halifax",
                    "smartmoving_branch_name": "HFX",
                    "timezone": "America/Halifax",
                },
                {"location_id": "loc_acme_van", "name": "Vancouver", "smartmoving_branch_name": "VAN"},
            ],
        )
    )[0]
    migrate(engine, acme)
    rows = [
        journey_row(f"{loc}_{day:%m%d}", client_id="clm_acme", location_id=loc, service_date=day)
        for loc in ("loc_acme_hfx", "loc_acme_van")
        for day in (_day("2026-11-26"), _day("2026-11-27"), _day("2026-11-28"))
    ]
    _insert_journeys(engine, acme, rows)
    with engine.connect() as conn:
        # 00:30 on Nov 27 in Halifax; the evening of Nov 26 in Vancouver, the tenant's own clock.
        _at(conn, "2026-11-27T04:30:00Z")
        assert _ids(conn, "tenant_acme", "journeys_today") == ["jrn_loc_acme_hfx_1127", "jrn_loc_acme_van_1126"]
        assert _ids(conn, "tenant_acme", "journeys_tomorrow") == ["jrn_loc_acme_hfx_1128", "jrn_loc_acme_van_1127"]
        stored = conn.execute(sa.text("SELECT location_id, timezone FROM tenant_acme.locations ORDER BY 1")).all()
    assert [tuple(r) for r in stored] == [("loc_acme_hfx", "America/Halifax"), ("loc_acme_van", "America/Vancouver")]


def test_leads_recent_follows_the_lead_branch_clock_and_the_tenant_clock_without_one(
    engine: Engine, tenant: Tenant
) -> None:
    nov_21, nov_22 = _day("2026-11-21"), _day("2026-11-22")
    rows = [
        lead_row("van_21", nov_21, location_id=VANCOUVER),
        lead_row("tor_21", nov_21, location_id=TORONTO),
        lead_row("tor_22", nov_22, location_id=TORONTO),
        lead_row("none_21", nov_21, location_id=None, branch_name=None),
        lead_row("none_22", nov_22, location_id=None, branch_name=None),
        lead_row("gone_21", nov_21, location_id=GONE),
        lead_row("van_converted", nov_22, location_id=VANCOUVER, converted_opportunity_id="opp_1", status="CONVERTED"),
    ]
    with engine.begin() as conn:
        conn.execution_options(**tenant_options(tenant)).execute(
            leads.insert(), [{k: v for k, v in r.items() if k != "quarantine_reasons"} for r in rows]
        )
    with engine.connect() as conn:
        # Vancouver's today is Nov 27 (its last 7 days start on the 21st), Toronto's and the tenant's Nov 28.
        _at(conn, VANCOUVER_LATE)
        assert _ids(conn, "tenant_lgm", "leads_recent") == ["lead_none_22", "lead_tor_22", "lead_van_21"]
        # An hour earlier Toronto is still on the 27th too.
        _at(conn, "2026-11-28T04:30:00Z")
        assert _ids(conn, "tenant_lgm", "leads_recent") == [
            "lead_gone_21",
            "lead_none_21",
            "lead_none_22",
            "lead_tor_21",
            "lead_tor_22",
            "lead_van_21",
        ]


def test_a_journey_of_a_branch_no_longer_configured_leaves_the_day_views_only(engine: Engine, tenant: Tenant) -> None:
    day = _day("2026-11-28")
    _seed(engine, tenant, [TORONTO, GONE], [day])
    with engine.connect() as conn:
        _at(conn, VANCOUVER_LATE)
        assert _ids(conn, "tenant_lgm", "journeys_today") == ["jrn_tor_1128"]
        assert _ids(conn, "tenant_lgm", "journeys_active") == ["jrn_tor_1128"]
        assert _ids(conn, "tenant_lgm", "journeys_board") == ["jrn_gone_1128", "jrn_tor_1128"]


def test_a_branch_timezone_change_touches_its_row_only(engine: Engine, tenant: Tenant) -> None:
    _seed(engine, tenant, [VANCOUVER], [_day("2026-11-27"), _day("2026-11-28")])
    query = sa.text("SELECT location_id, timezone, updated_at FROM tenant_lgm.locations ORDER BY 1")
    with engine.connect() as conn:
        before = {r.location_id: r for r in conn.execute(query)}
    assert before[VANCOUVER].timezone == "America/Vancouver"
    moved = replace(
        tenant,
        branches=tuple(
            replace(b, timezone="America/Toronto") if b.location_id == VANCOUVER else b for b in tenant.branches
        ),
    )
    assert migrate(engine, moved) == []
    with engine.connect() as conn:
        after = {r.location_id: r for r in conn.execute(query)}
        _at(conn, VANCOUVER_LATE)
        assert _ids(conn, "tenant_lgm", "journeys_today") == ["jrn_van_1128"]  # now on Toronto's date
    assert after[VANCOUVER].timezone == "America/Toronto"
    assert after[VANCOUVER].updated_at > before[VANCOUVER].updated_at
    assert {k: v for k, v in after.items() if k != VANCOUVER} == {k: v for k, v in before.items() if k != VANCOUVER}


@pytest.fixture
def branch_login(database_url: str) -> Iterator[Callable[[], tuple[str, str]]]:
    """A throwaway LOGIN role name and password; the role is dropped afterwards (roles are global)."""
    name, password = f"crm_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
    yield lambda: (name, password)
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


#: The views that read ``locations.timezone``, as migration 6 left them: on the tenant's one clock.
_VERSION_6_VIEWS = {
    "journeys_today": "SELECT * FROM tenant_lgm.journeys_board WHERE service_date = {today}",
    "journeys_tomorrow": "SELECT * FROM tenant_lgm.journeys_board WHERE service_date = {today} + 1",
    "journeys_active": "SELECT * FROM tenant_lgm.journeys_board WHERE service_date >= {today}",
    "journeys_cancelled": "SELECT * FROM tenant_lgm.journeys_board WHERE service_date >= {today}",
    "leads_recent": "SELECT * FROM tenant_lgm.leads WHERE created_date > {today} - 7",
}


def test_migration_7_gives_an_existing_database_its_branch_clocks(
    engine: Engine, tenant: Tenant, database_url: str, branch_login: Callable[[], tuple[str, str]]
) -> None:
    _seed(engine, tenant, [VANCOUVER, TORONTO], [_day("2026-11-27"), _day("2026-11-28")])
    with engine.begin() as conn:
        today = today_sql(conn, tenant, "'America/Toronto'")
        conn.exec_driver_sql("ALTER TABLE tenant_lgm.locations DROP COLUMN timezone CASCADE")  # and the views
        for name, select in _VERSION_6_VIEWS.items():
            conn.exec_driver_sql(
                f"CREATE VIEW tenant_lgm.{name} WITH (security_invoker = true) AS {select.format(today=today)}"
            )
            conn.exec_driver_sql(f"COMMENT ON VIEW tenant_lgm.{name} IS 'lgm:version-6'")
        conn.exec_driver_sql("DELETE FROM tenant_lgm.schema_migrations WHERE version = 7")
        conn.exec_driver_sql(
            "INSERT INTO tenant_lgm.locations (location_id, client_id, name, smartmoving_branch_name) "
            f"VALUES ('{GONE}', 'clm', 'Gone', 'GONE')"
        )
        _at(conn, VANCOUVER_LATE)
        assert _ids(conn, "tenant_lgm", "journeys_today") == ["jrn_tor_1128", "jrn_van_1128"]  # the old clock

    # The migration alone: every row filled (a removed branch with the tenant's zone), then NOT NULL.
    (seven,) = [m for m in MIGRATIONS if m.version == 7]
    with engine.connect() as conn, conn.begin() as transaction:
        seven.apply(conn, tenant)
        filled = dict(conn.execute(sa.text("SELECT location_id, timezone FROM tenant_lgm.locations")).all())
        nullable = conn.execute(
            sa.text(
                "SELECT is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'tenant_lgm' AND table_name = 'locations' AND column_name = 'timezone'"
            )
        ).scalar()
        transaction.rollback()
    assert filled == {b.location_id: b.timezone for b in tenant.branches} | {GONE: tenant.timezone}
    assert filled[VANCOUVER] == "America/Vancouver"
    assert nullable == "NO"

    assert migrate(engine, tenant) == [7]
    login = branch_login()
    grant_reader(engine, tenant, *login, [VANCOUVER])
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT location_id, timezone FROM tenant_lgm.locations")).all())
        _at(conn, VANCOUVER_LATE)
        assert _ids(conn, "tenant_lgm", "journeys_today") == ["jrn_tor_1128", "jrn_van_1127"]
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql(f"UPDATE tenant_lgm.locations SET timezone = NULL WHERE location_id = '{TORONTO}'")
    assert stored == {b.location_id: b.timezone for b in tenant.branches}  # the removed branch's row is gone
    url = make_url(database_url).set(username=login[0], password=login[1]).render_as_string(hide_password=False)
    reader = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with reader.connect() as conn:  # the recreated views are granted to the branch group again
            _at(conn, VANCOUVER_LATE)
            assert _ids(conn, "tenant_lgm", "journeys_today") == ["jrn_van_1127"]
            assert _ids(conn, "tenant_lgm", "journeys_tomorrow") == ["jrn_van_1128"]
    finally:
        reader.dispose()
