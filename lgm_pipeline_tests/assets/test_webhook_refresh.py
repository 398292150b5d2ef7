"""Webhook events served by targeted refresh runs: one call per opportunity, only the partitions it touched.

The events are put in the inbox as the receiver stores them (tested on its own in ``webhooks/``); the
refresh runs and the sensor are the real definitions', against the simulator and a real database.
"""

from __future__ import annotations

import datetime as dt
import uuid

import dagster as dg
import pytest
import sqlalchemy as sa

from lgm_pipeline.assets.automation import journeys_job_name, raw_job_name
from lgm_pipeline.assets.webhooks import REFRESH_RUN_TAG, REFRESH_RUN_TAGS, WEBHOOK_ASSET, WEBHOOK_SENSOR
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.simulator import FaultConfig, RunningSimulator
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.storage.tables import webhook_events
from lgm_pipeline.sync import run_sync
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.webhooks.events import read_event
from lgm_pipeline.webhooks.inbox import store_event
from lgm_pipeline.webhooks.processing import MAX_REFRESH_ATTEMPTS, apply_refresh, pending_events

#: What a journey shows the dispatcher and finance; run ids and sync times differ between runs by design.
SHOWN = (
    "id, location_id, service_date, status, smartmoving_status, customer_name, customer_phone, customer_email, "
    "pickup_address, dropoff_address, estimated_cost, actual_cost, confirmed, job_type"
)


def _board(db: sa.Engine, tenant: Tenant) -> set[tuple]:
    with db.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.text(f"SELECT {SHOWN} FROM {tenant.schema}.journeys"))}


def _journeys_of(db: sa.Engine, tenant: Tenant, opportunity_id: str) -> list[dict]:
    query = f"SELECT * FROM {tenant.schema}.journeys WHERE external_ids ->> 'smartmoving_opportunity_id' = :o"
    with db.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(query), {"o": opportunity_id})]


def _post(db: sa.Engine, tenant: Tenant, event_type: str, opportunity_id: str, times: int = 1) -> None:
    """Events in the inbox as the receiver stores them (each delivery its own body)."""
    rows = [
        {
            "h": uuid.uuid4().hex,
            "t": event_type,
            "o": opportunity_id,
            "p": f'{{"event-type": "{event_type}", "opportunity-id": "{opportunity_id}", "n": {n}}}',
        }
        for n in range(times)
    ]
    with db.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {tenant.schema}.webhook_events (delivery_hash, event_type, opportunity_id, payload) "
                "VALUES (:h, :t, :o, CAST(:p AS jsonb))"
            ),
            rows,
        )


def _events(db: sa.Engine, tenant: Tenant) -> list[dict]:
    with db.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {tenant.schema}.webhook_events ORDER BY event_id"))
        return [dict(r._mapping) for r in rows]


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(WEBHOOK_SENSOR)
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"postgres": PostgresResource()}) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def _refresh(defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """A refresh run as launched by hand (the Launchpad, the asset's page): untagged, the asset tags it."""
    job = defs.resolve_job_def(raw_job_name(tenant))
    only = [tenant.names.asset_key(WEBHOOK_ASSET)]
    return job.execute_in_process(instance=instance, asset_selection=only, raise_on_error=False)


def _rebuild(defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, requests: list[dg.RunRequest]) -> None:
    job = defs.resolve_job_def(journeys_job_name(tenant))
    for request in requests:
        assert job.execute_in_process(partition_key=request.partition_key, instance=instance, tags=request.tags).success


def _branch_today(tenant: Tenant, location_id: str) -> dt.date:
    return next(b for b in tenant.branches if b.location_id == location_id).today()


@pytest.fixture
def synced(defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance) -> None:
    assert run_sync(defs, tenant, instance).ok


def _victims(db: sa.Engine, tenant: Tenant, count: int) -> list[dict]:
    """Journeys of single-job opportunities on their branch's today, each of another opportunity."""
    with db.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {tenant.schema}.journeys"))]
    by_opportunity: dict[str, list[dict]] = {}
    for row in rows:
        by_opportunity.setdefault(row["external_ids"]["smartmoving_opportunity_id"], []).append(row)
    picked = [
        jobs[0]
        for jobs in by_opportunity.values()
        if len(jobs) == 1 and jobs[0]["service_date"] == _branch_today(tenant, jobs[0]["location_id"])
    ]
    assert len(picked) >= count
    return picked[:count]


@pytest.mark.usefixtures("synced")
def test_events_refresh_only_their_opportunities_and_the_board_ends_as_a_clean_sync_leaves_it(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, db: sa.Engine, simulator: RunningSimulator
) -> None:
    moved, cancelled, deleted = _victims(db, tenant, 3)
    opp = {j["id"]: j["external_ids"]["smartmoving_opportunity_id"] for j in (moved, cancelled, deleted)}
    tomorrow = moved["service_date"] + dt.timedelta(days=1)
    simulator.world.reschedule_job(moved["smartmoving_job_id"], tomorrow)
    simulator.world.cancel_opportunity(opp[cancelled["id"]])
    simulator.world.delete_opportunity(opp[deleted["id"]])
    branch = next(b for b in tenant.branches if b.location_id == moved["location_id"])
    added = simulator.world.add_booking(moved["service_date"], branch.smartmoving_branch_name)
    _post(db, tenant, "opportunity-created", added["opportunity_id"])
    # a burst on one opportunity, and the deletion's events out of order (changed after deleted)
    _post(db, tenant, "opportunity-changed", opp[moved["id"]], times=100)
    _post(db, tenant, "opportunity-status-changed", opp[cancelled["id"]])
    _post(db, tenant, "opportunity-deleted", opp[deleted["id"]])
    _post(db, tenant, "opportunity-changed", opp[deleted["id"]])

    [request] = _tick(defs, instance).run_requests or []
    assert request.job_name == raw_job_name(tenant)
    assert request.asset_selection == [tenant.names.asset_key(WEBHOOK_ASSET)]
    assert request.tags.items() >= REFRESH_RUN_TAGS.items()
    simulator.reset_stats()
    result = _refresh(defs, tenant, instance)
    assert result.success
    assert simulator.stats()["opportunity"] == 4  # one call per opportunity, 104 events
    # the inbox's columns show in the UI from the materialization (the definition names the table only)
    event = instance.get_latest_materialization_event(tenant.names.asset_key(WEBHOOK_ASSET))
    assert event is not None and event.asset_materialization is not None
    columns = event.asset_materialization.metadata["dagster/column_schema"].value.columns  # type: ignore[union-attr]
    assert [c.name for c in columns] == [c.name for c in webhook_events.columns]
    events = _events(db, tenant)
    assert {e["state"] for e in events} == {"done"} and {e["run_id"] for e in events} == {result.run_id}
    [gone] = {e["reason"] for e in events if e["opportunity_id"] == opp[deleted["id"]]}
    assert "400" in gone

    # the next tick rebuilds exactly the partitions the refresh touched (the move's old and new one)
    tick = _tick(defs, instance)
    requests = tick.run_requests or []
    assert {r.partition_key for r in requests} == {
        str(journey_partition_key(j["service_date"].isoformat(), j["location_id"])) for j in (moved, cancelled, deleted)
    } | {str(journey_partition_key(tomorrow.isoformat(), moved["location_id"]))}
    assert all(r.job_name == journeys_job_name(tenant) and r.tags[REFRESH_RUN_TAG] == result.run_id for r in requests)
    _rebuild(defs, tenant, instance, requests)
    # a tick evaluated again requests nothing twice (run keys), and no refresh: the inbox is empty
    assert not _tick(defs, instance, cursor=tick.cursor).run_requests

    [new] = _journeys_of(db, tenant, added["opportunity_id"])
    assert (new["service_date"], new["location_id"], new["status"]) == (
        moved["service_date"],
        moved["location_id"],
        "BOOKED",
    )
    [now_moved] = _journeys_of(db, tenant, opp[moved["id"]])
    assert now_moved["service_date"] == tomorrow
    assert not _journeys_of(db, tenant, opp[deleted["id"]])
    with db.connect() as conn:
        reason = conn.execute(
            sa.text(f"SELECT reason FROM {tenant.schema}.journey_audit WHERE journey_id = :j AND action = 'delete'"),
            {"j": deleted["id"]},
        ).scalar_one()
    assert reason == "deleted"
    assert {r["status"] for r in _journeys_of(db, tenant, opp[cancelled["id"]])} <= {"CANCELLED"}

    # what the webhooks left is what a clean sync of the window gives
    board = _board(db, tenant)
    simulator.reset_stats()
    assert run_sync(defs, tenant, instance).ok
    assert _board(db, tenant) == board


@pytest.mark.usefixtures("synced")
def test_a_job_moved_past_the_window_leaves_the_board_with_why_and_waits_for_the_cycle(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, db: sa.Engine, simulator: RunningSimulator
) -> None:
    [victim] = _victims(db, tenant, 1)
    oid = victim["external_ids"]["smartmoving_opportunity_id"]
    far = victim["service_date"] + dt.timedelta(days=10)
    simulator.world.reschedule_job(victim["smartmoving_job_id"], far)
    _post(db, tenant, "opportunity-changed", oid)
    assert _refresh(defs, tenant, instance).success
    with db.connect() as conn:
        raw_dates = conn.execute(
            sa.text(f"SELECT service_date FROM {tenant.schema}.raw_jobs WHERE job_id = :j"),
            {"j": victim["smartmoving_job_id"]},
        ).scalars()
        # nothing filed past the window: the cycle pulls that date when it comes
        assert list(raw_dates) == []
    [event] = _events(db, tenant)
    # the old date is in the window: its partition is rebuilt, the new one is not
    assert event["partitions"] == [
        str(journey_partition_key(victim["service_date"].isoformat(), victim["location_id"]))
    ]
    _rebuild(defs, tenant, instance, _tick(defs, instance).run_requests or [])
    assert not _journeys_of(db, tenant, oid)
    with db.connect() as conn:
        why = conn.execute(
            sa.text(
                f"SELECT reason, new_service_date FROM {tenant.schema}.journey_audit "
                "WHERE journey_id = :j AND action = 'delete'"
            ),
            {"j": victim["id"]},
        ).one()
    assert tuple(why) == ("rescheduled", far)


@pytest.mark.usefixtures("synced")
def test_a_copy_delivered_while_the_details_are_fetched_waits_for_the_next_refresh(
    tenant: Tenant, db: sa.Engine, simulator: RunningSimulator
) -> None:
    [victim] = _victims(db, tenant, 1)
    oid = victim["external_ids"]["smartmoving_opportunity_id"]
    body = f'{{"event-type": "opportunity-changed", "opportunity-id": "{oid}"}}'.encode()
    assert store_event(db, tenant, body, read_event(body))
    events = pending_events(db, tenant)
    fetch_started = dt.datetime.now(dt.UTC)
    details = {oid: simulator.world.opportunity_detail(oid)}
    # the same thin body again, for a change made after the fetch began: one row, marked as come again
    assert not store_event(db, tenant, body, read_event(body))
    outcome = apply_refresh(db, tenant, events, details, calls={}, started_at=fetch_started, run_id="run-1")
    assert outcome.events_done == 0
    [event] = _events(db, tenant)
    assert event["state"] == "pending"


@pytest.mark.usefixtures("synced")
def test_an_event_no_refresh_could_serve_is_settled_after_three_tries(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, db: sa.Engine, simulator: RunningSimulator
) -> None:
    [victim] = _victims(db, tenant, 1)
    _post(db, tenant, "opportunity-changed", victim["external_ids"]["smartmoving_opportunity_id"])
    simulator.set_faults(FaultConfig(down=True))
    assert not _refresh(defs, tenant, instance).success
    [event] = _events(db, tenant)
    assert event["state"] == "pending" and event["attempts"] >= 1  # each try is counted, the run failed or not
    with db.begin() as conn:  # as if SmartMoving had failed it every time since
        conn.execute(sa.text(f"UPDATE {tenant.schema}.webhook_events SET attempts = :n"), {"n": MAX_REFRESH_ATTEMPTS})
    simulator.set_faults(FaultConfig())
    simulator.reset_stats()
    assert _refresh(defs, tenant, instance).success
    [event] = _events(db, tenant)
    assert event["state"] == "failed" and "3 refreshes failed" in event["reason"]
    assert simulator.stats().get("opportunity", 0) == 0  # its calls are not spent again


@pytest.mark.usefixtures("synced")
def test_a_failed_refresh_leaves_the_inbox_pending_and_the_tables_as_they_were(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, db: sa.Engine, simulator: RunningSimulator
) -> None:
    [victim] = _victims(db, tenant, 1)
    oid = victim["external_ids"]["smartmoving_opportunity_id"]
    simulator.world.cancel_opportunity(oid)
    _post(db, tenant, "opportunity-status-changed", oid)
    with db.connect() as conn:
        raw_before = conn.execute(
            sa.text(f"SELECT count(*), max(fetched_at) FROM {tenant.schema}.raw_opportunities")
        ).one()
    simulator.set_faults(FaultConfig(down=True))
    assert not _refresh(defs, tenant, instance).success
    [event] = _events(db, tenant)
    assert event["state"] == "pending" and event["run_id"] is None
    with db.connect() as conn:
        assert (
            conn.execute(sa.text(f"SELECT count(*), max(fetched_at) FROM {tenant.schema}.raw_opportunities")).one()
            == raw_before
        )
    # just after a failure the sensor waits before the next refresh: SmartMoving is not hammered
    assert not _tick(defs, instance).run_requests


@pytest.mark.usefixtures("synced")
def test_a_rejected_key_settles_the_events_as_failed_naming_the_setting(
    defs: dg.Definitions,
    tenant: Tenant,
    instance: dg.DagsterInstance,
    db: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [victim] = _victims(db, tenant, 1)
    _post(db, tenant, "opportunity-changed", victim["external_ids"]["smartmoving_opportunity_id"])
    monkeypatch.setenv(tenant.smartmoving.api_key_env, "not-the-key")
    assert not _refresh(defs, tenant, instance).success
    [event] = _events(db, tenant)
    # retrying cannot heal a rejected key: settled, with the setting to fix; the cycle reconciles the change
    assert event["state"] == "failed" and tenant.smartmoving.api_key_env in event["reason"]
    assert "not-the-key" not in event["reason"]
    assert not _tick(defs, instance).run_requests


def test_one_tick_serves_every_tenants_inbox_and_a_busy_tenant_does_not_hold_up_another(
    database_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance, db: sa.Engine
) -> None:
    import yaml

    from lgm_pipeline import settings
    from lgm_pipeline.definitions import build_definitions
    from lgm_pipeline.tenants import config as tenants_config
    from lgm_pipeline.tenants import load_tenants
    from lgm_pipeline_tests.conftest import migrate_database

    lgm = yaml.safe_load(tenants_config.DEFAULT_TENANTS_FILE.read_text())["tenants"][0]
    acme = {**lgm, "key": "acme", "client_id": "clm_acme", "name": "Acme Movers"}
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [lgm, acme]}))
    monkeypatch.setenv(settings.TENANTS_FILE_ENV, str(path))
    tenants = load_tenants()
    migrate_database(tenants)
    defs = build_definitions()
    for tenant in tenants:
        _post(db, tenant, "opportunity-changed", f"opp-of-{tenant.key}")

    tick = _tick(defs, instance)
    assert sorted(r.job_name for r in tick.run_requests or []) == sorted(raw_job_name(t) for t in tenants)

    # lgm's refresh is running (the sensor's or one launched by hand): acme's inbox is still served
    lgm_job = defs.resolve_job_def(raw_job_name(tenants[0]))
    instance.create_run_for_job(lgm_job, status=dg.DagsterRunStatus.STARTED, tags={**lgm_job.tags, **REFRESH_RUN_TAGS})
    [request] = _tick(defs, instance, cursor=tick.cursor).run_requests or []
    assert request.job_name == raw_job_name(tenants[1])
