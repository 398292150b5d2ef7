"""Tomorrow's arrival windows: fetched once a day for booked work, when the month's quota has room."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from lgm_pipeline.assets.arrival_windows import booked_opportunity_ids, month_allows
from lgm_pipeline.assets.automation import raw_job_name
from lgm_pipeline.sync import run_sync
from lgm_pipeline.transform.raw import timelines_frame


def test_month_allows_projects_the_calls_so_far_and_the_daily_cost() -> None:
    # 10 days of a 30-day month used 5,000 calls: 15,000 projected; 140 a day for 21 days more is 2,940.
    assert month_allows(5000, 140, 20000, dt.date(2026, 11, 10), 0.9) == (True, 17940)
    assert month_allows(5000, 200, 20000, dt.date(2026, 11, 10), 0.9) == (False, 19200)


def test_only_booked_opportunities_are_asked_for_times() -> None:
    jobs = pd.DataFrame({"opportunity_id": ["a", "b", "c", "c"]})
    opportunities = pd.DataFrame(
        {"opportunity_id": ["a", "b", "c"], "payload": [{"status": 4}, {"status": 0}, {"status": 10}]}
    )
    assert booked_opportunity_ids(jobs, opportunities) == ["a", "c"]


def test_timelines_keep_the_dates_jobs_and_unreadable_times_as_null() -> None:
    day = dt.date(2026, 11, 26)
    answer = {
        "opp": [
            {
                "id": "j1",
                "jobDate": 20261126,
                "startTimeUtc": "2026-11-26T14:00:00Z",
                "endTimeUtc": "2026-11-26T20:30:00",
            },
            {"id": "j2", "jobDate": 20261126, "startTimeUtc": "soon", "endTimeUtc": None},
            {"id": "j3", "jobDate": 20261127, "startTimeUtc": "2026-11-27T14:00:00Z"},
        ]
    }
    frame = timelines_frame(answer, day, dt.datetime(2026, 11, 25, tzinfo=dt.UTC), "run")
    rows = {r["job_id"]: r for r in frame.to_dict("records")}
    assert set(rows) == {"j1", "j2"}
    assert rows["j1"]["start_at"] == dt.datetime(2026, 11, 26, 14, tzinfo=dt.UTC)
    assert rows["j1"]["end_at"] == dt.datetime(2026, 11, 26, 20, 30, tzinfo=dt.UTC)  # no offset: UTC
    assert pd.isna(rows["j2"]["start_at"]) and rows["j2"]["payload"]["startTimeUtc"] == "soon"


def test_arrival_windows_reach_the_board_and_are_skipped_without_quota_room(
    defs, tenant, instance, db, window, simulator
) -> None:
    tomorrow = window[1]
    assert run_sync(defs, tenant, instance).ok
    job = defs.resolve_job_def(raw_job_name(tenant))  # the daily schedule's afternoon run
    only = [tenant.names.asset_key("smartmoving_arrival_windows")]
    config = {"ops": {f"{tenant.key}__smartmoving_arrival_windows": {"config": {"quota_share": 0.000001}}}}
    skipped = job.execute_in_process(
        partition_key=tomorrow.isoformat(), instance=instance, run_config=config, asset_selection=only
    )
    assert skipped.success and not skipped.get_asset_materialization_events()

    result = job.execute_in_process(partition_key=tomorrow.isoformat(), instance=instance, asset_selection=only)
    assert result.success
    calls = result.get_asset_materialization_events()[0].materialization.metadata["api_calls"].value
    with db.connect() as conn:
        booked = conn.execute(
            sa.text(
                f"SELECT count(DISTINCT j.opportunity_id) FROM {tenant.schema}.raw_jobs j"
                f" JOIN {tenant.schema}.raw_opportunities o USING (service_date, opportunity_id)"
                " WHERE j.service_date = :d AND o.payload ->> 'status' IN ('4', '10', '11')"
            ),
            {"d": tomorrow},
        ).scalar()
        board = conn.execute(
            sa.text(
                f"SELECT arrival_window_start, arrival_window_end FROM {tenant.schema}.journeys_board"
                " WHERE service_date = :d AND status = 'BOOKED'"
            ),
            {"d": tomorrow},
        ).all()
    assert calls == booked  # one call per booked opportunity of the date, never per job or branch
    assert board and all(start is not None and end > start for start, end in board)
