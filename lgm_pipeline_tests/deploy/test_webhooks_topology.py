"""Webhooks end to end through the production topology: SmartMoving's POST -> the receiver -> the inbox ->
the daemon's webhook sensor -> a refresh run -> a journeys run -> the row on the board.

Nothing is launched by the test: the simulator posts its change to ``lgm serve``'s receiver, and the
daemon does the rest. A lost event is reconciled by the next cycle (the schedule ticks every minute here).
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterator

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa

from lgm_pipeline.assets.automation import raw_job_name
from lgm_pipeline.assets.webhooks import REFRESH_RUN_TAG, WEBHOOK_ASSET, WEBHOOK_SENSOR
from lgm_pipeline.simulator import RunningSimulator, SimulatorConfig, start_simulator
from lgm_pipeline.simulator.config import WebhookFaults
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.tenants import Tenant, load_tenants
from lgm_pipeline.webhooks.receiver import webhook_url
from lgm_pipeline_tests.deploy.conftest import Serve

pytestmark = pytest.mark.slow

FIRST_CYCLE_TIMEOUT_S = 420
#: The target is a minute; a busy 2-core CI machine with a cycle every minute gets twice that.
EVENT_TIMEOUT_S = 120


@pytest.fixture
def simulator() -> Iterator[RunningSimulator]:
    with start_simulator(SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=20)) as sim:
        yield sim


def _job_row(db: sa.Engine, tenant: Tenant, job_id: str) -> dict | None:
    with db.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT service_date, status FROM {tenant.schema}.journeys WHERE smartmoving_job_id = :j"),
            {"j": job_id},
        ).first()
    return dict(row._mapping) if row else None


def _board_ready(db: sa.Engine, tenant: Tenant) -> list[dict]:
    """Single-job bookings on their branch's today, once every branch's window is on the board."""
    now = dt.datetime.now(dt.UTC)
    with db.connect() as conn:
        done = {
            tuple(r)
            for r in conn.execute(
                sa.text(
                    f"SELECT DISTINCT service_date, location_id FROM {tenant.schema}.sync_runs WHERE asset = 'journeys'"
                )
            )
        }
        if not {(d, b.location_id) for b in tenant.branches for d in b.window(now)} <= done:
            return []
        rows = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {tenant.schema}.journeys"))]
    today = {b.location_id: b.today(now) for b in tenant.branches}
    counts: dict[str, int] = {}
    for row in rows:
        oid = row["external_ids"]["smartmoving_opportunity_id"]
        counts[oid] = counts.get(oid, 0) + 1
    return [
        r
        for r in rows
        if r["status"] == "BOOKED"
        and r["service_date"] == today[r["location_id"]]
        and counts[r["external_ids"]["smartmoving_opportunity_id"]] == 1
    ]


def test_a_change_in_smartmoving_reaches_the_board_through_the_daemon_and_a_lost_one_through_the_cycle(
    start_serve, simulator: RunningSimulator, database_url: str
) -> None:
    tenant = load_tenants()[0]
    token = secrets.token_urlsafe(32)
    serve: Serve = start_serve(
        {
            tenant.smartmoving.base_url_env: simulator.base_url,
            tenant.smartmoving.api_key_env: simulator.api_key,
            tenant.smartmoving.webhook_token_env: token,
        }
    )
    assert "webhooks" in serve.services(), serve.log_tail()
    db = create_engine(database_url)
    try:
        victims = serve.wait_for(
            "the first cycle on the board", FIRST_CYCLE_TIMEOUT_S, lambda: _board_ready(db, tenant)
        )
        moved, lost = victims[0], victims[1]  # type: ignore[index]
        url = webhook_url("127.0.0.1", serve.webhook_port, tenant.key, token)
        # the receiver: a wrong token is a 404 that stores nothing
        wrong = webhook_url("127.0.0.1", serve.webhook_port, tenant.key, secrets.token_urlsafe(32))
        assert httpx.post(wrong, json={"event-type": "opportunity-changed", "opportunity-id": "x"}).status_code == 404

        simulator.set_webhooks(url)
        tomorrow = moved["service_date"] + dt.timedelta(days=1)
        simulator.world.reschedule_job(moved["smartmoving_job_id"], tomorrow)
        changed_at = time.monotonic()
        serve.wait_for(
            "the moved job on its new date",
            EVENT_TIMEOUT_S,
            lambda: (row := _job_row(db, tenant, moved["smartmoving_job_id"])) and row["service_date"] == tomorrow,
        )
        print(f"event -> journeys row: {time.monotonic() - changed_at:.1f} s")
        with db.connect() as conn:
            [event] = conn.execute(sa.text(f"SELECT * FROM {tenant.schema}.webhook_events")).all()
        assert (event.event_type, event.opportunity_id, event.state) == (
            "opportunity-changed",
            moved["external_ids"]["smartmoving_opportunity_id"],
            "done",
        )
        refresh = serve.instance.get_run_by_id(event.run_id)
        assert refresh is not None and refresh.job_name == raw_job_name(tenant)
        assert refresh.asset_selection == {tenant.names.asset_key(WEBHOOK_ASSET)}
        assert refresh.tags.get("dagster/sensor_name") == WEBHOOK_SENSOR
        rebuilt = serve.instance.get_run_records(dg.RunsFilter(tags={REFRESH_RUN_TAG: event.run_id}))
        assert {r.dagster_run.tags["dagster/partition"] for r in rebuilt} == set(event.partitions)
        assert len(event.partitions) == 2  # the job's old and new (date, branch)

        # a lost event: the next cycle (every minute here) reconciles the board
        simulator.set_webhooks(url, WebhookFaults(loss_rate=1.0))
        simulator.world.cancel_opportunity(lost["external_ids"]["smartmoving_opportunity_id"])
        serve.wait_for(
            "the cycle to reconcile a lost event",
            FIRST_CYCLE_TIMEOUT_S,
            lambda: (row := _job_row(db, tenant, lost["smartmoving_job_id"])) is None or row["status"] == "CANCELLED",
        )
        assert simulator.webhook_stats()["lost"] == 1
    finally:
        db.dispose()
