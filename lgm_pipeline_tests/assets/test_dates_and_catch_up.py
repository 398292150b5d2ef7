"""Jobs under their own dates whatever the API's date filter means, and past jobs reaching their final status."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from lgm_pipeline.assets.automation import catch_up_dates, catch_up_run_config
from lgm_pipeline.simulator.world import to_int_date
from lgm_pipeline.sync import run_sync


def _two_day_move(simulator, first: dt.date) -> dict:
    """A booked move of the simulator whose first job is on ``first`` and second on the next day."""
    for oid in simulator.world.opportunity_ids_on(first):
        detail = simulator.world.opportunity_detail(oid)
        dates = [j.get("jobDate") for j in detail["jobs"]]
        if detail["status"] == 4 and dates == [to_int_date(first), to_int_date(first + dt.timedelta(days=1))]:
            return detail
    pytest.skip("no two-day booked move generated on that date")  # pragma: no cover - the seed has some


@pytest.mark.parametrize("reading", ["job_date", "service_date"])
def test_a_multi_day_moves_second_day_lands_on_its_own_date(
    reading, defs, tenant, instance, db, window, simulator
) -> None:
    """Both readings of FromServiceDate/ToServiceDate: any job's date, or only the first day's."""
    today = window[0]
    yesterday = today - dt.timedelta(days=1)
    simulator.world.set_date_filter(reading)
    move = _two_day_move(simulator, yesterday)
    # Yesterday's cycle (its window was yesterday and today), then today's.
    assert run_sync(defs, tenant, instance, dates=[yesterday, today]).ok
    assert run_sync(defs, tenant, instance).ok
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT job_number, service_date FROM {tenant.schema}.journeys WHERE quote_number = :q"),
            {"q": str(move["quoteNumber"])},
        ).all()
    assert sorted(tuple(r) for r in rows) == [
        (move["jobs"][0]["jobNumber"], yesterday),
        (move["jobs"][1]["jobNumber"], today),
    ]


def test_catch_up_brings_past_jobs_to_their_final_status_and_the_active_list_starts_today(
    defs, tenant, instance, db, window, simulator
) -> None:
    today = window[0]
    past = [today - dt.timedelta(days=n) for n in (2, 1)]
    assert run_sync(defs, tenant, instance, dates=past).ok
    with db.connect() as conn:
        booked_past = conn.execute(
            sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys WHERE service_date < :t AND status = 'BOOKED'"),
            {"t": today},
        ).scalar()
        active_past = conn.execute(
            sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys_active WHERE service_date < :t"), {"t": today}
        ).scalar()
    assert booked_past > 0 and active_past == 0  # the active list covers today onwards only

    # The office closes those days in SmartMoving; the daily catch-up pulls them again.
    changes = [line for day in past for line in simulator.world.close_day(day)]
    completed = {line.split()[1] for line in changes if line.endswith("4->10")}
    dates = [d for d in catch_up_dates(tenant, today) if d in past]
    report = run_sync(defs, tenant, instance, dates=dates, run_config=catch_up_run_config(tenant))
    assert report.ok
    assert report.api_calls["customers"] == 1  # one date-range call for the whole catch-up
    # details only for newly completed work (its actual charges); a close is read from the list
    assert 0 < report.api_calls.get("opportunity", 0) <= len(completed)
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT status, actual_cost, external_ids FROM {tenant.schema}.journeys WHERE service_date < :t"),
            {"t": today},
        ).all()
    statuses = {r.status for r in rows}
    assert {"COMPLETED", "CLOSED"} <= statuses
    for row in rows:
        smartmoving = simulator.world.opportunity_detail(row.external_ids["smartmoving_opportunity_id"])["status"]
        # each past journey now says what SmartMoving says (a move still going on today stays booked)
        assert row.status == {4: "BOOKED", 10: "COMPLETED", 11: "CLOSED"}[smartmoving]
        if row.status == "COMPLETED":
            assert row.actual_cost is not None  # what the crew actually charged


def test_catch_up_reuses_details_across_a_status_only_change() -> None:
    from lgm_pipeline.assets.raw import same_but_status
    from lgm_pipeline.transform.raw import OpportunitySummary

    cached = {"status": 10, "jobs": [{"id": "j1", "jobDate": 20261120}]}
    listed = frozenset({("j1", 20261120)})
    assert same_but_status(OpportunitySummary("o", "c", "h", 11, listed), cached)  # closed: the list says so
    booked = {**cached, "status": 4}
    assert not same_but_status(OpportunitySummary("o", "c", "h", 10, listed), booked)  # completed: charges
    moved = frozenset({("j1", 20261121)})
    assert not same_but_status(OpportunitySummary("o", "c", "h", 10, moved), cached)  # a job moved


@pytest.mark.parametrize("reading", ["job_date", "service_date"])
def test_a_job_moved_beyond_the_window_leaves_it_at_the_next_cycle(
    reading, defs, tenant, instance, db, window, simulator
) -> None:
    tomorrow = window[1]
    simulator.world.set_date_filter(reading)
    assert run_sync(defs, tenant, instance).ok
    with db.connect() as conn:
        job_id = conn.execute(
            sa.text(
                f"SELECT smartmoving_job_id FROM {tenant.schema}.journeys WHERE service_date = :d"
                " AND jsonb_array_length(raw_payload -> 'opportunity' -> 'jobs') = 1 LIMIT 1"
            ),
            {"d": tomorrow},
        ).scalar_one()
    simulator.world.reschedule_job(job_id, tomorrow + dt.timedelta(days=7))
    assert run_sync(defs, tenant, instance).ok
    with db.connect() as conn:
        left = conn.execute(
            sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys WHERE smartmoving_job_id = :j"), {"j": job_id}
        ).scalar()
    assert left == 0  # not kept on its old date from a cached copy of its details
