"""The production topology end to end: schedule tick -> raw pull -> journeys, through the daemon alone.

``lgm serve`` runs the gRPC code server, the daemon, the webserver and the webhook receiver as four processes
against the test PostgreSQL (conftest.py). Nothing is launched by the test: the refresh schedule ticks every minute
and the automation sensor follows. The assertions are on materialized partitions, not on run counts,
so they hold whether journeys are built one run per partition or several partitions per run.
"""

from __future__ import annotations

import datetime as dt
import secrets
import signal
import time
from collections.abc import Callable, Iterator

import dagster as dg
import httpx
import psutil
import pytest
import yaml

from lgm_pipeline.assets.automation import AUTOMATION_RUN_TAGS
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.settings import TENANTS_FILE_ENV
from lgm_pipeline.simulator import RunningSimulator, SimulatorConfig, start_simulator
from lgm_pipeline.tenants import Tenant, load_tenants
from lgm_pipeline.tenants.config import DEFAULT_TENANTS_FILE
from lgm_pipeline_tests.deploy.conftest import STOP_TIMEOUT_S, Serve

pytestmark = pytest.mark.slow

#: A tick comes within a minute; the raw run then takes about a minute on a busy 2-core machine (a step
#: subprocess per asset), the journeys partitions a minute or two more, 3 runs of a tenant at a time.
FIRST_CYCLE_TIMEOUT_S = 420
#: After the restart: the code server's load, the next tick, and the runs queued behind the tenant's pool.
NEXT_TICK_TIMEOUT_S = 360
SCHEDULE_TAG = "dagster/schedule_name"


@pytest.fixture
def simulator() -> Iterator[RunningSimulator]:
    # A small frozen world: the test is about processes, not volume.
    with start_simulator(SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=20)) as sim:
        yield sim


def _smartmoving_env(tenant: Tenant, sim: RunningSimulator) -> dict[str, str]:
    return {tenant.smartmoving.base_url_env: sim.base_url, tenant.smartmoving.api_key_env: sim.api_key}


def _schedule_runs(serve: Serve, tenant: Tenant) -> list[dg.RunRecord]:
    """The tenant's refresh runs, oldest first: the schedule's, never the test's."""
    tags = {SCHEDULE_TAG: tenant.names.schedule("every_2_hours")}
    return sorted(serve.instance.get_run_records(dg.RunsFilter(tags=tags)), key=lambda r: r.create_timestamp)


def _runs_with(status: dg.DagsterRunStatus, after: dt.datetime | None = None) -> Callable[[list], list]:
    def pick(records: list[dg.RunRecord]) -> list[dg.RunRecord]:
        return [r for r in records if r.dagster_run.status == status and (after is None or r.create_timestamp > after)]

    return pick


def _expected_journeys(tenant: Tenant, now: dt.datetime) -> set[str]:
    """Every branch's own today and tomorrow (the automation rebuilds a branch only inside its window)."""
    return {str(journey_partition_key(d.isoformat(), b.location_id)) for b in tenant.branches for d in b.window(now)}


def _failed_journeys(serve: Serve, tenant: Tenant) -> list[dg.RunRecord]:
    key = tenant.names.asset_key("journeys")
    return [
        r
        for r in serve.instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        if r.dagster_run.asset_selection and key in r.dagster_run.asset_selection
    ]


def _graphql_run_ids(serve: Serve) -> set[str]:
    query = "{ runsOrError(limit: 500) { __typename ... on Runs { results { runId status jobName } } } }"
    response = httpx.post(serve.url("graphql"), json={"query": query}, timeout=30)
    response.raise_for_status()
    runs = response.json()["data"]["runsOrError"]
    assert runs["__typename"] == "Runs", runs
    return {r["runId"] for r in runs["results"]}


def _failure_text(serve: Serve, run_id: str) -> str:
    kinds = {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    events = serve.instance.all_logs(run_id, of_type=kinds)
    return "\n".join(f"{e.message} {e.dagster_event.event_specific_data if e.dagster_event else ''}" for e in events)


def test_schedule_tick_builds_the_window_through_the_daemon_and_survives_a_killed_code_server(
    start_serve, simulator: RunningSimulator
) -> None:
    tenant = load_tenants()[0]
    token_env = tenant.smartmoving.webhook_token_env
    assert token_env
    token = secrets.token_urlsafe(32)
    started = time.monotonic()
    serve = start_serve({**_smartmoving_env(tenant, simulator), token_env: token})
    ready_after = time.monotonic() - started
    services = serve.services()
    assert set(services) == {"code", "daemon", "web", "webhooks"}, serve.log_tail()
    assert not any("dagster dev" in " ".join(p.cmdline()) for p in psutil.Process(serve.process.pid).children(True))

    # 0. the webhook receiver: its URL printed with the token variable's name, a delivery stored
    receiver = f"http://127.0.0.1:{serve.webhook_port}"
    printed = f"Webhooks: {receiver}/webhooks/smartmoving/{tenant.key}/${token_env}"
    serve.wait_for("the webhook receiver's URL", 60, lambda: serve.log_lines("Webhooks: ") == [printed])
    # a customer event naming no opportunity: stored (ignored), so no refresh run joins the runs counted below
    delivered = httpx.post(
        f"{receiver}/webhooks/smartmoving/{tenant.key}/{token}",
        json={"event-type": "customer-updated", "customer-id": "c-topology"},
        timeout=10,
    )
    assert (delivered.status_code, delivered.json()) == (200, {"stored": True})
    assert httpx.post(f"{receiver}/webhooks/smartmoving/{tenant.key}/nope", json={}, timeout=10).status_code == 404

    # 1. a real tick, its raw run, and the journeys the automation sensor launches after it
    [first, *_] = serve.wait_for(
        "a successful raw run of the schedule",
        FIRST_CYCLE_TIMEOUT_S,
        lambda: _runs_with(dg.DagsterRunStatus.SUCCESS)(_schedule_runs(serve, tenant)),
    )
    tick_at = first.create_timestamp.timestamp()
    print(f"first raw run done {time.monotonic() - started:.1f} s after start ({first.end_time - tick_at:.1f} s long)")
    now = dt.datetime.now(dt.UTC)
    today = tenant.today(now)
    raw_key, journeys_key = tenant.names.asset_key("smartmoving_jobs"), tenant.names.asset_key("journeys")
    assert {
        today.isoformat(),
        (today + dt.timedelta(days=1)).isoformat(),
    } <= serve.instance.get_materialized_partitions(raw_key)
    expected = _expected_journeys(tenant, now)

    def journeys_runs_of(records: list[dg.RunRecord]) -> list[dg.RunRecord]:
        return [r for r in records if r.dagster_run.asset_selection and journeys_key in r.dagster_run.asset_selection]

    def journeys_done() -> bool:
        assert not _failed_journeys(serve, tenant), serve.log_tail()
        # a partition counts as materialized before its run ends: wait for the runs too
        runs = journeys_runs_of(serve.instance.get_run_records())
        return (
            expected <= serve.instance.get_materialized_partitions(journeys_key)
            and bool(runs)
            and all(r.dagster_run.is_finished for r in runs)
        )

    serve.wait_for(f"all {len(expected)} branch partitions of journeys", FIRST_CYCLE_TIMEOUT_S, journeys_done)
    tick_to_journeys = time.time() - tick_at
    print(f"journeys done {tick_to_journeys:.1f} s after the tick")
    journeys_runs = journeys_runs_of(
        serve.instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    )
    # launched by the daemon's automation sensor, not by anyone else
    assert journeys_runs and all(r.dagster_run.tags.get("dagster/sensor_name") for r in journeys_runs)
    assert all(AUTOMATION_RUN_TAGS.items() <= r.dagster_run.tags.items() for r in journeys_runs)

    # 2. the webserver answers GraphQL from the same storage
    listed = _graphql_run_ids(serve)
    assert first.dagster_run.run_id in listed
    assert {r.dagster_run.run_id for r in journeys_runs} <= listed

    # 3. SIGKILL the code server: lgm serve says so in one line and starts another; the next tick succeeds
    code = services["code"]
    code.send_signal(signal.SIGKILL)
    killed_at = dt.datetime.now(dt.UTC)
    restarted = serve.wait_for(
        "a new code server",
        60,
        lambda: (p := serve.services().get("code")) is not None and p.pid != code.pid and p,
    )
    assert serve.log_lines(f"lgm: the code server (pid {code.pid})") == [
        f"lgm: the code server (pid {code.pid}) exited (killed by SIGKILL); restarting it"
    ]
    after = serve.wait_for(
        "a successful raw run of a tick after the restart",
        NEXT_TICK_TIMEOUT_S,
        lambda: _runs_with(dg.DagsterRunStatus.SUCCESS, after=killed_at)(_schedule_runs(serve, tenant)),
    )
    assert after[0].dagster_run.run_id in _graphql_run_ids(serve)
    assert serve.services()["daemon"].pid == services["daemon"].pid  # neither needed a restart
    assert serve.services()["web"].pid == services["web"].pid
    assert serve.services()["webhooks"].pid == services["webhooks"].pid

    # 4. Ctrl-C stops all four (and their run workers) promptly, exit 0
    tree = [*serve.services().values(), restarted]
    stopping = time.monotonic()
    serve.process.send_signal(signal.SIGINT)
    returncode = serve.process.wait(timeout=STOP_TIMEOUT_S)
    stopped_after = time.monotonic() - stopping
    assert returncode == 0, serve.log_tail()
    assert not [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    print(
        f"UI answered {ready_after:.1f} s after start; tick -> last of {len(expected)} journeys partitions "
        f"{tick_to_journeys:.1f} s; code server restarted and next tick ok "
        f"{after[0].end_time - killed_at.timestamp():.1f} s after the kill; stopped {stopped_after:.1f} s after SIGINT"
    )
    assert token not in serve.log_path.read_text(errors="replace")


def test_a_tenant_without_its_key_fails_only_its_own_runs(start_serve, simulator: RunningSimulator, tmp_path) -> None:
    tenants = yaml.safe_load(DEFAULT_TENANTS_FILE.read_text())
    [lgm] = tenants["tenants"]
    acme = {
        **lgm,
        "key": "acme",
        "client_id": "clm_acme",
        "name": "Acme Movers",
        "smartmoving": {**lgm["smartmoving"], "api_key_env": "ACME_SM_KEY", "base_url_env": "ACME_SM_URL"},
        "branches": [{"location_id": "loc_acme_1", "name": "One", "smartmoving_branch_name": "ONE"}],
    }
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump({"tenants": [lgm, acme]}, allow_unicode=True))
    tenant = load_tenants()[0]
    # acme's base URL is set, its key is not
    env = {
        **_smartmoving_env(tenant, simulator),
        "ACME_SM_URL": simulator.base_url,
        TENANTS_FILE_ENV: str(tenants_file),
    }
    serve = start_serve(env)
    [warning] = serve.log_lines("lgm: tenant acme:")
    assert warning.startswith("lgm: tenant acme: ACME_SM_KEY not set: its SmartMoving runs will fail"), warning
    acme_tenant = next(t for t in _tenants(tenants_file) if t.key == "acme")

    [failed, *_] = serve.wait_for(
        "acme's failed raw run",
        FIRST_CYCLE_TIMEOUT_S,
        lambda: _runs_with(dg.DagsterRunStatus.FAILURE)(_schedule_runs(serve, acme_tenant)),
    )
    message = _failure_text(serve, failed.dagster_run.run_id)
    assert "ACME_SM_KEY" in message and "is not set" in message, message
    # lgm's schedule is not held up: a raw run of the same tick or later succeeds
    serve.wait_for(
        "lgm's successful raw run",
        FIRST_CYCLE_TIMEOUT_S,
        lambda: [
            r
            for r in _runs_with(dg.DagsterRunStatus.SUCCESS)(_schedule_runs(serve, tenant))
            if r.create_timestamp >= failed.create_timestamp - dt.timedelta(seconds=30)
        ],
    )
    assert not _runs_with(dg.DagsterRunStatus.FAILURE)(_schedule_runs(serve, tenant))
    assert simulator.api_key not in serve.log_path.read_text(errors="replace")


def _tenants(path) -> list[Tenant]:
    from lgm_pipeline.tenants.config import parse_tenants

    return list(parse_tenants(yaml.safe_load(path.read_text())))
