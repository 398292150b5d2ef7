"""Branch logins: row access bound to the login's branches by its role, not by a setting it chooses."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lgm_pipeline.storage.access import (
    AccessError,
    branch_reader_role,
    crm_writer_role,
    grant_reader,
    reader_role,
    writer_role,
)
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.io_manager import PostgresIOManager
from lgm_pipeline.storage.migrations import migrate
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline_tests import payloads
from lgm_pipeline_tests.leads.test_leads_storage import AT as LEADS_AT
from lgm_pipeline_tests.leads.test_leads_storage import lead_row
from lgm_pipeline_tests.storage.conftest import (
    CALGARY,
    DAILY,
    DAY,
    FETCHED_AT,
    TORONTO,
    Writer,
    journey_key,
    journey_row,
)

LATER = FETCHED_AT + dt.timedelta(hours=3)
LEADS_LATER = LEADS_AT + dt.timedelta(hours=1)
TORONTO_EVENING = "2026-11-26T03:00:00Z"  # 22:00 on DAY in the tenant's timezone
JOURNEY_REASON = [{"rule": "booked_needs_cost", "column": "estimated_cost", "check": "not_null", "value": None}]
LEAD_REASON = [{"rule": "lead_contact", "column": "name", "check": "name_and_a_phone_or_email", "value": None}]
BRANCH_NAMES = {CALGARY: payloads.CALGARY, TORONTO: payloads.TORONTO}

#: What ``lgm.allowed_locations`` narrows: the branch-scoped tables and the views over them.
NARROWED_BY_SETTING = (
    "journeys",
    "journeys_quarantine",
    "leads",
    "leads_quarantine",
    "journeys_board",
    "journeys_today",
    "leads_recent",
)

Connect = Callable[..., Engine]


@pytest.fixture
def logins(database_url: str) -> Iterator[Callable[[], tuple[str, str]]]:
    """Makes throwaway LOGIN role names and passwords; the roles are dropped afterwards (roles are global)."""
    made: list[str] = []

    def make() -> tuple[str, str]:
        made.append(f"crm_{uuid.uuid4().hex[:10]}")
        return made[-1], f"pw-{uuid.uuid4().hex}"

    yield make
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def connect(database_url: str) -> Iterator[Connect]:
    """Engines connecting as a login (SCRAM over TCP where the server asks for a password)."""
    engines: list[Engine] = []

    def as_login(login: tuple[str, str]) -> Engine:
        url = make_url(database_url).set(username=login[0], password=login[1])
        engines.append(create_engine(url.render_as_string(hide_password=False), poolclass=sa.pool.NullPool))
        return engines[-1]

    yield as_login
    for engine in engines:
        engine.dispose()


def _write_leads(io_manager: PostgresIOManager, rows: list[dict]) -> None:
    context = dg.build_output_context(
        asset_key=dg.AssetKey(["lgm", "leads"]),
        partition_key=DAY.isoformat(),
        asset_partitions_def=DAILY,
        run_id=f"run-{uuid.uuid4().hex[:8]}",
    )
    io_manager.handle_output(context, pd.DataFrame(rows))


def _branch_journeys(branch: str, *, later: bool = False) -> pd.DataFrame:
    """Per branch: a journey updated later, one deleted later, and one in quarantine."""
    p = "cal" if branch == CALGARY else "tor"
    kept = journey_row(f"{p}_kept", location_id=branch, branch_name=BRANCH_NAMES[branch])
    if later:
        kept |= {"customer_name": "Jane Doe-Smith", "source_fetched_at": LATER}
    rows = [kept, journey_row(f"{p}_bad", location_id=branch, estimated_cost=None, quarantine_reasons=JOURNEY_REASON)]
    if not later:
        rows.append(journey_row(f"{p}_gone", location_id=branch))
    return pd.DataFrame(rows)


def _branch_leads(*, later: bool = False) -> list[dict]:
    rows = []
    for p, branch in (("cal", CALGARY), ("tor", TORONTO)):
        where = {"location_id": branch, "branch_name": BRANCH_NAMES[branch]}
        rows += [
            lead_row(
                f"{p}_lead", **where, **({"name": "Amélie T.", "source_fetched_at": LEADS_LATER} if later else {})
            ),
            lead_row(f"{p}_lead_bad", **where, name=None, quarantine_reasons=LEAD_REASON),
        ]
    return rows


def _seed(writer: Writer, engine: Engine) -> None:
    """Two branches' journeys, quarantine, audit (insert, update, delete), progress, leads and raw rows."""
    for later in (False, True):
        for branch in (CALGARY, TORONTO):
            writer.journeys(_branch_journeys(branch, later=later), key=journey_key(DAY, branch))
        _write_leads(writer.io_manager, _branch_leads(later=later))
    # Booked opportunities whose job has no date yet: each branch's unscheduled work.
    opportunities = [
        payloads.opportunity(DAY, branch=payloads.CALGARY, jobs=[payloads.job(DAY, 1, jobDate=None)]),
        payloads.opportunity(DAY, branch=payloads.TORONTO, jobs=[payloads.job(DAY, 2, jobDate=None)]),
    ]
    customers, opps, jobs = payloads.raw_frames(DAY, opportunities)
    writer.raw("smartmoving_customers", customers)
    writer.raw("smartmoving_opportunities", opps)
    writer.raw("smartmoving_jobs", jobs)
    with engine.begin() as conn:
        for p, branch in (("cal", CALGARY), ("tor", TORONTO)):
            conn.execute(
                sa.text(
                    "INSERT INTO tenant_lgm.journey_progress (journey_id, stage, by) VALUES (:j, 'EN_ROUTE', 'crew')"
                ),
                {"j": f"jrn_{p}_kept"},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO tenant_lgm.raw_branches (branch_id, name, payload, fetched_at, run_id) "
                    "VALUES (:id, :name, CAST(:payload AS jsonb), now(), 'run')"
                ),
                {
                    "id": f"br_{p}",
                    "name": BRANCH_NAMES[branch],
                    "payload": json.dumps({"dispatchLocation": {"fullAddress": f"1 {p} Depot"}}),
                },
            )
            conn.execute(
                sa.text(
                    "INSERT INTO tenant_lgm.raw_job_timelines "
                    "(service_date, job_id, opportunity_id, start_at, end_at, payload, fetched_at, run_id) "
                    "VALUES (:d, :job, :opp, now(), now(), '{}', now(), 'run')"
                ),
                {"d": DAY, "job": f"{p}_kept", "opp": f"opp_{p}_kept"},
            )


def _ids(conn: sa.Connection, sql: str) -> list[str]:
    return sorted(str(v) for v in conn.execute(sa.text(sql)).scalars())


def _allow(conn: sa.Connection, locations: str) -> None:
    conn.execute(sa.text("SELECT set_config('lgm.allowed_locations', :l, false)"), {"l": locations})


def _visible(conn: sa.Connection) -> dict[str, list[str]]:
    """What the session sees of every branch-bearing table and view, as ids (audit: id:action)."""
    conn.execute(sa.text("SELECT set_config('lgm.clock', :t, false)"), {"t": TORONTO_EVENING})
    return {
        "journeys": _ids(conn, "SELECT id FROM tenant_lgm.journeys"),
        "journeys_quarantine": _ids(conn, "SELECT id FROM tenant_lgm.journeys_quarantine"),
        "journey_audit": _ids(conn, "SELECT journey_id || ':' || action FROM tenant_lgm.journey_audit"),
        "journey_progress": _ids(conn, "SELECT journey_id FROM tenant_lgm.journey_progress"),
        "leads": _ids(conn, "SELECT id FROM tenant_lgm.leads"),
        "leads_quarantine": _ids(conn, "SELECT id FROM tenant_lgm.leads_quarantine"),
        "lead_audit": _ids(conn, "SELECT lead_id || ':' || action FROM tenant_lgm.lead_audit"),
        "locations": _ids(conn, "SELECT location_id FROM tenant_lgm.locations"),
        "raw_branches": _ids(conn, "SELECT branch_id FROM tenant_lgm.raw_branches"),
        "raw_job_timelines": _ids(conn, "SELECT job_id FROM tenant_lgm.raw_job_timelines"),
        "raw_opportunities": _ids(conn, "SELECT payload -> 'branch' ->> 'name' FROM tenant_lgm.raw_opportunities"),
        "journeys_board": _ids(
            conn,
            "SELECT id || ' ' || branch || ' ' || dispatch_address || ' ' || progress_stage "
            "|| ' ' || (arrival_window_start IS NOT NULL) FROM tenant_lgm.journeys_board",
        ),
        "journeys_today": _ids(conn, "SELECT id FROM tenant_lgm.journeys_today"),
        "unscheduled_jobs": _ids(conn, "SELECT location_id FROM tenant_lgm.unscheduled_jobs"),
        "leads_recent": _ids(conn, "SELECT id FROM tenant_lgm.leads_recent"),
    }


def _expected(p: str, location: str) -> dict[str, list[str]]:
    """What a login bound to one branch (``p``: cal/tor) sees."""
    branch = "Calgary" if p == "cal" else "Toronto"
    return {
        "journeys": [f"jrn_{p}_kept"],
        "journeys_quarantine": [f"jrn_{p}_bad"],
        # The insert row of a journey since deleted names no branch: tenant-wide readers see it.
        "journey_audit": sorted([f"jrn_{p}_kept:insert", f"jrn_{p}_kept:update", f"jrn_{p}_gone:delete"]),
        "journey_progress": [f"jrn_{p}_kept"],
        "leads": [f"lead_{p}_lead"],
        "leads_quarantine": [f"lead_{p}_lead_bad"],
        "lead_audit": sorted([f"lead_{p}_lead:insert", f"lead_{p}_lead:update"]),
        "locations": [location],
        "raw_branches": [f"br_{p}"],
        "raw_job_timelines": [f"{p}_kept"],
        "raw_opportunities": [BRANCH_NAMES[location]],
        "journeys_board": [f"jrn_{p}_kept {branch} 1 {p} Depot EN_ROUTE true"],
        "journeys_today": [f"jrn_{p}_kept"],
        "unscheduled_jobs": [location],
        "leads_recent": [f"lead_{p}_lead"],
    }


def test_a_branch_login_reads_its_branch_only_whatever_it_sets(
    writer: Writer, engine: Engine, tenant: Tenant, logins: Callable[[], tuple[str, str]], connect: Connect
) -> None:
    _seed(writer, engine)
    toronto = logins()
    grant_reader(engine, tenant, *toronto, [TORONTO])
    with connect(toronto).connect() as conn:
        assert _visible(conn) == _expected("tor", TORONTO)
        # The setting the session chooses narrows at most: it never reaches another branch.
        expected = _expected("tor", TORONTO)
        _allow(conn, CALGARY)
        seen = _visible(conn)
        assert all(set(seen[name]) <= set(rows) for name, rows in expected.items())  # no Calgary row anywhere
        assert seen["journeys"] == seen["journeys_board"] == seen["leads"] == []
        _allow(conn, f"{CALGARY},{TORONTO}")
        assert _visible(conn) == _expected("tor", TORONTO)
        # session_user binds the rows: becoming the group changes nothing, another role is refused.
        conn.execute(sa.text(f'SET ROLE "{branch_reader_role(tenant, engine.url.database)}"'))
        assert _visible(conn) == _expected("tor", TORONTO)
        conn.execute(sa.text("RESET ROLE"))
        assert _ids(conn, "SELECT login || ' ' || location_id FROM tenant_lgm.branch_logins") == [
            f"{toronto[0]} {TORONTO}"
        ]
    database = engine.url.database
    for role in (
        reader_role(tenant, database),
        crm_writer_role(tenant, database),
        writer_role(tenant, database),
        "postgres",
    ):
        with connect(toronto).connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text(f'SET ROLE "{role}"'))
    # Raw tables holding every branch's customers are not granted at all.
    for table in ("raw_customers", "raw_jobs", "raw_leads", "sync_runs", "schema_migrations"):
        with connect(toronto).connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text(f"SELECT count(*) FROM tenant_lgm.{table}"))
    for statement in (
        f"INSERT INTO tenant_lgm.branch_logins (login, location_id) VALUES (session_user, '{CALGARY}')",
        f"UPDATE tenant_lgm.branch_logins SET location_id = '{CALGARY}'",
        "DELETE FROM tenant_lgm.branch_logins",
        "UPDATE tenant_lgm.journeys SET status = 'COMPLETED'",
        "DELETE FROM tenant_lgm.journey_audit",
        "INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('jrn_tor_kept', 'ONSITE')",
        "UPDATE tenant_lgm.leads SET name = 'x'",
        "CREATE TABLE tenant_lgm.mine (x int)",
    ):
        with connect(toronto).begin() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text(statement))


def test_tenant_wide_readers_and_the_crm_writer_keep_every_branch(
    writer: Writer, engine: Engine, tenant: Tenant, logins: Callable[[], tuple[str, str]], connect: Connect
) -> None:
    _seed(writer, engine)
    grant_reader(engine, tenant, *logins(), [TORONTO])  # a branch login exists beside them
    reader, crm = logins(), logins()
    grant_reader(engine, tenant, *reader)
    grant_reader(engine, tenant, *crm)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'REVOKE "{reader_role(tenant, engine.url.database)}" FROM {crm[0]}')
        conn.exec_driver_sql(f'GRANT "{crm_writer_role(tenant, engine.url.database)}" TO {crm[0]}')
    toronto, calgary = _expected("tor", TORONTO), _expected("cal", CALGARY)
    for login in (reader, crm):
        with connect(login).connect() as conn:
            seen = _visible(conn)
            assert seen["journeys"] == sorted(toronto["journeys"] + calgary["journeys"])
            assert seen["journeys_board"] == sorted(toronto["journeys_board"] + calgary["journeys_board"])
            assert seen["unscheduled_jobs"] == [CALGARY, TORONTO]
            assert len(seen["journey_audit"]) == 8  # with the insert rows of deleted journeys
            assert len(seen["lead_audit"]) == 4
            assert len(seen["locations"]) == len(tenant.location_ids)
            # The CRM's per-request filter still narrows the branch-scoped tables.
            _allow(conn, TORONTO)
            narrowed = _visible(conn)
            for table in NARROWED_BY_SETTING:
                assert narrowed[table] == toronto[table]
            assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.raw_customers")).scalar() == 2
        with connect(login).connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.branch_logins"))  # the owner's business
    with connect(crm).begin() as conn:
        conn.execute(
            sa.text("INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('jrn_cal_kept', 'ONSITE')")
        )
    with connect(crm).begin() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        conn.execute(sa.text("UPDATE tenant_lgm.journeys SET status = 'COMPLETED'"))


def _memberships(engine: Engine, login: str) -> list[str]:
    with engine.connect() as conn:
        return _ids(
            conn,
            f"SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            f"WHERE m.member = to_regrole('{login}')",
        )


def test_re_running_moves_the_login_between_branches_and_back_to_tenant_wide(
    writer: Writer, engine: Engine, tenant: Tenant, logins: Callable[[], tuple[str, str]], connect: Connect
) -> None:
    _seed(writer, engine)
    login = logins()
    grant_reader(engine, tenant, *login)
    grant_reader(engine, tenant, *login, [TORONTO])
    assert _memberships(engine, login[0]) == [branch_reader_role(tenant, engine.url.database)]
    grant_reader(engine, tenant, *login, [CALGARY])
    with connect(login).connect() as conn:
        assert _visible(conn) == _expected("cal", CALGARY)
    grant_reader(engine, tenant, *login, [CALGARY, TORONTO])
    with connect(login).connect() as conn:
        assert _visible(conn)["journeys"] == ["jrn_cal_kept", "jrn_tor_kept"]
        _allow(conn, TORONTO)  # a two-branch manager may narrow the branch-scoped tables per request too
        seen, toronto = _visible(conn), _expected("tor", TORONTO)
        for table in NARROWED_BY_SETTING:
            assert seen[table] == toronto[table]
    grant_reader(engine, tenant, *login)
    assert _memberships(engine, login[0]) == [reader_role(tenant, engine.url.database)]
    with connect(login).connect() as conn:
        assert len(_visible(conn)["journey_audit"]) == 8


def test_grant_reader_refuses_unknown_branches_and_logins_that_read_everything(
    engine: Engine, tenant: Tenant, logins: Callable[[], tuple[str, str]]
) -> None:
    login = logins()
    with pytest.raises(AccessError) as error:
        grant_reader(engine, tenant, *login, ["loc_lgm_nowhere_001"])
    message = str(error.value)
    assert "loc_lgm_nowhere_001" in message and all(loc in message for loc in tenant.location_ids)
    assert "\n" not in message
    # Membership of a tenant-wide group through another role would void the bound.
    grant_reader(engine, tenant, *login)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE {login[0]}_via NOLOGIN IN ROLE "{reader_role(tenant, engine.url.database)}"')
        conn.exec_driver_sql(f"GRANT {login[0]}_via TO {login[0]}")
    try:
        with pytest.raises(AccessError, match=f"reads every branch through {reader_role(tenant, engine.url.database)}"):
            grant_reader(engine, tenant, *login, [TORONTO])
        assert _memberships(engine, login[0]) == sorted(
            [reader_role(tenant, engine.url.database), f"{login[0]}_via"]
        )  # rolled back
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP ROLE {login[0]}_via")
    bypass = logins()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {bypass[0]} LOGIN BYPASSRLS")
    with pytest.raises(AccessError, match="not a plain login"):
        grant_reader(engine, tenant, *bypass, [TORONTO])


def test_lgm_db_grant_reader_binds_a_login_to_a_branch(
    writer: Writer,
    engine: Engine,
    tenant: Tenant,
    logins: Callable[[], tuple[str, str]],
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lgm_pipeline.cli.main import main  # the CLI module loads Dagster and more: only this test needs it

    _seed(writer, engine)
    login = logins()
    monkeypatch.setenv("TORONTO_READER_PASSWORD", login[1])
    command = [
        "db",
        "grant-reader",
        "--tenant",
        "lgm",
        "--login",
        login[0],
        "--password-env",
        "TORONTO_READER_PASSWORD",
    ]
    assert main([*command, "--location", TORONTO]) == 0
    assert f"only {TORONTO}" in capsys.readouterr().out
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :n"), {"n": login[0]})
        assert stored.scalar().startswith("SCRAM-SHA-256$")
    with connect(login).connect() as conn:
        _allow(conn, CALGARY)
        assert _ids(conn, "SELECT id FROM tenant_lgm.journeys") == []
        _allow(conn, "")
        assert _visible(conn) == _expected("tor", TORONTO)

    assert main([*command, "--location", "loc_lgm_toronto_002"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lgm: tenant lgm has no location loc_lgm_toronto_002; configured: loc_lgm_calgary_001")
    assert "\n" not in err
    with connect(login).connect() as conn:  # a refused re-run leaves the binding as it was
        assert _ids(conn, "SELECT id FROM tenant_lgm.journeys") == ["jrn_tor_kept"]


def test_migration_6_binds_branch_logins_on_an_existing_database(
    writer: Writer, engine: Engine, tenant: Tenant, logins: Callable[[], tuple[str, str]], connect: Connect
) -> None:
    _seed(writer, engine)
    # The schema as migration 5 left it: no bindings table, no branch policies or grants.
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE tenant_lgm.branch_logins CASCADE")  # and the policies reading it
        for table in ("journey_audit", "lead_audit", "journey_progress", "locations", "raw_branches"):
            conn.exec_driver_sql(f"DROP POLICY lgm_all_rows ON tenant_lgm.{table}")
            conn.exec_driver_sql(f"ALTER TABLE tenant_lgm.{table} DISABLE ROW LEVEL SECURITY")
        conn.exec_driver_sql(
            f'REVOKE ALL ON ALL TABLES IN SCHEMA tenant_lgm FROM "{branch_reader_role(tenant, engine.url.database)}"'
        )
        conn.exec_driver_sql("DELETE FROM tenant_lgm.schema_migrations WHERE version = 6")
    assert migrate(engine, tenant) == [6]
    login = logins()
    grant_reader(engine, tenant, *login, [TORONTO])
    with connect(login).connect() as conn:
        assert _visible(conn) == _expected("tor", TORONTO)
