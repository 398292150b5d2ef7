"""Pipeline fixtures: the simulator on loopback, a fresh database, and the real Definitions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from lgm_pipeline.assets.partitions import tenant_partitions
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.simulator import RunningSimulator, SimulatorConfig, start_simulator
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.tenants import Tenant, load_tenants


@pytest.fixture
def tenant() -> Tenant:
    return load_tenants()[0]


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch, tenant: Tenant) -> Iterator[RunningSimulator]:
    # No evolution between calls: each test changes the world on purpose.
    with start_simulator(SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=60)) as sim:
        monkeypatch.setenv(tenant.smartmoving.base_url_env, sim.base_url)
        monkeypatch.setenv(tenant.smartmoving.api_key_env, sim.api_key)
        monkeypatch.setenv("LGM_SMARTMOVING_RATE_LIMIT", "off")
        yield sim


@pytest.fixture
def defs(migrated_database_url: str, simulator: RunningSimulator) -> dg.Definitions:
    return build_definitions()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    # In-memory run/event storage: the assets' data still goes to the real PostgreSQL.
    instance = dg.DagsterInstance.ephemeral()
    yield instance
    instance.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def window(tenant: Tenant) -> list[dt.date]:
    return tenant.sync_window()


#: What the two-hour cycle pulls (the raw SmartMoving assets and the leads), by the asset's last key part: the
#: tenant's other SmartMoving assets (branches, arrival windows, retention, webhook refresh) stay out of it.
CYCLE_ASSETS = frozenset(
    {
        "smartmoving_customers",
        "smartmoving_opportunities",
        "smartmoving_job_departures",
        "smartmoving_jobs",
        "smartmoving_leads",
        "leads",
    }
)


def journeys_partitions_of(run: dg.DagsterRun, tenant: Tenant) -> list[str]:
    """The journeys partitions a run rebuilt: its one partition, or every key of its range."""
    if "dagster/partition" in run.tags:
        return [run.tags["dagster/partition"]]
    key_range = dg.PartitionKeyRange(run.tags[ASSET_PARTITION_RANGE_START_TAG], run.tags[ASSET_PARTITION_RANGE_END_TAG])
    return [str(k) for k in tenant_partitions(tenant).journeys.get_partition_keys_in_range(key_range)]
