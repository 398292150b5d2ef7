"""Ctrl-C and SIGTERM stop `lgm sync` (a real subprocess) within seconds, at every moment that used to hang.

Each test starts `lgm sync` against a simulator, waits until the sync is at the moment under test,
sends the signal and measures the time to exit; then checks the exit code, the summary and the runs
left in the instance (none still running, the interrupted one CANCELED).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from lgm_pipeline.simulator import FaultConfig, SimulatorConfig, start_simulator
from lgm_pipeline.simulator.server import RunningSimulator
from lgm_pipeline.storage.database import create_engine, dagster_database_name
from lgm_pipeline.tenants.config import get_tenant

#: The brief: the whole command stops within 10 s of the signal.
MAX_EXIT_SECONDS = 10.0
CALGARY = "loc_lgm_calgary_001"
DAY = "2026-11-25"

# Sends SIGINT to itself from inside the journeys write (its transaction open, rows merged), then keeps
# the transaction busy on the server, so the interrupt lands mid-write.
_INTERRUPT_THE_JOURNEYS_WRITE = """
import os, signal, sys, time
import sqlalchemy as sa
from lgm_pipeline.storage import write

original = write._record_sync_run

def record_then_interrupt(conn, tenant, **kwargs):
    original(conn, tenant, **kwargs)
    if kwargs["asset"] == "journeys":
        print("test: interrupting the journeys write", file=sys.stderr, flush=True)
        if os.environ.get("TEST_STUCK_AFTER_INTERRUPT"):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                conn.execute(sa.text("SELECT pg_sleep(20)"))
            finally:
                time.sleep(30)  # a clean-up that hangs: only a second Ctrl-C gets the operator out
        # The interrupt lands here, or in the statement: the transaction is open, the rows merged.
        os.kill(os.getpid(), signal.SIGINT)
        conn.execute(sa.text("SELECT pg_sleep(20)"))

write._record_sync_run = record_then_interrupt
from lgm_pipeline.cli.main import main
sys.argv = ["lgm", *sys.argv[1:]]
sys.exit(main())
"""


@dataclass
class Finished:
    returncode: int
    seconds: float  # from the (first) signal to the exit
    stdout: str
    stderr: str


@pytest.fixture
def simulator() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=15)
    with start_simulator(config) as sim:
        yield sim


@pytest.fixture
def lgm_env(database_url: str, simulator: RunningSimulator, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        SMARTMOVING_BASE_URL=simulator.base_url,
        SMARTMOVING_API_KEY=simulator.api_key,
        LGM_SMARTMOVING_RATE_LIMIT="off",
        LGM_DATABASE_URL=database_url,
        LGM_HOME=str(tmp_path / "lgm_home"),
    )
    return env


def _interrupt(
    env: dict[str, str],
    args: list[str],
    ready: Callable[[], bool],
    signals: tuple[signal.Signals, ...] = (signal.SIGINT,),
    script: str | None = None,
    timeout: float = 120.0,
) -> Finished:
    """Run `lgm <args>`; once ``ready()``, send ``signals`` (0.3 s apart); wait for the exit."""
    command = (
        [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "lgm_pipeline.cli.main", *args]
    )
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, f"lgm exited before the moment under test: {process.communicate()}"
            assert time.monotonic() < deadline, "the moment under test never came"
            time.sleep(0.05)
        sent = time.monotonic()
        for index, signo in enumerate(signals):
            if index:
                time.sleep(0.3)
            process.send_signal(signo)
        stdout, stderr = process.communicate(timeout=60)
        return Finished(process.returncode, time.monotonic() - sent, stdout, stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _run_statuses(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url, dagster_database_name(database_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT run_id, status FROM runs")).all())
    finally:
        engine.dispose()


def _held_pool_slots(database_url: str) -> int:
    """Slots of the tenant's API pool still held or claimed by a run (a later pull would wait for them)."""
    engine = create_engine(database_url, dagster_database_name(database_url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            held = conn.execute(sa.text("SELECT count(*) FROM concurrency_slots WHERE run_id IS NOT NULL"))
            pending = conn.execute(sa.text("SELECT count(*) FROM pending_steps"))
            return int(held.scalar_one()) + int(pending.scalar_one())
    finally:
        engine.dispose()


def _stats(simulator: RunningSimulator, name: str) -> int:
    return int(simulator.stats().get(name, 0))


def _assert_stopped(finished: Finished, code: int, database_url: str) -> dict[str, str]:
    print(f"{signal.Signals(code - 128).name} -> exit in {finished.seconds:.2f} s")  # shown with -s
    assert finished.returncode == code, (finished.stdout, finished.stderr)
    assert finished.seconds < MAX_EXIT_SECONDS, finished.seconds
    assert "Traceback" not in finished.stderr, finished.stderr
    assert f"INTERRUPTED ({signal.Signals(code - 128).name})" in finished.stdout
    statuses = _run_statuses(database_url)
    assert statuses, "the interrupted run is in the instance"
    assert not set(statuses.values()) & {"STARTED", "STARTING", "NOT_STARTED", "CANCELING", "QUEUED"}, statuses
    assert "CANCELED" in statuses.values(), statuses
    assert _held_pool_slots(database_url) == 0, "the canceled run gave its pool slot back"
    return statuses


def test_sigint_during_an_api_call_stops_at_once(lgm_env, simulator, database_url) -> None:
    simulator.set_faults(FaultConfig(latency_ms=20_000))
    finished = _interrupt(lgm_env, ["sync"], ready=lambda: _stats(simulator, "total") >= 1)
    _assert_stopped(finished, 130, database_url)
    assert "lgm: SIGINT received: stopping" in finished.stderr
    assert "journeys finished for nothing" in finished.stdout


def test_sigterm_during_the_client_backoff_stops_at_once(lgm_env, simulator, database_url) -> None:
    # Every call fails: the client is between its own retries (backoff waits) when the signal comes.
    simulator.set_faults(FaultConfig(error_rate=1.0))
    finished = _interrupt(lgm_env, ["sync"], ready=lambda: _stats(simulator, "errors") >= 2, signals=(signal.SIGTERM,))
    _assert_stopped(finished, 143, database_url)


@pytest.mark.slow  # the client's six attempts take ~8 s before the step's retry wait begins
def test_sigint_during_the_step_retry_wait_stops_at_once(lgm_env, simulator, database_url) -> None:
    # The step failed after the client's retries; Dagster waits ~30-60 s before its RetryPolicy's next attempt.
    simulator.set_faults(FaultConfig(error_rate=1.0))
    attempts = 6  # the client's max_retries (5) + 1
    finished = _interrupt(lgm_env, ["sync"], ready=lambda: _stats(simulator, "errors") >= attempts)
    _assert_stopped(finished, 130, database_url)
    assert _stats(simulator, "errors") <= attempts + 1, "no retry of the step after the interrupt"


def _until_the_write_interrupts_itself(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    command = [sys.executable, "-c", _INTERRUPT_THE_JOURNEYS_WRITE, "sync", "--date", DAY, "--branch", CALGARY]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen: list[str] = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("test: interrupting the journeys write"):
            return process, seen
    process.kill()
    raise AssertionError(f"the journeys write never ran: {''.join(seen)}")


def test_sigint_during_the_journeys_write_rolls_it_back(lgm_env, simulator, database_url) -> None:
    process, seen = _until_the_write_interrupts_itself(lgm_env)
    try:
        sent = time.monotonic()
        stdout, stderr = process.communicate(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    stderr = "".join(seen) + stderr
    print(f"SIGINT in the journeys write -> exit in {seconds:.2f} s")  # shown with -s
    assert process.returncode == 130, (stdout, stderr)
    assert seconds < MAX_EXIT_SECONDS, seconds
    assert "Traceback" not in stderr, stderr
    assert "INTERRUPTED (SIGINT)" in stdout
    schema = get_tenant("lgm").schema
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            journeys = conn.execute(sa.text(f"SELECT count(*) FROM {schema}.journeys")).scalar_one()
            logged = conn.execute(
                sa.text(f"SELECT count(*) FROM {schema}.sync_runs WHERE asset = 'journeys'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert (journeys, logged) == (0, 0), "the interrupted write is rolled back, its sync_runs row with it"
    statuses = _run_statuses(database_url)
    assert sorted(statuses.values()) == ["CANCELED", "SUCCESS"], statuses  # the raw pull finished, journeys not


def test_a_second_sigint_exits_at_once(lgm_env, simulator, database_url) -> None:
    # The first Ctrl-C lands in the journeys write, whose clean-up then hangs (30 s): the second one exits.
    process, _ = _until_the_write_interrupts_itself({**lgm_env, "TEST_STUCK_AFTER_INTERRUPT": "1"})
    try:
        time.sleep(1.0)
        assert process.poll() is None, ("still stuck after the first interrupt", process.communicate())
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    print(f"second SIGINT -> exit in {seconds:.2f} s")  # shown with -s
    assert process.returncode == 130, stderr
    assert seconds < 2.0
    assert "SIGINT received again: exiting now" in stderr
