"""``lgm up`` end to end: data in PostgreSQL, a run launched through the webserver's GraphQL, Ctrl-C."""

from __future__ import annotations

import signal
import time

import httpx
import psutil
import pytest
from dagster_graphql import DagsterGraphQLClient

from lgm_pipeline.assets.automation import journeys_job_name
from lgm_pipeline.assets.partitions import tenant_partitions
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline_tests.ui.conftest import STOP_TIMEOUT_S, LgmUp

# dagster-graphql's client calls gql with arguments gql has deprecated: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning")

RUN_TIMEOUT_S = 120
LOCATION_NAME = "lgm_pipeline"  # workspace.yaml
REPOSITORY_NAME = "__repository__"  # a code location built from a Definitions object


def test_first_sync_filled_every_branch_and_date_before_the_ui(lgm_up: LgmUp) -> None:
    print(f"lgm up: UI answered after {lgm_up.ready_after_s:.1f} s")
    schema = lgm_up.tenant.schema
    filled = {
        (r.service_date, r.location_id)
        for r in lgm_up.rows(f"SELECT DISTINCT service_date, location_id FROM {schema}.journeys")
    }
    assert filled == {(day, loc) for day in lgm_up.window for loc in lgm_up.tenant.location_ids}
    # the CRM's day views read the same rows
    assert lgm_up.scalar(f"SELECT count(*) FROM {schema}.journeys_today") > 0
    assert lgm_up.scalar(f"SELECT count(*) FROM {schema}.journeys_tomorrow") > 0
    log = lgm_up.log_path.read_text(errors="replace")
    assert "built-in simulator" in log  # the user is told where the data came from
    assert f"Dagster UI: http://127.0.0.1:{lgm_up.port}" in log


def test_the_webhook_receiver_runs_with_a_generated_token_never_printed(lgm_up: LgmUp) -> None:
    token_env = lgm_up.tenant.smartmoving.webhook_token_env
    printed = f"Webhooks: http://127.0.0.1:{lgm_up.webhook_port}/webhooks/smartmoving/lgm/${token_env}"
    deadline = time.monotonic() + 30
    while printed not in lgm_up.log_path.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.5)
    log = lgm_up.log_path.read_text(errors="replace")
    assert printed in log, lgm_up.log_tail()
    assert f"No {token_env} for tenant lgm: generated one for this run" in log
    receiver = psutil.Process(lgm_up.process.pid).children(recursive=True)
    [token] = {p.environ().get(token_env) for p in receiver if "webhooks serve" in _command(p)}
    assert token and len(token) >= 40 and token not in log
    url = f"http://127.0.0.1:{lgm_up.webhook_port}/webhooks/smartmoving/lgm"
    assert httpx.post(f"{url}/{token}", json={"event-type": "x-demo"}, timeout=10).json() == {"stored": True}
    assert httpx.post(f"{url}/wrong", json={"event-type": "x-demo"}, timeout=10).status_code == 404


def _submit_journeys_run(lgm_up: LgmUp, tags: dict[str, str]) -> tuple[str, str]:
    """Launch the journeys job over GraphQL as any client would; (run id, final status)."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=lgm_up.port, timeout=60)
    started = time.monotonic()
    run_id = client.submit_job_execution(
        journeys_job_name(lgm_up.tenant),
        repository_location_name=LOCATION_NAME,
        repository_name=REPOSITORY_NAME,
        tags=tags,
    )
    status = client.get_run_status(run_id)
    while status.value not in {"SUCCESS", "FAILURE", "CANCELED"} and time.monotonic() - started < RUN_TIMEOUT_S:
        time.sleep(1)
        status = client.get_run_status(run_id)
    print(f"GraphQL run {run_id}: {status.value} after {time.monotonic() - started:.1f} s")
    return run_id, status.value


# Dagster's own multi-partition run tags ("dagster/partition/<dimension>") trip its tag-name deprecation
# check when passed back to it; they are what the UI sends too.
@pytest.mark.filterwarnings("ignore:Non-compliant tag keys:DeprecationWarning")
@pytest.mark.parametrize("tags_sent", ["the UI's tags", "only dagster/partition"])
def test_graphql_launch_of_one_branch_partition_succeeds_and_is_recorded(lgm_up: LgmUp, tags_sent: str) -> None:
    tenant = lgm_up.tenant
    service_date, branch = lgm_up.window[0].isoformat(), "loc_lgm_toronto_001"
    key = journey_partition_key(service_date, branch)
    # The UI's partition picker sets "dagster/partition" = "<branch>|<date>" (dimension names sorted) plus one
    # tag per dimension; a script or another client may send the documented "dagster/partition" alone.
    tags = dict(tenant_partitions(tenant).journeys.get_tags_for_partition_key(str(key)))
    assert tags["dagster/partition"] == f"{branch}|{service_date}"
    if tags_sent == "only dagster/partition":
        tags = {"dagster/partition": tags["dagster/partition"]}

    run_id, status = _submit_journeys_run(lgm_up, tags)
    assert status == "SUCCESS", lgm_up.log_tail()

    schema = tenant.schema
    recorded = lgm_up.rows(
        f"SELECT asset, partition_key, service_date, location_id, rows_written, quarantined, status "
        f"FROM {schema}.sync_runs WHERE run_id = :run_id",
        run_id=run_id,
    )
    assert [(r.asset, r.partition_key, str(r.service_date), r.location_id, r.status) for r in recorded] == [
        ("journeys", f"{branch}|{service_date}", service_date, branch, "success")
    ]
    # only that branch and date were rebuilt, and its rows are there
    stored = lgm_up.scalar(
        f"SELECT count(*) FROM {schema}.journeys WHERE service_date = :d AND location_id = :b",
        d=lgm_up.window[0],
        b=branch,
    )
    assert stored > 0
    assert stored == recorded[0].rows_written - recorded[0].quarantined


def test_graphql_launch_with_a_malformed_partition_fails_naming_the_form(lgm_up: LgmUp) -> None:
    run_id, status = _submit_journeys_run(lgm_up, {"dagster/partition": f"toronto {lgm_up.window[0].isoformat()}"})
    assert status == "FAILURE"
    # The run's failure, as the UI shows it, says what a key looks like.
    client = DagsterGraphQLClient("127.0.0.1", port_number=lgm_up.port, timeout=60)
    query = """query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection {
        events { __typename ... on ExecutionStepFailureEvent { error { message } } } } } }"""
    events = client._execute(query, {"runId": run_id})["logsForRun"]["events"]
    errors = " ".join((e.get("error") or {}).get("message", "") for e in events)
    assert "is not of the form <location_id>|<YYYY-MM-DD>" in errors, errors


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.stops_lgm_up
def _command(process: psutil.Process) -> str:
    """A child's command line; a run worker that just finished may already be a zombie."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return f"<pid {process.pid} exited>"


def test_ctrl_c_stops_lgm_up_and_every_process_it_started(lgm_up: LgmUp) -> None:
    tree = psutil.Process(lgm_up.process.pid).children(recursive=True)
    commands = " ".join(_command(p) for p in tree)
    assert "lgm_pipeline.cli.webserver" in commands and "dagster._daemon" in commands, commands
    assert "webhooks serve" in commands, commands

    started = time.monotonic()
    lgm_up.process.send_signal(signal.SIGINT)
    returncode = lgm_up.process.wait(timeout=STOP_TIMEOUT_S)
    print(f"lgm up: stopped {time.monotonic() - started:.1f} s after Ctrl-C")
    assert returncode == 0, lgm_up.log_tail()
    assert "Stopped." in lgm_up.log_tail()

    # Orphans are reparented, not killed: give them a moment, then none may be left (zombies are dead).
    deadline = time.monotonic() + 10
    alive = tree
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if _alive(p)]
    assert not alive, [_command(p) for p in alive]
    with pytest.raises(httpx.TransportError):  # nothing listens on the port any more
        httpx.get(lgm_up.url("server_info"), timeout=2)
