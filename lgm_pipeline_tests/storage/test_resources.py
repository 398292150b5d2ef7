"""PostgresResource helpers, and the IO manager inside a real Dagster materialization.

No `from __future__ import annotations`: Dagster inspects the asset functions' real annotations.
"""

import datetime as dt
from collections import Counter

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lgm_pipeline.assets.metadata import api_cost_metadata
from lgm_pipeline.storage.io_manager import PostgresIOManager
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.storage.tables import raw_jobs
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline_tests.storage.conftest import (
    CALGARY,
    DAILY,
    DAY,
    FETCHED_AT,
    JOURNEY_PARTITIONS,
    TORONTO,
    Writer,
    journey_key,
    journey_row,
    journeys_frame,
    raw_job_row,
)


def _opportunity(opp: str, day: dt.date, fetched_at: dt.datetime, summary_hash: str) -> dict[str, object]:
    return {
        "service_date": day,
        "opportunity_id": opp,
        "customer_id": f"cus_{opp}",
        "summary_hash": summary_hash,
        "payload": {"id": opp, "hash": summary_hash},
        "fetched_at": fetched_at,
    }


def test_cached_opportunity_details_pick_the_newest_fetch(
    writer: Writer, postgres: PostgresResource, tenant: Tenant
) -> None:
    older, newer = FETCHED_AT, FETCHED_AT + dt.timedelta(hours=3)
    yesterday = DAY - dt.timedelta(days=1)
    writer.raw("smartmoving_opportunities", pd.DataFrame([_opportunity("o1", yesterday, newer, "h-new")]), yesterday)
    writer.raw(
        "smartmoving_opportunities",
        pd.DataFrame([_opportunity("o1", DAY, older, "h-old"), _opportunity("o2", DAY, older, "h2")]),
        DAY,
    )
    cached = postgres.cached_opportunity_details(tenant, ["o1", "o2", "o3"])
    assert set(cached) == {"o1", "o2"}
    assert (cached["o1"].summary_hash, cached["o1"].service_date, cached["o1"].fetched_at) == (
        "h-new",
        yesterday,
        newer,
    )
    assert cached["o1"].payload == {"id": "o1", "hash": "h-new"}
    assert postgres.cached_opportunity_details(tenant, []) == {}


def test_retention_prunes_raw_and_sync_runs_never_journeys(
    writer: Writer, postgres: PostgresResource, tenant: Tenant, engine: Engine
) -> None:
    old_day = DAY - dt.timedelta(days=40)
    for day in (old_day, DAY):
        writer.raw("smartmoving_jobs", pd.DataFrame([raw_job_row("1", day)]), day)
        writer.journeys(journeys_frame([journey_row(f"j{day}", service_date=day)]), key=journey_key(day))
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE tenant_lgm.sync_runs SET finished_at = finished_at - interval '60 days' WHERE id <= 2")
        )
        # webhook events: an old one served, an old one still waiting, a recent one served
        conn.execute(
            sa.text(
                "INSERT INTO tenant_lgm.webhook_events (delivery_hash, payload, state, received_at) VALUES "
                "('a', '{}', 'done', :old), ('b', '{}', 'pending', :old), ('c', '{}', 'done', :new)"
            ),
            {
                "old": dt.datetime.combine(old_day, dt.time(), dt.UTC),
                "new": dt.datetime.combine(DAY, dt.time(), dt.UTC),
            },
        )
    deleted = postgres.prune_history(tenant, keep_days=30, today=DAY)
    assert deleted == {
        "raw_customers": 0,
        "raw_opportunities": 0,
        "raw_jobs": 1,
        "raw_job_timelines": 0,
        "raw_leads": 0,
        "raw_job_departures": 0,
        "unreadable_records": 0,
        "sync_runs": 2,
        "webhook_events": 1,
    }
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.journeys")).scalar() == 2
        assert conn.execute(sa.text("SELECT service_date FROM tenant_lgm.raw_jobs")).scalars().all() == [DAY]
        kept = conn.execute(sa.text("SELECT delivery_hash FROM tenant_lgm.webhook_events ORDER BY 1")).scalars()
        assert kept.all() == ["b", "c"]
    with pytest.raises(ValueError):
        postgres.prune_history(tenant, keep_days=-1, today=DAY)


def test_latest_sync_status_per_branch_and_date(writer: Writer, postgres: PostgresResource, tenant: Tenant) -> None:
    df = journeys_frame([journey_row("a")])
    calls = {"api_calls": 7, "api_calls_by_endpoint": {"/jobs": 5, "/opportunities": 2}}
    writer.journeys(df, run_id="run-1", output_metadata=calls)
    writer.journeys(df, run_id="run-2", output_metadata=calls)
    writer.journeys(journeys_frame([journey_row("t", location_id=TORONTO)]), key=journey_key(DAY, TORONTO))
    status = postgres.latest_sync_status(tenant)
    by_location = {s["location_id"]: s for s in status}
    assert set(by_location) == {CALGARY, TORONTO}
    calgary = by_location[CALGARY]
    assert (calgary["run_id"], calgary["service_date"], calgary["inserted"], calgary["api_calls"]) == (
        "run-2",
        DAY,
        0,
        7,
    )
    assert isinstance(calgary["age"], dt.timedelta)


def test_materialize_daily_then_multi_partitioned_assets(migrated_database_url: str) -> None:
    @dg.asset(key=["lgm", "smartmoving_jobs"], partitions_def=DAILY, io_manager_key="postgres_io")
    def smartmoving_jobs(context: dg.AssetExecutionContext) -> pd.DataFrame:
        day = dt.date.fromisoformat(context.partition_key)
        return pd.DataFrame([raw_job_row("1", day), raw_job_row("2", day)])

    @dg.asset(key=["lgm", "journeys"], partitions_def=JOURNEY_PARTITIONS, io_manager_key="postgres_io")
    def journeys(context: dg.AssetExecutionContext, smartmoving_jobs: pd.DataFrame) -> pd.DataFrame:
        day = dt.date.fromisoformat(context.partition_key.keys_by_dimension["date"])
        assert smartmoving_jobs["service_date"].tolist() == [day, day]
        return journeys_frame([journey_row(j, service_date=day) for j in smartmoving_jobs["job_id"]])

    resources = {"postgres_io": PostgresIOManager.for_tenants(PostgresResource(), load_tenants())}
    assets = [smartmoving_jobs, journeys]
    first = dg.materialize(assets, selection=[smartmoving_jobs], partition_key=DAY.isoformat(), resources=resources)
    assert first.success
    second = dg.materialize(assets, selection=[journeys], partition_key=journey_key(DAY), resources=resources)
    assert second.success
    meta = second.asset_materializations_for_node("lgm__journeys")[0].metadata
    assert (meta["inserted"].value, meta["dagster/table_name"].value) == (2, "tenant_lgm.journeys")


def test_materializations_show_the_table_and_its_columns(migrated_database_url: str) -> None:
    """The UI's asset page shows the stored table, its row count and its columns from this metadata."""

    @dg.asset(key=["lgm", "smartmoving_jobs"], partitions_def=DAILY, io_manager_key="postgres_io")
    def smartmoving_jobs(context: dg.AssetExecutionContext) -> pd.DataFrame:
        day = dt.date.fromisoformat(context.partition_key)
        return pd.DataFrame([raw_job_row(job, day) for job in ("1", "2", "3")])

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [smartmoving_jobs],
        partition_key=DAY.isoformat(),
        resources={"postgres_io": PostgresIOManager.for_tenants(PostgresResource(), load_tenants())},
        instance=instance,
    )
    assert result.success
    event = instance.get_latest_materialization_event(dg.AssetKey(["lgm", "smartmoving_jobs"]))
    assert event is not None and event.asset_materialization is not None
    meta = event.asset_materialization.metadata
    assert (meta["dagster/partition_row_count"].value, meta["dagster/row_count"].value) == (3, 3)
    assert meta["dagster/table_name"].value == "tenant_lgm.raw_jobs"
    schema = meta["dagster/column_schema"].value
    assert isinstance(schema, dg.TableSchema)
    columns = {c.name: c for c in schema.columns}
    assert list(columns) == [c.name for c in raw_jobs.columns]
    assert (columns["payload"].type, columns["payload"].constraints.nullable) == ("jsonb", False)
    assert (columns["job_number"].type, columns["job_number"].constraints.nullable) == ("text", True)
    assert columns["fetched_at"].type == "timestamp with time zone"
    assert schema.constraints.other == ["primary key (service_date, job_id)"]


def test_a_raw_run_records_its_api_calls_in_sync_runs(database_url: str, engine: Engine, tenant: Tenant) -> None:
    """The quota report (``lgm status``) sums sync_runs.api_calls: the calls an asset reports must land there."""

    @dg.asset(key=["lgm", "smartmoving_jobs"], partitions_def=DAILY, io_manager_key="postgres_io")
    def smartmoving_jobs(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
        day = dt.date.fromisoformat(context.partition_key)
        frame = pd.DataFrame([raw_job_row("1", day)])
        return dg.Output(frame, metadata=api_cost_metadata(tenant, Counter({"jobs": 2, "opportunity": 1})))

    # The arrival windows asset reports its total only.
    @dg.asset(key=["lgm", "smartmoving_arrival_windows"], partitions_def=DAILY, io_manager_key="postgres_io")
    def smartmoving_arrival_windows(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
        day = dt.date.fromisoformat(context.partition_key)
        window = {"startTimeUtc": "2026-11-25T15:00:00Z", "endTimeUtc": "2026-11-25T17:00:00Z"}
        frame = pd.DataFrame(
            [
                {
                    "service_date": day,
                    "job_id": "1",
                    "opportunity_id": "opp_1",
                    "start_at": pd.Timestamp(window["startTimeUtc"]),
                    "end_at": pd.Timestamp(window["endTimeUtc"]),
                    "payload": window,
                    "fetched_at": FETCHED_AT,
                }
            ]
        )
        return dg.Output(frame, metadata={"api_calls": dg.MetadataValue.int(4)})

    resources = {"postgres_io": PostgresIOManager.for_tenants(PostgresResource(), load_tenants())}
    assets = [smartmoving_jobs, smartmoving_arrival_windows]
    assert dg.materialize(assets, partition_key=DAY.isoformat(), resources=resources).success
    with engine.connect() as conn:
        recorded = conn.execute(
            sa.text("SELECT asset, api_calls, api_calls_by_endpoint FROM tenant_lgm.sync_runs ORDER BY asset")
        ).all()
    assert [tuple(r) for r in recorded] == [
        ("smartmoving_arrival_windows", 4, None),
        ("smartmoving_jobs", 3, {"jobs": 2, "opportunity": 1}),
    ]


def test_unknown_asset_is_a_clear_error(io_manager: PostgresIOManager) -> None:
    context = dg.build_output_context(asset_key=dg.AssetKey(["lgm", "mystery"]))
    with pytest.raises(dg.DagsterInvariantViolationError, match="stores only"):
        io_manager.handle_output(context, pd.DataFrame())
