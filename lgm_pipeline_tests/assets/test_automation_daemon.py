"""The journeys automation through a real ``dagster-daemon``: a raw pull is followed by its 12 partitions, once,
in one run per date.

The daemon runs as a subprocess, as in a deployment: the package's ``dagster.yaml`` (PostgreSQL
storage in the test database's ``_dagster`` twin), its workspace, the simulator as SmartMoving. The
test pulls the window as the 2-hour schedule's run does, then only watches: the automation sensor's
ticks and the runs the daemon launches.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._core.storage.tags import BACKFILL_ID_TAG

from lgm_pipeline.assets.automation import AUTOMATION_RUN_TAGS, AUTOMATION_SENSOR, range_tags
from lgm_pipeline.assets.partitions import tenant_partitions
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.settings import DAGSTER_STORAGE_URL_ENV, DEFAULT_AUTOMATION_INTERVAL_S
from lgm_pipeline.storage.database import dagster_database_name, dagster_storage_url, ensure_database
from lgm_pipeline.sync import journeys_runs
from lgm_pipeline.tenants import Tenant
from lgm_pipeline_tests.assets.conftest import journeys_partitions_of
from lgm_pipeline_tests.conftest import pull_cycle

CLI_DIR = Path(__file__).resolve().parents[2] / "lgm_pipeline" / "cli"
#: From the raw pull to the 12th partition: up to a sensor interval, the backfill daemon's next
#: iteration, then 2 runs, each ~10-20 s of process start-up (run worker + step subprocess) on 2 cores.
REBUILT_TIMEOUT_S = 300
TICK_TIMEOUT_S = DEFAULT_AUTOMATION_INTERVAL_S * 3


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    instance: dg.DagsterInstance
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def daemon(migrated_database_url: str, simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    database_url = migrated_database_url  # the daemon's runs check the schema, as lgm serve's after its start-up
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(CLI_DIR / "dagster.yaml", home / "dagster.yaml")
    shutil.copyfile(CLI_DIR / "workspace.yaml", tmp_path / "workspace.yaml")
    ensure_database(database_url, dagster_database_name(database_url))  # dropped by the database_url fixture
    monkeypatch.setenv(DAGSTER_STORAGE_URL_ENV, dagster_storage_url(database_url))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    log_path = tmp_path / "daemon.log"
    instance = dg.DagsterInstance.get()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", str(tmp_path / "workspace.yaml")],
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run workers share its process group
        )
    try:
        yield Daemon(process, instance, log_path)
    finally:
        # The whole group we started: the daemon, its code server and any run worker still going. The
        # code server outlives a SIGTERM to the group while its runs wind down: what is left gets SIGKILL.
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        instance.dispose()


def _automation_ticks(daemon: Daemon) -> list:
    name = AUTOMATION_SENSOR
    for state in daemon.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.origin.instigator_name == name:
            ticks = daemon.instance.get_ticks(state.instigator_origin_id, state.selector_id)
            return [t for t in ticks if t.status != TickStatus.STARTED]
    return []


def _wait_for_tick(daemon: Daemon, after: int) -> list:
    """The finished ticks once there are more than ``after`` of them (newest first)."""
    deadline = time.monotonic() + TICK_TIMEOUT_S
    while time.monotonic() < deadline:
        assert daemon.process.poll() is None, daemon.log_tail()
        ticks = _automation_ticks(daemon)
        if len(ticks) > after:
            return ticks
        time.sleep(1)
    pytest.fail(f"no automation tick within {TICK_TIMEOUT_S} s:\n{daemon.log_tail()}")


def _journeys_runs(daemon: Daemon, tenant: Tenant) -> list[dg.DagsterRun]:
    key = tenant.names.asset_key("journeys")
    return [r for r in daemon.instance.get_runs() if r.asset_selection and key in r.asset_selection]


@pytest.mark.slow
def test_daemon_rebuilds_each_branch_partition_of_a_pulled_window_once(daemon: Daemon, tenant, window) -> None:
    started = time.monotonic()
    # the sensor's first evaluation only records the state (it would request nothing)
    first = _wait_for_tick(daemon, after=0)
    print(f"first automation tick {time.monotonic() - started:.1f} s after the daemon started")

    # the 2-hour schedule's run: today and tomorrow, in one run, recorded in the daemon's instance
    defs = build_definitions()
    assert pull_cycle(defs, tenant, daemon.instance, tags=range_tags(window)).success
    pulled = time.monotonic()

    expected = {str(journey_partition_key(d.isoformat(), b)) for d in window for b in tenant.location_ids}
    key = tenant.names.asset_key("journeys")
    deadline = pulled + REBUILT_TIMEOUT_S
    while True:
        assert daemon.process.poll() is None, daemon.log_tail()
        runs = _journeys_runs(daemon, tenant)
        done = {k for r in runs if r.status == dg.DagsterRunStatus.SUCCESS for k in journeys_partitions_of(r, tenant)}
        failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        assert not failed, daemon.log_tail()
        if done >= expected:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{len(done)} of 12 partitions rebuilt after {REBUILT_TIMEOUT_S} s:\n{daemon.log_tail()}")
        time.sleep(1)
    rebuilt_after = time.monotonic() - pulled

    # the automation sensor's backfill made one run per pulled date, each over all its branches: what lgm sync runs
    assert len(runs) == len(window)
    partitions_def = tenant_partitions(tenant).journeys
    assert sorted(journeys_partitions_of(r, tenant) for r in runs) == sorted(
        journeys_runs(
            partitions_def, [str(journey_partition_key(d.isoformat(), b)) for d in window for b in tenant.location_ids]
        )
    )
    backfills = {r.tags.get(BACKFILL_ID_TAG) for r in runs}
    assert len(backfills) == 1 and None not in backfills
    # the location's sensor launched them (its fixed run tags), one tenant's journeys each
    assert all(AUTOMATION_RUN_TAGS.items() <= r.tags.items() for r in runs)
    assert all(r.asset_selection == {key} for r in runs)
    materialized = daemon.instance.get_materialized_partitions(key)
    assert materialized == expected
    # a backfill runs every check of journeys: the freshness check rides along, as in lgm sync's runs
    checks = {
        e.dagster_event.event_specific_data.check_name  # type: ignore[union-attr]
        for r in runs
        for e in daemon.instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    }
    assert "journeys_freshness" in checks and "branch_volume" in checks

    # the next ticks (runs done, nothing new pulled) launch nothing more
    ticks = _wait_for_tick(daemon, after=len(_automation_ticks(daemon)))
    ticks = _wait_for_tick(daemon, after=len(ticks))
    assert len(_journeys_runs(daemon, tenant)) == len(window)
    requested = [t.requested_asset_materialization_count for t in reversed(ticks) if t.tick_id != first[-1].tick_id]
    print(
        f"12 partitions rebuilt in {len(runs)} runs {rebuilt_after:.1f} s after the raw pull; partitions requested "
        f"per tick: {requested}; test {time.monotonic() - started:.1f} s"
    )
    assert sum(requested) == 12
