"""Issue 25, parts 1, 3 and 4: the boundaries between tenants, databases and branches, and the CRM's progress.

Each test reproduces one finding of the security probe. Roles are cluster-wide while each test has
its own database: tenant keys and logins are unique per test, group roles are named per database
(the shared conftest drops a test database's groups with it), so the tests can run twice, or at
once, on one server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lgm_pipeline.naming import GROUP_KINDS, ROLE_SEPARATOR, database_digest
from lgm_pipeline.storage.access import (
    AccessError,
    crm_writer_role,
    grant_reader,
    groups_in,
    legacy_group_role,
    reader_role,
)
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.io_manager import PostgresIOManager
from lgm_pipeline.storage.migrations import migrate
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.tenants.config import Tenant, get_tenant, parse_tenants
from lgm_pipeline_tests import payloads
from lgm_pipeline_tests.conftest import migrated_engine
from lgm_pipeline_tests.storage.conftest import CALGARY, DAY, TORONTO, Writer, journey_key, journey_row

Login = tuple[str, str]


@pytest.fixture
def tenant() -> Tenant:
    return get_tenant("lgm")


@pytest.fixture
def engine(database_url: str, tenant: Tenant) -> Engine:
    return migrated_engine(tenant)


@pytest.fixture
def writer(database_url: str, engine: Engine) -> Writer:
    return Writer(PostgresIOManager.for_tenants(PostgresResource(), load_tenants()))


@pytest.fixture
def logins(postgres_server_url: str) -> Iterator[Callable[[], Login]]:
    """Makes throwaway login names and passwords; the roles are dropped afterwards (roles are global)."""
    made: list[str] = []

    def make() -> Login:
        made.append(f"sec_{uuid.uuid4().hex[:10]}")
        return made[-1], f"pw-{uuid.uuid4().hex}"

    yield make
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def connect(database_url: str) -> Iterator[Callable[..., Engine]]:
    """Engines connecting as a login, to the test's database or another one of the server."""
    engines: list[Engine] = []

    def as_login(login: Login, database: str | None = None) -> Engine:
        url = make_url(database_url).set(username=login[0], password=login[1])
        if database is not None:
            url = url.set(database=database)
        engines.append(create_engine(url.render_as_string(hide_password=False), poolclass=sa.pool.NullPool))
        return engines[-1]

    yield as_login
    for made in engines:
        made.dispose()


def _tenants(*keys: str) -> tuple[Tenant, ...]:
    return parse_tenants(
        {
            "tenants": [
                {
                    "key": key,
                    "client_id": f"clm_{key}",
                    "name": f"{key} Movers",
                    "timezone": "America/Toronto",
                    "first_service_date": "2026-01-01",
                    "smartmoving": {"api_key_env": "ACME_API_KEY", "base_url_env": "ACME_BASE_URL"},
                    "branches": [{"location_id": f"loc_{key}_a", "name": "Alpha", "smartmoving_branch_name": "ALPHA"}],
                }
                for key in keys
            ]
        }
    )


def _journey(engine: Engine, tenant: Tenant, journey_id: str) -> None:
    """One journey row written by the pipeline's own connection (the owner)."""
    row = journey_row(journey_id, id=journey_id, location_id=tenant.location_ids[0], client_id=tenant.client_id)
    row.pop("quarantine_reasons")
    columns = ", ".join(f'"{c}"' for c in row)
    values = ", ".join(f"CAST(:{c} AS jsonb)" if isinstance(v, (list, dict)) else f":{c}" for c, v in row.items())
    params = {c: (json.dumps(v) if isinstance(v, (list, dict)) else v) for c, v in row.items()}
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {tenant.schema}.journeys ({columns}) VALUES ({values})"), params)


def _create_login(engine: Engine, login: Login, *groups: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {login[0]} LOGIN PASSWORD '{login[1]}'")
        for group in groups:
            conn.exec_driver_sql(f'GRANT "{group}" TO {login[0]}')


def _denied(engine: Engine, statement: str, match: str = "permission denied") -> None:
    with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError, match=match):
        conn.execute(sa.text(statement))


# --- 1. role names -------------------------------------------------------------------------------


def test_tenant_keys_sharing_a_prefix_get_twelve_groups_and_no_tenant_reaches_another(
    engine: Engine, database_url: str, logins: Callable[[], Login], connect: Callable[..., Engine]
) -> None:
    """Finding: spx, spx_crm and spx_branch made 10 roles; spx's CRM login wrote spx_crm's journeys."""
    p = f"s{uuid.uuid4().hex[:8]}"
    spx, spx_crm, spx_branch = _tenants(p, f"{p}_crm", f"{p}_branch")
    for t in (spx, spx_crm, spx_branch):
        assert migrate(engine, t)  # every migration applied, no refusal
    database = engine.url.database
    names = [role for t in (spx, spx_crm, spx_branch) for role in groups_in(t, database).by_kind().values()]
    assert len(set(names)) == 12 and all(len(n) <= 63 for n in names)
    with engine.connect() as conn:
        existing = conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:n)"), {"n": names})
        assert sorted(existing.scalars()) == sorted(names)
    for t in (spx_crm, spx_branch):
        _journey(engine, t, "jrn_other")

    crm, branch = logins(), logins()
    _create_login(engine, crm, crm_writer_role(spx, database))
    _create_login(engine, branch, groups_in(spx, database).branch_reader)
    _denied(connect(crm), f"UPDATE {spx_crm.schema}.journeys SET status = 'COMPLETED'")
    _denied(connect(crm), f"DELETE FROM {spx_crm.schema}.journeys")
    _denied(connect(crm), f"SELECT count(*) FROM {spx_crm.schema}.journeys")
    _denied(connect(branch), f"SELECT count(*) FROM {spx_branch.schema}.journeys")
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {spx_crm.schema}.journeys")).scalar() == 1


def test_a_key_that_cannot_name_its_roles_alone_is_refused_when_loaded() -> None:
    """The load-time check: the separator is never in a key, and the longest name fits PostgreSQL's 63 bytes."""
    from lgm_pipeline.naming import role_name_problem

    assert role_name_problem("a" * 31) is None  # the longest key the tenants file accepts
    assert role_name_problem(f"spx{ROLE_SEPARATOR}crm") is not None
    assert role_name_problem("a" * 40) is not None  # would be truncated, and two such keys one name
    with pytest.raises(ValueError, match="key"):
        _tenants(f"spx{ROLE_SEPARATOR}crm")


def test_a_group_granted_in_one_database_reads_nothing_in_another(
    engine: Engine,
    tenant: Tenant,
    postgres_server_url: str,
    logins: Callable[[], Login],
    connect: Callable[..., Engine],
) -> None:
    """Finding: a tenant-wide reader granted in staging read tenant_lgm in every database of the server."""
    other = f"lgm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{other}"'))
    production = create_engine(
        make_url(engine.url.render_as_string(hide_password=False)).set(database=other), poolclass=sa.pool.NullPool
    )
    try:
        migrate(production, tenant)
        _journey(production, tenant, "jrn_production")
        reader = logins()
        grant_reader(engine, tenant, *reader)  # granted in "staging", the test's database
        with connect(reader).connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.journeys")).scalar() == 0
        _denied(connect(reader, other), "SELECT count(*) FROM tenant_lgm.journeys")
        assert reader_role(tenant, engine.url.database) != reader_role(tenant, other)
    finally:
        production.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)'))
            pattern = f"lgm{ROLE_SEPARATOR}%{ROLE_SEPARATOR}{database_digest(other)}{ROLE_SEPARATOR}%"
            for role in conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"), {"p": pattern}):
                conn.execute(sa.text(f'DROP ROLE "{role[0]}"'))
        admin.dispose()


@pytest.fixture
def legacy_roles(database_url: str) -> Iterator[list[str]]:
    """Names of pre-migration-12 groups a test makes; whatever is left of them is dropped afterwards."""
    made: list[str] = []
    yield made
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        for role in made:
            if conn.execute(sa.text("SELECT to_regrole(:r)"), {"r": role}).scalar() is not None:
                conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
                conn.execute(sa.text(f'DROP ROLE "{role}"'))
    admin.dispose()


def _legacy_group(conn: sa.Connection, tenant: Tenant, kind: str, made: list[str]) -> str:
    """A group as migrations 3-11 left it: ``lgm_<key>_<kind>``, USAGE and SELECT on the schema, default
    privileges, named in the branch-scope policy."""
    role = legacy_group_role(tenant.key, kind)
    if role not in made:
        made.append(role)
        conn.exec_driver_sql(f'CREATE ROLE "{role}" NOLOGIN')
    schema = tenant.schema
    conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA {schema} TO "{role}"')
    conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO "{role}"')
    conn.exec_driver_sql(f'ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO "{role}"')
    conn.exec_driver_sql(f"DROP POLICY lgm_branch_scope ON {schema}.journeys")
    conn.exec_driver_sql(f'CREATE POLICY lgm_branch_scope ON {schema}.journeys TO "{role}" USING (true)')
    return role


def test_migration_12_carries_the_old_groups_members_and_drops_the_old_groups(
    engine: Engine, legacy_roles: list[str], logins: Callable[[], Login], connect: Callable[..., Engine]
) -> None:
    """Existing logins keep working through the new groups; an old name two tenants shared is carried to neither."""
    p = f"s{uuid.uuid4().hex[:8]}"
    spx, spx_crm = _tenants(p, f"{p}_crm")
    for t in (spx, spx_crm):
        migrate(engine, t)
        _journey(engine, t, "jrn_1")
    reader, shared = logins(), logins()
    with engine.begin() as conn:
        old_reader = _legacy_group(conn, spx, "reader", legacy_roles)
        # lgm_<p>_crm_writer: spx's CRM group and spx_crm's writer group, as before this change.
        _legacy_group(conn, spx, "crm_writer", legacy_roles)
        ambiguous = _legacy_group(conn, spx_crm, "writer", legacy_roles)
        assert ambiguous == legacy_group_role(spx.key, "crm_writer")
        conn.exec_driver_sql(f"DELETE FROM {spx.schema}.schema_migrations WHERE version = 12")
        conn.exec_driver_sql(f"DELETE FROM {spx_crm.schema}.schema_migrations WHERE version = 12")
    _create_login(engine, reader, old_reader)
    _create_login(engine, shared, ambiguous)

    assert migrate(engine, spx) == [12]
    assert migrate(engine, spx_crm) == [12]
    database = engine.url.database
    with connect(reader).connect() as conn:  # still reads its tenant, now through the new group
        assert conn.execute(sa.text(f"SELECT count(*) FROM {spx.schema}.journeys")).scalar() == 1
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:r)"), {"r": legacy_roles})
        assert list(left) == []  # every old group dropped once no schema used it
        member = "SELECT pg_has_role(:l, :g, 'MEMBER')"
        assert conn.execute(sa.text(member), {"l": reader[0], "g": reader_role(spx, database)}).scalar()
    # Whose member the shared name's login was cannot be told: it reads neither tenant until an admin says.
    _denied(connect(shared), f"SELECT count(*) FROM {spx.schema}.journeys")
    _denied(connect(shared), f"SELECT count(*) FROM {spx_crm.schema}.journeys")


# --- 3. every table bounds a branch login --------------------------------------------------------


def _seed_two_branches(writer: Writer, engine: Engine) -> None:
    for branch in (CALGARY, TORONTO):
        p = "cal" if branch == CALGARY else "tor"
        writer.journeys(pd.DataFrame([journey_row(f"{p}_1", location_id=branch)]), key=journey_key(DAY, branch))
    opportunities = [
        payloads.opportunity(DAY, branch=payloads.CALGARY, jobs=[payloads.job(DAY, 1)]),
        payloads.opportunity(DAY, branch=payloads.TORONTO, jobs=[payloads.job(DAY, 2)]),
    ]
    customers, opps, jobs = payloads.raw_frames(DAY, opportunities)
    writer.raw("smartmoving_customers", customers)
    writer.raw("smartmoving_opportunities", opps)
    writer.raw("smartmoving_jobs", jobs)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tenant_lgm.raw_leads (created_date, lead_id, payload, fetched_at, run_id) "
                "VALUES (:d, 'lead_cal', '{\"branch\": {\"name\": \"CALGARY\"}}', now(), 'run')"
            ),
            {"d": DAY},
        )


def _visible(conn: sa.Connection) -> dict[str, Any]:
    def rows(sql: str) -> list[Any]:
        return sorted(conn.execute(sa.text(sql)).scalars(), key=str)

    return {
        "journeys": rows("SELECT location_id FROM tenant_lgm.journeys"),
        "raw_customers": rows("SELECT customer_id FROM tenant_lgm.raw_customers"),
        "raw_jobs": rows("SELECT job_id FROM tenant_lgm.raw_jobs"),
        "raw_leads": rows("SELECT lead_id FROM tenant_lgm.raw_leads"),
        "sync_runs": rows("SELECT coalesce(location_id, '-') FROM tenant_lgm.sync_runs"),
        "journeys_board": rows("SELECT location_id FROM tenant_lgm.journeys_board"),
    }


def test_a_branch_login_given_the_crm_writer_group_still_reads_only_its_branches(
    writer: Writer, engine: Engine, tenant: Tenant, logins: Callable[[], Login], connect: Callable[..., Engine]
) -> None:
    """Finding: a branch login an admin also made a CRM writer read every branch's raw_customers,
    raw_leads and sync_runs."""
    _seed_two_branches(writer, engine)
    with engine.connect() as conn:  # what there is to leak
        assert conn.execute(
            sa.text("SELECT count(*) FROM tenant_lgm.sync_runs WHERE location_id = :l"), {"l": CALGARY}
        ).scalar()
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.raw_customers")).scalar() == 2
    toronto = logins()
    grant_reader(engine, tenant, *toronto, [TORONTO])
    crm_group = crm_writer_role(tenant, engine.url.database)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'GRANT "{crm_group}" TO {toronto[0]}')  # the admin's slip
    expected = {
        "journeys": [TORONTO],
        "raw_customers": [],
        "raw_jobs": [],
        "raw_leads": [],
        "sync_runs": [TORONTO],
        "journeys_board": [TORONTO],
    }
    with connect(toronto).connect() as conn:
        assert _visible(conn) == expected
        conn.execute(sa.text(f'SET ROLE "{crm_group}"'))  # becoming the group changes nothing either
        assert _visible(conn) == expected
        conn.execute(sa.text("SELECT set_config('lgm.allowed_locations', '', false)"))
        assert _visible(conn) == expected
    # It may record progress on its branch's journeys only (the CRM group's right, the branch's bound).
    with connect(toronto).begin() as conn:
        conn.execute(
            sa.text("INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('jrn_tor_1', 'ONSITE')")
        )
    _denied(
        connect(toronto),
        "INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('jrn_cal_1', 'ONSITE')",
        match="row-level security",
    )


def test_grant_reader_leaves_a_login_it_did_not_create_alone_unless_told_to_replace(
    engine: Engine,
    tenant: Tenant,
    logins: Callable[[], Login],
    connect: Callable[..., Engine],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Finding: grant-reader on an existing login silently replaced its password or revoked its other grants."""
    from lgm_pipeline.cli.main import main

    crm = logins()
    crm_group = crm_writer_role(tenant, engine.url.database)
    _create_login(engine, crm, crm_group)  # the CRM's own login, made by an admin
    with pytest.raises(AccessError, match="not created by grant-reader"):
        grant_reader(engine, tenant, crm[0], "another password", [TORONTO])
    monkeypatch.setenv("SEC_PASSWORD", "another password")
    command = ["db", "grant-reader", "--tenant", "lgm", "--login", crm[0], "--password-env", "SEC_PASSWORD"]
    assert main([*command, "--location", TORONTO]) == 2
    err = capsys.readouterr().err.strip()
    assert "--replace" in err and "\n" not in err
    with connect(crm).connect() as conn:  # the password and the CRM group are as they were
        assert conn.execute(sa.text("SELECT pg_has_role(session_user, :g, 'MEMBER')"), {"g": crm_group}).scalar()

    assert main([*command, "--location", TORONTO, "--replace"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"password of existing login {crm[0]} replaced" in out
    assert f"left group {crm_group}" in out
    assert any(line.startswith(f"bound to {TORONTO}") for line in out)

    # A login grant-reader created: re-running needs no --replace and says what it changes.
    mine = logins()
    assert grant_reader(engine, tenant, *mine) == [
        f"login {mine[0]} created",
        f"joined group {reader_role(tenant, engine.url.database)} (reads every branch of tenant_lgm)",
    ]
    assert grant_reader(engine, tenant, *mine) == [f"password of existing login {mine[0]} replaced"]


# --- 4. journey_progress -------------------------------------------------------------------------


@pytest.fixture
def crm(
    writer: Writer, engine: Engine, tenant: Tenant, logins: Callable[[], Login], connect: Callable[..., Engine]
) -> tuple[str, Engine]:
    """A CRM login (member of the CRM writer group) and its engine; journeys jrn_cal_1 and jrn_tor_1 exist."""
    for branch, p in ((CALGARY, "cal"), (TORONTO, "tor")):
        writer.journeys(pd.DataFrame([journey_row(f"{p}_1", location_id=branch)]), key=journey_key(DAY, branch))
    login = logins()
    _create_login(engine, login, crm_writer_role(tenant, engine.url.database))
    return login[0], connect(login)


def _record(engine: Engine, values: str, columns: str = "journey_id, stage") -> list[Any]:
    with engine.begin() as conn:
        return list(
            conn.execute(
                sa.text(f"INSERT INTO tenant_lgm.journey_progress ({columns}) VALUES ({values}) RETURNING *")
            ).one()
        )


def test_progress_of_a_journey_that_does_not_exist_is_refused(crm: tuple[str, Engine], engine: Engine) -> None:
    _denied(
        crm[1],
        "INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('no-such-journey', 'ONSITE')",
        match="no such journey",
    )
    _denied(
        engine,
        "INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('no-such-journey', 'ONSITE')",
        match="no such journey",
    )
    assert _record(crm[1], "'jrn_cal_1', 'ONSITE'")[1] == "jrn_cal_1"


def test_progress_at_a_future_time_is_refused_within_a_small_clock_skew(crm: tuple[str, Engine]) -> None:
    """Finding: a future ``at`` pinned a stage on the board (the latest row wins)."""
    _denied(
        crm[1],
        "INSERT INTO tenant_lgm.journey_progress (journey_id, stage, at) "
        "VALUES ('jrn_cal_1', 'ONSITE', now() + interval '1 day')",
        match="ahead of the server clock",
    )
    # A device a minute ahead of the server is not refused.
    _record(crm[1], "'jrn_cal_1', 'ONSITE', now() + interval '1 minute'", "journey_id, stage, at")


def test_progress_ids_are_always_generated(crm: tuple[str, Engine], engine: Engine) -> None:
    """Finding: an explicit progress_id broke the next insert (the sequence handed out the same id)."""
    _denied(
        crm[1],
        "INSERT INTO tenant_lgm.journey_progress (progress_id, journey_id, stage) VALUES (1, 'jrn_cal_1', 'ONSITE')",
        match="non-DEFAULT value",
    )
    _denied(
        crm[1],
        "INSERT INTO tenant_lgm.journey_progress (progress_id, journey_id, stage) OVERRIDING SYSTEM VALUE "
        "VALUES (1, 'jrn_cal_1', 'ONSITE')",
    )
    _denied(
        engine,
        "INSERT INTO tenant_lgm.journey_progress (progress_id, journey_id, stage) VALUES (1, 'jrn_cal_1', 'ONSITE')",
        match="non-DEFAULT value",
    )
    first = _record(crm[1], "'jrn_cal_1', 'EN_ROUTE'")
    second = _record(crm[1], "'jrn_cal_1', 'ONSITE'")
    assert second[0] > first[0]


def test_progress_is_signed_by_the_session_login_whatever_role_it_takes(
    crm: tuple[str, Engine], engine: Engine, tenant: Tenant
) -> None:
    """Finding: after SET ROLE to the CRM group, ``by`` was the group's name."""
    login, crm_engine = crm
    with crm_engine.begin() as conn:
        conn.execute(sa.text(f'SET ROLE "{crm_writer_role(tenant, engine.url.database)}"'))
        by = conn.execute(
            sa.text(
                "INSERT INTO tenant_lgm.journey_progress (journey_id, stage) "
                "VALUES ('jrn_cal_1', 'ONSITE') RETURNING by"
            )
        ).scalar()
    assert by == login
    _denied(
        crm_engine,
        "INSERT INTO tenant_lgm.journey_progress (journey_id, stage, by) VALUES ('jrn_cal_1', 'ONSITE', 'boss')",
    )
    # Not even the owner signs for someone else; an update keeps who signed.
    assert _record(engine, "'jrn_cal_1', 'ONSITE', 'boss'", "journey_id, stage, by")[4] == engine.url.username
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tenant_lgm.journey_progress SET by = 'boss', note = 'checked'"))
        assert set(conn.execute(sa.text("SELECT by FROM tenant_lgm.journey_progress")).scalars()) == {
            login,
            engine.url.username,
        }


def test_progress_is_recorded_on_the_branches_the_session_allows(crm: tuple[str, Engine]) -> None:
    """The branch policy holds on insert: a CRM session narrowed to Toronto records no Calgary progress."""
    with crm[1].begin() as conn, pytest.raises(sa.exc.DBAPIError, match="row-level security"):
        conn.execute(sa.text("SELECT set_config('lgm.allowed_locations', :l, false)"), {"l": TORONTO})
        conn.execute(
            sa.text("INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('jrn_cal_1', 'ONSITE')")
        )
    with crm[1].begin() as conn:
        conn.execute(sa.text("SELECT set_config('lgm.allowed_locations', :l, false)"), {"l": TORONTO})
        conn.execute(
            sa.text("INSERT INTO tenant_lgm.journey_progress (journey_id, stage) VALUES ('jrn_tor_1', 'ONSITE')")
        )


def test_every_group_kind_is_named_once_per_database() -> None:
    names = {groups_in(_tenants("abc")[0], db).reader for db in ("staging", "production")}
    assert len(names) == 2
    assert GROUP_KINDS == ("reader", "writer", "crm_writer", "branch_reader")
