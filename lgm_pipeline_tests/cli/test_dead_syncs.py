"""Runs left in progress by a dead ``lgm sync`` are settled; runs of a live process or another host are not."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import dagster as dg
import psutil
import pytest
from dagster._core.test_utils import create_run_for_test

from lgm_pipeline.cli.dead_syncs import HOST_TAG, PID_TAG, PROCESS_STARTED_TAG, owner_tags, settle_runs_of_dead_syncs


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    yield instance
    instance.dispose()


def _dead_process_tags() -> dict[str, str]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tags = {
        **owner_tags(),
        PID_TAG: str(child.pid),
        PROCESS_STARTED_TAG: f"{psutil.Process(child.pid).create_time():.2f}",
    }
    child.wait()
    return tags


def _started(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    return create_run_for_test(instance, status=dg.DagsterRunStatus.STARTED, tags=tags).run_id


def test_the_run_of_a_dead_sync_is_marked_failed_with_the_reason(instance: dg.DagsterInstance) -> None:
    run_id = _started(instance, _dead_process_tags())
    [settled] = settle_runs_of_dead_syncs(instance)
    assert settled.run_id == run_id
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    assert "was killed" in settled.line and "pool slot freed" in settled.line


def test_runs_of_a_live_process_another_host_or_a_reused_pid_are_left_alone(instance: dg.DagsterInstance) -> None:
    mine = _started(instance, owner_tags())
    elsewhere = _started(instance, {**_dead_process_tags(), HOST_TAG: f"not-{socket.gethostname()}"})
    untagged = _started(instance, {})
    assert settle_runs_of_dead_syncs(instance) == []
    for run_id in (mine, elsewhere, untagged):
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.STARTED


def test_a_pid_given_to_a_new_process_does_not_keep_the_dead_run_alive(instance: dg.DagsterInstance) -> None:
    # Our own pid, but another start time: the sync that started the run is gone.
    run_id = _started(instance, {**owner_tags(), PROCESS_STARTED_TAG: "1.00"})
    assert [s.run_id for s in settle_runs_of_dead_syncs(instance)] == [run_id]
