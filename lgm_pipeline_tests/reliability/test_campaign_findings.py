"""Bugs the fault campaign found (docs/reliability.md, *Bugs the campaign found*), one regression test each.

A bug found and not yet fixed gets its test here marked ``xfail(strict=True)``: the test states what should
happen, fails until the fix, and the fix turns it into a failure ("XPASS(strict)") until the mark is removed.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from lgm_pipeline.assets.automation import refresh_details_run_config
from lgm_pipeline.cli.main import main
from lgm_pipeline.simulator import FaultConfig, RunningSimulator
from lgm_pipeline.simulator.world import to_int_date
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.sync import run_sync
from lgm_pipeline_tests.reliability.conftest import CALGARY, journeys_rows, sync

pytestmark = pytest.mark.e2e

EDMONTON = "loc_lgm_edmonton_001"
EDMONTON_SM = "EDMONTON 🇨🇦 - Let's Get Moving"
#: A healthy sync of the test world takes seconds; a blocked one never ends.
SYNC_TIMEOUT_S = 60.0


def _lgm() -> list[str]:
    script = Path(sys.executable).with_name("lgm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lgm_pipeline.cli.main"]


def _slot_holders(dagster_url: str) -> list[str]:
    engine = create_engine(dagster_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not conn.execute(sa.text("SELECT to_regclass('concurrency_slots')")).scalar():
                return []
            return list(
                conn.execute(
                    sa.text("SELECT run_id FROM concurrency_slots WHERE run_id IS NOT NULL AND NOT deleted")
                ).scalars()
            )
    except sa.exc.OperationalError:
        return []  # the sync has not created its Dagster database yet
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_sync_after_one_killed_holding_the_pool_slot_still_pulls(
    database_url: str,
    simulator: RunningSimulator,  # its settings are in the environment
) -> None:
    # Slow answers keep the pull's steps (and their pool slot) busy long enough to be caught holding it.
    simulator.set_faults(FaultConfig(latency_ms=150))
    dagster_url = make_url(database_url).set(database=f"{make_url(database_url).database}_dagster")
    env = dict(os.environ)
    first = subprocess.Popen(
        [*_lgm(), "sync", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        while not _slot_holders(dagster_url.render_as_string(hide_password=False)):
            assert first.poll() is None, "the sync ended before it held the pool slot"
            assert time.monotonic() < deadline, "the sync never held the pool slot"
            time.sleep(0.02)
        os.killpg(first.pid, signal.SIGKILL)  # what the OOM killer or `kill -9` does
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    simulator.set_faults(FaultConfig())

    second = subprocess.Popen(
        [*_lgm(), "sync", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = second.communicate(timeout=SYNC_TIMEOUT_S)
        code = second.returncode
    except subprocess.TimeoutExpired:
        err, code = "", None
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=30)
    assert code == 0, f"the next sync did not finish within {SYNC_TIMEOUT_S:g} s (exit {code})"
    # The operator is told which run was settled and why.
    assert f"of an lgm sync that was killed (pid {first.pid})" in err
    assert "marked failed and its pool slot freed" in err
    assert not _slot_holders(dagster_url.render_as_string(hide_password=False))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["refresh_details", "details_aged_out"])
def test_a_job_moved_to_another_branch_moves_once_its_details_are_fetched_again(
    defs, tenant, instance, db, simulator, today, how: str
) -> None:
    """Bug 2, a budget trade-off (docs/reliability.md): the branch is only in the opportunity's details, reused
    while the list's summary is unchanged. ``lgm sync --refresh-details`` moves the job at once; a plain cycle
    moves it once the details are ``detail_max_age_hours`` old (here: 0)."""
    branches = [CALGARY, EDMONTON]
    assert sync(defs, tenant, instance, today, branches).ok
    moved = next(r for r in journeys_rows(db, tenant, "location_id = :l", l=CALGARY) if r["status"] == "BOOKED")
    opportunity_id = moved["external_ids"]["smartmoving_opportunity_id"]
    simulator.world.patch(opportunity_id, opportunity={"branch": {"name": EDMONTON_SM, "phoneNumber": None}})

    op = tenant.names.op("smartmoving_opportunities")
    run_config = (
        refresh_details_run_config(tenant)
        if how == "refresh_details"
        else {"ops": {op: {"config": {"detail_max_age_hours": 0.0}}}}
    )
    assert run_sync(defs, tenant, instance, dates=[today], location_ids=branches, run_config=run_config).ok
    [after] = journeys_rows(db, tenant, "id = :i", i=moved["id"])
    assert after["location_id"] == EDMONTON


def test_a_connection_lost_while_preparing_the_schema_is_one_line_not_a_traceback(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def terminated(self: PostgresResource, tenant: object) -> None:
        # What pg_terminate_backend or a server restart does to the migration's connection.
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("terminating connection due to administrator command"))

    monkeypatch.setattr(PostgresResource, "migrate", terminated)  # the start-up's migration, before any run
    code = main(["sync", "--quiet"])
    assert code == 1  # a failure that retrying heals, not a setting to fix
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lgm: lost the connection to PostgreSQL")
    assert "terminating connection due to administrator command" in line and "run the command again" in line


def _two_day_move(simulator: RunningSimulator, first: dt.date) -> dict:
    """A booked move whose first job is on ``first`` and its second on the next day."""
    for oid in simulator.world.opportunity_ids_on(first):
        detail = simulator.world.opportunity_detail(oid)
        dates = [j.get("jobDate") for j in detail["jobs"]]
        if detail["status"] == 4 and dates == [to_int_date(first), to_int_date(first + dt.timedelta(days=1))]:
            return detail
    pytest.skip("no two-day booked move generated on that date")  # pragma: no cover - the seed has some


@pytest.mark.slow
@pytest.mark.parametrize(("reading", "change"), [("job_date", "delete"), ("service_date", "cancel")])
def test_a_multi_day_move_gone_from_the_list_is_looked_up_again_not_carried(
    reading: str, change: str, defs, tenant, instance, db, window, simulator
) -> None:
    """Bug 4: its second day stayed booked for up to 36 h, from details stored when its first day was pulled.

    The list stops showing a move that began before the window when it is deleted (either reading of
    the date filter) or, under the service-date reading, whatever happens to it: only its details say.
    """
    today = window[0]
    yesterday = today - dt.timedelta(days=1)
    simulator.world.set_date_filter(reading)
    move = _two_day_move(simulator, yesterday)
    assert run_sync(defs, tenant, instance, dates=[yesterday, today]).ok
    [second_day] = journeys_rows(
        db, tenant, "quote_number = :q AND service_date = :d", q=str(move["quoteNumber"]), d=today
    )
    if change == "delete":
        simulator.world.delete_opportunity(move["id"])
    else:
        simulator.world.cancel_opportunity(move["id"])

    assert run_sync(defs, tenant, instance).ok  # the window, minutes later: the stored details are fresh
    after = journeys_rows(db, tenant, "id = :i", i=second_day["id"])
    if change == "delete":
        assert after == []
    else:
        assert [r["status"] for r in after] == ["CANCELLED"]
