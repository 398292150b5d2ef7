"""Faults on our side: a killed run, a killed database connection, overlapping runs, a restart.

Every journeys write is one transaction under a per-partition advisory lock; these tests break
it from outside, the way an OOM killer, a DBA or a double-clicked "Materialize" would.
"""

from __future__ import annotations

import datetime as dt
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from lgm_pipeline.assets.automation import journeys_job_name
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.settings import DATABASE_URL_ENV, HOME_ENV
from lgm_pipeline.storage import merge, write
from lgm_pipeline.storage.tables import journeys
from lgm_pipeline.tenants import Tenant
from lgm_pipeline_tests.conftest import pull_cycle
from lgm_pipeline_tests.reliability.conftest import CALGARY, journeys_rows, snapshot, sync

pytestmark = pytest.mark.e2e

#: Upper bound for anything a subprocess must do before we act on it; nothing waits this long normally.
SUBPROCESS_DEADLINE_S = 90.0

# Runs one sync cycle for Calgary and parks inside the journeys transaction (after the merge, the
# audit and the sync_runs row, before COMMIT) until it is killed.
_KILLED_MID_WRITE = textwrap.dedent(
    """
    import datetime as dt, sys, time
    import dagster as dg
    from lgm_pipeline.definitions import build_definitions
    from lgm_pipeline.storage import write
    from lgm_pipeline.sync import run_sync
    from lgm_pipeline.tenants.config import get_tenant

    original = write._record_sync_run

    def park(conn, tenant, *, asset, **kwargs):
        original(conn, tenant, asset=asset, **kwargs)
        if asset == "journeys":
            print("IN_TRANSACTION", flush=True)
            time.sleep(120)  # never reached in the test: it is killed first

    write._record_sync_run = park
    tenant = get_tenant("lgm")
    run_sync(build_definitions(), tenant, dg.DagsterInstance.ephemeral(),
             dates=[dt.date.fromisoformat(sys.argv[1])], location_ids=[sys.argv[2]])
    """
)


def _wait_for_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + SUBPROCESS_DEADLINE_S
    while time.monotonic() < deadline:
        if selector.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if line.strip() == expected:
                return
            if not line:
                raise AssertionError(f"subprocess exited ({proc.wait()}) before printing {expected}")
    raise AssertionError(f"subprocess did not print {expected} within {SUBPROCESS_DEADLINE_S} s")


def _journey_sync_runs(db: sa.Engine, tenant: Tenant) -> int:
    with db.connect() as conn:
        return conn.execute(
            sa.text(f"SELECT count(*) FROM {tenant.schema}.sync_runs WHERE asset = 'journeys'")
        ).scalar()


def test_run_killed_inside_the_journeys_transaction_keeps_previous_rows(
    defs, tenant, instance, db, simulator, today, tmp_path: Path
) -> None:
    assert sync(defs, tenant, instance, today).ok
    before = snapshot(db, tenant)
    runs_before = _journey_sync_runs(db, tenant)
    victim = next(r for r in before.values() if r["status"] != "CANCELLED")
    simulator.world.cancel_opportunity(victim["external_ids"]["smartmoving_opportunity_id"])

    script = tmp_path / "killed_mid_write.py"
    script.write_text(_KILLED_MID_WRITE)
    proc = subprocess.Popen(
        [sys.executable, str(script), today.isoformat(), CALGARY],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.txt").open("w"),
        text=True,
        env=os.environ.copy(),  # the test's database and simulator settings
    )
    try:
        _wait_for_line(proc, "IN_TRANSACTION")
        with db.connect() as conn:  # the uncommitted change is invisible meanwhile
            status = conn.execute(
                sa.text(f"SELECT status FROM {tenant.schema}.journeys WHERE id = :i"), {"i": victim["id"]}
            ).scalar()
        assert status == victim["status"]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    assert snapshot(db, tenant) == before
    assert _journey_sync_runs(db, tenant) == runs_before
    # The next run is not blocked by a lock or a half-written partition left behind.
    assert sync(defs, tenant, instance, today).ok
    [after] = journeys_rows(db, tenant, "id = :i", i=victim["id"])
    assert after["status"] == "CANCELLED"


def test_database_connection_killed_mid_cycle_fails_clearly_and_reruns(
    defs, tenant, instance, db, simulator, today, monkeypatch
) -> None:
    assert sync(defs, tenant, instance, today).ok
    before = snapshot(db, tenant)
    victim = next(r for r in before.values() if r["status"] != "CANCELLED")
    simulator.world.cancel_opportunity(victim["external_ids"]["smartmoving_opportunity_id"])
    original = write._record_sync_run
    killed: list[int] = []

    def terminate_then_continue(conn: Any, tenant: Tenant, *, asset: str, **kwargs: Any) -> None:
        if asset == "journeys" and not killed:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with db.connect() as admin:  # another session, as a DBA (or a failover) would
                assert admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            killed.append(pid)
        original(conn, tenant, asset=asset, **kwargs)

    monkeypatch.setattr(write, "_record_sync_run", terminate_then_continue)
    report = sync(defs, tenant, instance, today)
    assert killed
    [branch] = report.branches
    assert not branch.success
    assert "terminating connection due to administrator command" in branch.error or "closed" in branch.error
    assert snapshot(db, tenant) == before  # no partial partition

    monkeypatch.setattr(write, "_record_sync_run", original)
    assert sync(defs, tenant, instance, today).ok
    [after] = journeys_rows(db, tenant, "id = :i", i=victim["id"])
    assert after["status"] == "CANCELLED"


def test_overlapping_runs_of_one_partition_are_serialized(
    defs, tenant, instance, db, simulator, today, monkeypatch
) -> None:
    raw = pull_cycle(defs, tenant, instance, partition_key=today.isoformat())
    assert raw.success
    original_lock, original_record = merge.lock_partition, write._record_sync_run
    holding: list[tuple[str, float, float]] = []
    acquired: dict[int, float] = {}

    def lock_and_linger(conn: Any, tenant: Tenant, table: sa.Table, scope: Any) -> None:
        original_lock(conn, tenant, table, scope)
        if table is journeys:
            acquired[threading.get_ident()] = time.monotonic()
            time.sleep(0.5)  # widen the window in which an unserialized second writer would interleave

    def record(conn: Any, tenant: Tenant, *, asset: str, **kwargs: Any) -> None:
        original_record(conn, tenant, asset=asset, **kwargs)
        if asset == "journeys":
            holding.append((kwargs["run_id"], acquired[threading.get_ident()], time.monotonic()))

    monkeypatch.setattr(merge, "lock_partition", lock_and_linger)
    monkeypatch.setattr(write, "_record_sync_run", record)
    job = defs.resolve_job_def(journeys_job_name(tenant))
    key = journey_partition_key(today.isoformat(), CALGARY)
    results: list[dg.ExecuteInProcessResult] = []

    def run() -> None:
        results.append(job.execute_in_process(partition_key=key, instance=dg.DagsterInstance.ephemeral()))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SUBPROCESS_DEADLINE_S)
    assert [r.success for r in results] == [True, True]
    assert len(holding) == 2
    (_, _, first_end), (_, second_start, _) = sorted(holding, key=lambda h: h[1])
    assert second_start >= first_end  # the second writer waited for the first to commit

    rows = journeys_rows(db, tenant, "location_id = :l", l=CALGARY)
    assert len(rows) == len({r["smartmoving_job_id"] for r in rows})
    with db.connect() as conn:
        actions = dict(
            conn.execute(sa.text(f"SELECT action, count(*) FROM {tenant.schema}.journey_audit GROUP BY action")).all()
        )
    # As if one run had written: each journey inserted once, the identical second write a no-op.
    assert actions == {"insert": len(rows)}
    assert {r["run_id"] for r in rows} <= {h[0] for h in holding} and len({r["run_id"] for r in rows}) == 1


_EMBEDDED = textwrap.dedent(
    """
    import sys
    import sqlalchemy as sa
    from lgm_pipeline.storage.database import create_engine, embedded_database_url

    engine = create_engine(embedded_database_url(), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        started = conn.execute(sa.text("SELECT pg_postmaster_start_time()")).scalar()
        if sys.argv[1] == "write":
            conn.execute(sa.text("CREATE TABLE kept (note text)"))
            conn.execute(sa.text("INSERT INTO kept VALUES ('written before the restart ✓')"))
        else:
            print("NOTE", conn.execute(sa.text("SELECT note FROM kept")).scalar())
    print("STARTED", started.isoformat())
    engine.dispose()
    """
)


def test_embedded_database_keeps_data_across_stop_and_restart(tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "embedded.py"
    script.write_text(_EMBEDDED)
    env = {k: v for k, v in os.environ.items() if k != DATABASE_URL_ENV}
    env[HOME_ENV] = str(tmp_path / "home")

    def run(mode: str) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, str(script), mode], env=env, capture_output=True, text=True, timeout=SUBPROCESS_DEADLINE_S
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)

    first = run("write")
    # The last process using the server exited, so it stopped: no postmaster left running.
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()
    second = run("read")
    assert second["NOTE"] == "written before the restart ✓"
    assert dt.datetime.fromisoformat(second["STARTED"]) > dt.datetime.fromisoformat(first["STARTED"])
