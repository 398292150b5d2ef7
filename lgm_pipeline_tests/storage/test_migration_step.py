"""Issue 27, item 4: migrations are a step before runs; a run only checks the schema's version, and the database's
URL reaches the code through a configured resource, never run config.

No `from __future__ import annotations`: Dagster inspects the asset functions' real annotations.
"""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster._config import ConfigTypeKind

from lgm_pipeline.assets.factory import tenant_assets
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.naming import IO_MANAGER_KEY, POSTGRES_RESOURCE_KEY
from lgm_pipeline.settings import DATABASE_URL_ENV
from lgm_pipeline.simulator import RunningSimulator
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.migrations import SCHEMA_VERSION, schema_version
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant, load_tenants
from lgm_pipeline_tests.assets.conftest import simulator  # noqa: F401
from lgm_pipeline_tests.conftest import migrate_database
from lgm_pipeline_tests.storage.conftest import DAILY, DAY, raw_job_row


@pytest.fixture
def tenant() -> Tenant:
    return load_tenants()[0]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    yield instance
    instance.dispose()


def _retention(defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The tenant's retention asset (its body queries first) with the definitions' resources."""
    return dg.materialize(
        tenant_assets(tenant),
        selection=[tenant.names.asset_key("history_retention")],
        resources=defs.resources,
        instance=instance,
        raise_on_error=False,
    )


def _raw_jobs(defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """A raw asset written by the definitions' IO manager (the write path: the check is in handle_output)."""

    @dg.asset(key=tenant.names.asset_key("smartmoving_jobs"), partitions_def=DAILY, io_manager_key=IO_MANAGER_KEY)
    def smartmoving_jobs() -> pd.DataFrame:
        return pd.DataFrame([raw_job_row("1", DAY)])

    return dg.materialize(
        [smartmoving_jobs],
        partition_key=DAY.isoformat(),
        resources=defs.resources,
        instance=instance,
        raise_on_error=False,
    )


def _failures(result: dg.ExecuteInProcessResult) -> list[tuple[str, str]]:
    """Each failed step's (description or innermost error message, whether it was retried)."""
    failures = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            failures.append(data.user_failure_data.description)
            continue
        error = data.error
        while error.cause is not None:
            error = error.cause
        failures.append(error.message.strip().split(": ", 1)[1])
    return failures


def _schemas(url: str) -> list[str]:
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant_%'")).scalars()
            )
    finally:
        engine.dispose()


def test_a_run_against_an_unmigrated_database_fails_at_once_with_one_line_and_writes_nothing(
    database_url: str, tenant: Tenant, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions()
    line = (
        f"database schema of tenant {tenant.key} is at version 0, the code needs {SCHEMA_VERSION}: run `lgm db migrate`"
    )
    for run in (_retention, _raw_jobs):
        result = run(defs, tenant, instance)
        assert not result.success
        assert _failures(result) == [line]
        assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert _schemas(database_url) == []  # the runs created nothing: no schema, no table, no sync_runs row


def test_a_run_worker_checks_the_version_and_never_migrates(
    database_url: str, tenant: Tenant, instance: dg.DagsterInstance
) -> None:
    postgres = migrate_database([tenant])
    engine = postgres.engine()
    with engine.begin() as conn:  # a schema one migration behind the code (a release not yet migrated)
        conn.execute(sa.text(f"DELETE FROM {tenant.schema}.schema_migrations WHERE version = {SCHEMA_VERSION}"))
    from lgm_pipeline.storage import resources

    resources._checked.clear()  # a new run worker: it has checked nothing yet

    result = _raw_jobs(build_definitions(), tenant, instance)
    assert _failures(result) == [
        f"database schema of tenant {tenant.key} is at version {SCHEMA_VERSION - 1}, the code needs "
        f"{SCHEMA_VERSION}: run `lgm db migrate`"
    ]
    assert schema_version(engine, tenant) == SCHEMA_VERSION - 1  # still behind: the run migrated nothing
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.raw_jobs")).scalar_one() == 0

    assert postgres.migrate(tenant) == [SCHEMA_VERSION]  # the migrate step, then the same run succeeds
    assert _raw_jobs(build_definitions(), tenant, instance).success


def test_a_migrated_database_is_checked_once_per_process(
    database_url: str, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lgm_pipeline.storage import resources

    migrate_database([tenant])
    resources._checked.clear()
    calls = []
    monkeypatch.setattr(resources, "schema_version", lambda engine, t: calls.append(t.key) or SCHEMA_VERSION)
    postgres = PostgresResource()
    for _ in range(3):
        postgres.ensure_tenant(tenant)
    assert calls == [tenant.key]


def test_an_unset_database_url_fails_a_run_with_one_line_naming_it(
    database_url: str, tenant: Tenant, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_database([tenant])
    monkeypatch.delenv(DATABASE_URL_ENV)  # a run worker started without it
    result = _retention(build_definitions(), tenant, instance)
    [failure] = _failures(result)
    assert failure.startswith(f"{DATABASE_URL_ENV} is not set where this run started: ") and "\n" not in failure


def test_the_database_url_is_bound_as_an_env_var_and_is_no_run_config(database_url: str) -> None:
    defs = build_definitions()
    postgres = defs.resources[POSTGRES_RESOURCE_KEY]
    assert isinstance(postgres, PostgresResource)
    assert postgres.database.url == dg.EnvVar(DATABASE_URL_ENV)  # Dagster resolves it when a run starts
    assert defs.resources[IO_MANAGER_KEY].postgres is postgres
    for job in defs.resolve_all_job_defs():
        shape = job.run_config_schema.config_type.fields.get("resources")
        if shape is None:
            continue
        for key in (POSTGRES_RESOURCE_KEY, IO_MANAGER_KEY):
            resource = shape.config_type.fields.get(key)
            if resource is None:
                continue
            config = resource.config_type.fields.get("config")
            assert config is None or (
                config.config_type.kind in (ConfigTypeKind.STRICT_SHAPE, ConfigTypeKind.PERMISSIVE_SHAPE)
                and not config.config_type.fields
            ), (job.name, key)


def test_lgm_db_migrate_is_the_step_before_runs(database_url: str, tenant: Tenant, capsys) -> None:
    from lgm_pipeline.cli.main import main

    assert main(["db", "migrate"]) == 0
    assert f"{tenant.key}: schema {tenant.schema} up to date" in capsys.readouterr().out
    assert schema_version(PostgresResource().engine(), tenant) == SCHEMA_VERSION


def test_a_sync_on_an_unmigrated_database_spends_no_call_and_names_the_command(
    database_url: str,
    simulator: RunningSimulator,  # noqa: F811
    tenant: Tenant,
    instance: dg.DagsterInstance,
) -> None:
    from lgm_pipeline.sync import run_sync

    report = run_sync(build_definitions(), tenant, instance)
    assert report.outcome == "configuration_error"
    assert "run `lgm db migrate`" in (report.configuration_error or "")
    assert report.total_api_calls == 0 and simulator.stats().get("total", 0) == 0
    assert not report.branches
