"""The 2-hour schedule and the fan-out sensor: nobody clicks, all 12 partitions get rebuilt."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from lgm_pipeline.assets.automation import JOURNEYS_HANDLED_TAG, journeys_job_name, raw_job_name
from lgm_pipeline.definitions import defs as module_defs
from lgm_pipeline.tenants import load_tenants


def test_schedule_tick_requests_today_and_tomorrow_in_toronto() -> None:
    schedule = module_defs().resolve_schedule_def("lgm_every_2_hours")
    assert schedule.cron_schedule == "0 */2 * * *"
    assert schedule.execution_timezone == "America/Toronto"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # 04:00 UTC on the 26th is 23:00 on the 25th in Toronto: the window is the 25th and the 26th
    tick = dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.UTC)
    repository = module_defs().get_repository_def()
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repository) as context:
        result = schedule.evaluate_tick(context)
    # one run over both dates: one date-range list call
    [request] = result.run_requests
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-11-25"
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == "2026-11-26"


def test_daily_catch_up_refreshes_the_last_seven_service_dates_without_refetching_for_age() -> None:
    schedule = module_defs().resolve_schedule_def("lgm_daily_catch_up")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = dt.datetime(2026, 11, 26, 9, 15, tzinfo=dt.UTC)  # 04:15 in Toronto
    with dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=module_defs().get_repository_def()
    ) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        "2026-11-19",
        "2026-11-25",
    )
    config = request.run_config["ops"]["lgm__smartmoving_opportunities"]["config"]
    assert config["detail_max_age_hours"] >= 7 * 24


def _raw_run(defs: dg.Definitions, instance: dg.DagsterInstance, day: dt.date, tags: dict | None = None) -> None:
    [tenant] = load_tenants()
    job = defs.resolve_job_def(raw_job_name(tenant))
    assert job.execute_in_process(partition_key=day.isoformat(), instance=instance, tags=tags).success


def test_fresh_pull_fans_out_to_every_branch_partition(defs, tenant, instance, window) -> None:
    sensor = defs.resolve_sensor_def("lgm_journeys_after_refresh")
    for day in window:
        _raw_run(defs, instance, day)

    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        result = sensor.evaluate_tick(context)
        cursor = context.cursor
    requested = [r.partition_key for r in result.run_requests]
    assert len(requested) == 12
    assert {(k.keys_by_dimension["date"], k.keys_by_dimension["branch"]) for k in requested} == {
        (d.isoformat(), b) for d in window for b in tenant.location_ids
    }

    # the next tick has nothing new; a run whose journeys were already rebuilt (lgm sync) is skipped
    _raw_run(defs, instance, window[0], tags={JOURNEYS_HANDLED_TAG: "lgm-sync"})
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        assert sensor.evaluate_tick(context).run_requests == []

    # and a requested partition actually runs
    journeys_job = defs.resolve_job_def(journeys_job_name(tenant))
    assert journeys_job.execute_in_process(partition_key=requested[0], instance=instance).success
