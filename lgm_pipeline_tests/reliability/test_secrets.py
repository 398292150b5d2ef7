"""No secret leaks after faulty runs, and one tenant's reader sees nothing of another tenant.

Secrets are made up per test run (never in the repository): the SmartMoving key (right and
wrong), the pipeline's database password and a CRM reader's password. After failing runs we
search every place a user or operator could see text: log records, captured stdout/stderr, the
Dagster event log (messages, metadata, error info), run config and tags, sync reports and every
file under LGM_HOME and the test's tmp directory.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._serdes import serialize_value
from sqlalchemy.engine import make_url

from lgm_pipeline.settings import DATABASE_URL_ENV, HOME_ENV
from lgm_pipeline.simulator import FaultConfig
from lgm_pipeline.storage.access import grant_reader
from lgm_pipeline.storage.database import create_engine, shared_engine
from lgm_pipeline.storage.migrations import migrate
from lgm_pipeline.tenants.config import parse_tenants
from lgm_pipeline_tests.conftest import migrated_engine
from lgm_pipeline_tests.reliability.conftest import sync

pytestmark = pytest.mark.e2e


def _secret(prefix: str) -> str:
    # URL-safe text, not hex: nothing here can look like a committed 32-hex key.
    return f"{prefix}-{secrets.token_urlsafe(18)}"


def _drop_role(admin_url: str, database: str | None, role: str) -> None:
    engine = create_engine(admin_url, database, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if database is not None:
                conn.execute(sa.text(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER'))
                conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
    finally:
        engine.dispose()


@pytest.fixture
def db_password(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The pipeline connects as a login role with a password (as in production) for this test."""
    role, password = f"lgm_pipe_{uuid.uuid4().hex[:8]}", _secret("dbpw")
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE \"{role}\" LOGIN SUPERUSER PASSWORD '{password}'"))
    admin.dispose()
    url = make_url(database_url).set(username=role, password=password).render_as_string(hide_password=False)
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    yield password
    shared_engine(url).dispose()
    shared_engine.cache_clear()
    _drop_role(database_url, make_url(database_url).database, role)


def _texts_of_runs(instance: dg.DagsterInstance) -> list[str]:
    texts = []
    for run in instance.get_runs():
        texts.append(serialize_value(run))  # run config, tags, op selection
        for entry in instance.all_logs(run.run_id):
            texts.append(entry.message or "")
            texts.append(serialize_value(entry))  # metadata, error info with stacks and causes
    return texts


def _texts_of_files(*roots: Path) -> list[str]:
    return [
        path.read_bytes().decode("utf-8", "replace")
        for root in roots
        if root.exists()
        for path in root.rglob("*")
        if path.is_file()
    ]


def test_no_secret_appears_anywhere_after_faulty_runs(
    defs, tenant, instance, simulator, today, db_password, monkeypatch, caplog, capfd, tmp_path
) -> None:
    api_key, wrong_key, crm_password = _secret("sm-key"), _secret("sm-wrong"), _secret("crm")
    simulator.config.api_key = api_key  # the simulator accepts only this key from now on
    monkeypatch.setenv(tenant.smartmoving.api_key_env, api_key)
    for name in ("httpx", "httpcore", "lgm_pipeline", "dagster", "sqlalchemy.engine"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    reports = []

    monkeypatch.setenv(tenant.smartmoving.api_key_env, wrong_key)
    reports.append(sync(defs, tenant, instance, today))
    monkeypatch.setenv(tenant.smartmoving.api_key_env, api_key)
    for faults in (FaultConfig(down=True), FaultConfig(malformed_pages=[2]), FaultConfig(error_rate=0.3)):
        simulator.set_faults(faults)
        reports.append(sync(defs, tenant, instance, today))
    simulator.set_faults(FaultConfig())
    reports.append(sync(defs, tenant, instance, today))
    # 401, down, malformed fail; 5xx on some requests may or may not be outlasted; the clean run succeeds.
    assert [r.ok for r in reports[:3]] == [False, False, False] and reports[-1].ok
    grant_reader(migrated_engine(tenant), tenant, f"crm_{uuid.uuid4().hex[:8]}", crm_password)

    captured = capfd.readouterr()
    texts = [captured.out, captured.err, caplog.text, *(r.getMessage() for r in caplog.records)]
    texts += [repr(r) for r in reports]
    texts += _texts_of_runs(instance)
    texts += _texts_of_files(tmp_path, Path(os.environ[HOME_ENV]))  # LGM_HOME lies under tmp_path here
    assert any("SmartMoving rejected the API key (401)" in t for t in texts)  # the search sees the failures
    assert sum(len(t) for t in texts) > 10_000
    for name, value in (("API key", api_key), ("wrong key", wrong_key), ("DB password", db_password)):
        assert not [t[:200] for t in texts if value in t], f"{name} leaked"
    assert not [t for t in texts if crm_password in t], "CRM password leaked"


def test_reader_of_one_tenant_reads_nothing_of_another(
    defs, tenant, instance, db, simulator, today, database_url: str
) -> None:
    """End to end over the storage test (test_access): real synced data, and the denial both ways."""
    assert sync(defs, tenant, instance, today).ok
    acme = parse_tenants(
        {
            "tenants": [
                {
                    "key": "acme",
                    "client_id": "clm_acme",
                    "name": "Acme Movers",
                    "timezone": "America/Vancouver",
                    "first_service_date": "2026-01-01",
                    "smartmoving": {"api_key_env": "ACME_SM_KEY", "base_url_env": "ACME_SM_URL"},
                    "branches": [{"location_id": "loc_acme_1", "name": "One", "smartmoving_branch_name": "ONE"}],
                }
            ]
        }
    )[0]
    migrate(db, acme)
    logins = {t.key: (f"crm_{t.key}_{uuid.uuid4().hex[:6]}", _secret("crm")) for t in (tenant, acme)}
    try:
        for t in (tenant, acme):
            grant_reader(db, t, *logins[t.key])
        as_acme, as_lgm = (
            create_engine(
                make_url(database_url)
                .set(username=logins[key][0], password=logins[key][1])
                .render_as_string(hide_password=False),
                poolclass=sa.pool.NullPool,
            )
            for key in ("acme", "lgm")
        )
        with as_lgm.connect() as conn:  # the control: a reader reads its own tenant
            assert conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys")).scalar() > 0
        for relation in ("journeys", "journeys_today", "journeys_quarantine", "sync_runs", "raw_customers"):
            with as_acme.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(f"SELECT 1 FROM {tenant.schema}.{relation} LIMIT 1"))
        with as_acme.connect() as conn:  # nor can it list what tables exist there
            visible = conn.execute(
                sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"), {"s": tenant.schema}
            ).scalar()
        assert visible == 0
        as_acme.dispose()
        as_lgm.dispose()
    finally:
        for login, _ in logins.values():
            _drop_role(database_url, None, login)
