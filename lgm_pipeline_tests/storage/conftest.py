"""Fixtures and frame builders for the storage tests (all on a real PostgreSQL database)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from lgm_pipeline.storage.io_manager import PostgresIOManager
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.tenants.config import Tenant, get_tenant

DAY = dt.date(2026, 11, 25)
NEXT_DAY = DAY + dt.timedelta(days=1)
CALGARY = "loc_lgm_calgary_001"
TORONTO = "loc_lgm_toronto_001"
FETCHED_AT = dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.UTC)

# end_offset: the sync window reaches today and tomorrow, which have not ended yet.
DAILY = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=2)
JOURNEY_PARTITIONS = dg.MultiPartitionsDefinition(
    {"date": DAILY, "branch": dg.StaticPartitionsDefinition([CALGARY, TORONTO])}
)


def journey_row(job: str, **overrides: Any) -> dict[str, Any]:
    """A realistic valid ``journeys`` row for SmartMoving job ``job`` (fields overridable)."""
    row: dict[str, Any] = {
        "id": f"jrn_{job}",
        "client_id": "clm_f55e13de_a5c4_4990_ad02_34bb07187daa",
        "location_id": CALGARY,
        "service_date": DAY,
        "status": "BOOKED",
        "smartmoving_status": 4,
        "smartmoving_status_name": "Booked",
        "job_number": f"J-{job}",
        "quote_number": f"Q-{job}",
        "job_type": 1,
        "job_type_name": "Moving",
        "needs_truck": True,
        "opportunity_type": "Local",
        "title": "2 bedroom apartment",
        "customer_name": "Jane Doe",
        "customer_phone": "+1 403 555 0100",
        "customer_phone_type": "Mobile",
        "customer_email": "jane.doe@example.com",
        "pickup_address": "123 Main St SW, Calgary, AB",
        "dropoff_address": "45 Elbow Dr, Calgary, AB",
        "stop_addresses": [],
        "addresses": [
            {"type": "origin", "line1": "123 Main St SW", "city": "Calgary"},
            {"type": "destination", "line1": "45 Elbow Dr", "city": "Calgary"},
        ],
        "estimated_cost": 1234.5,
        "actual_cost": None,
        "opportunity_subtotal": 1234.5,
        "opportunity_tax": 61.73,
        "opportunity_total": 1296.23,
        "currency": "CAD",
        "move_size": "2 Bedroom",
        "volume": 600,
        "weight": 4200,
        "sales_assignee": "Priya Shah",
        "confirmed": True,
        "booked": True,
        "branch_name": "CALGARY 🇨🇦 - Let's Get Moving",
        "external_ids": {"smartmoving_job_id": job, "smartmoving_opportunity_id": f"opp_{job}"},
        "smartmoving_job_id": job,
        "raw_payload": {"id": job, "jobNumber": f"J-{job}", "notes": "Piano on 2nd floor"},
        "dq_flags": [],
        "source_fetched_at": FETCHED_AT,
        "synced_at": FETCHED_AT + dt.timedelta(minutes=5),
        "run_id": "run-build",
        "quarantine_reasons": None,
    }
    row.update(overrides)
    return row


def journeys_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def raw_job_row(job: str, service_date: dt.date = DAY, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "service_date": service_date,
        "job_id": job,
        "opportunity_id": f"opp_{job}",
        "customer_id": f"cus_{job}",
        "job_number": f"J-{job}",
        "job_type": 1,
        "confirmed": True,
        "addresses": [{"line1": "123 Main St SW"}],
        "estimated_charges": {"total": 1234.5, "currency": "CAD"},
        "payload": {"id": job, "serviceDate": service_date.isoformat()},
        "fetched_at": FETCHED_AT,
    }
    row.update(overrides)
    return row


def journey_key(service_date: dt.date = DAY, branch: str = CALGARY) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": service_date.isoformat(), "branch": branch})


@pytest.fixture
def tenant() -> Tenant:
    return get_tenant("lgm")


@pytest.fixture
def postgres(database_url: str) -> PostgresResource:
    return PostgresResource()


@pytest.fixture
def engine(postgres: PostgresResource, tenant: Tenant) -> Engine:
    postgres.migrate(tenant)
    return postgres.engine()


@pytest.fixture
def io_manager(postgres: PostgresResource) -> PostgresIOManager:
    return PostgresIOManager.for_tenants(postgres, load_tenants())


class Writer:
    """Drives the IO manager the way Dagster does, one output context per write."""

    def __init__(self, io_manager: PostgresIOManager) -> None:
        self.io_manager = io_manager

    def journeys(
        self,
        df: pd.DataFrame,
        key: dg.MultiPartitionKey | None = None,
        run_id: str | None = None,
        output_metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self._write("journeys", df, key or journey_key(), JOURNEY_PARTITIONS, run_id, output_metadata)

    def raw(self, asset: str, df: pd.DataFrame, day: dt.date = DAY, run_id: str | None = None) -> dict[str, Any]:
        return self._write(asset, df, day.isoformat(), DAILY, run_id, None)

    def _write(
        self,
        asset: str,
        df: pd.DataFrame,
        key: str,
        partitions_def: dg.PartitionsDefinition,
        run_id: str | None,
        output_metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The metadata the IO manager logged; ``output_metadata``: what the asset's ``dg.Output`` carried."""
        context = dg.build_output_context(
            asset_key=dg.AssetKey(["lgm", asset]),
            partition_key=key,
            asset_partitions_def=partitions_def,
            run_id=run_id or f"run-{uuid.uuid4().hex[:8]}",
            output_metadata=output_metadata,
        )
        self.io_manager.handle_output(context, df)
        return {k: v.value for k, v in context.get_logged_metadata().items()}

    def read(self, asset: str, keys: list[str], partitions_def: dg.PartitionsDefinition) -> pd.DataFrame:
        context = dg.build_input_context(
            asset_key=dg.AssetKey(["lgm", asset]),
            asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]),
            asset_partitions_def=partitions_def,
        )
        return self.io_manager.load_input(context)


@pytest.fixture
def writer(io_manager: PostgresIOManager, engine: Engine) -> Writer:
    return Writer(io_manager)
