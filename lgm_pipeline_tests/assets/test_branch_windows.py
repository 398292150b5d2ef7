"""Each branch on its own clock: the cycle's dates, the journeys it rebuilds and freshness, at the edge hours.

LGM's tenant clock is Toronto's; Vancouver and Burnaby are 3 hours behind it, Calgary and Edmonton 2,
Winnipeg 1, except in winter from November 2026, when IANA 2026f (the pipeline's bundled data) keeps
British Columbia, Alberta and Manitoba on daylight time: 2, 1 and 0. From midnight in Toronto to midnight
in Vancouver the branches do not agree on the date. Instants are wall-clock times converted by the
pipeline's zone data, so they mean what they say whatever the machine's own copy has.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._utils.schedules import schedule_execution_time_iterator

from lgm_pipeline.assets.automation import (
    REFRESH_CRON,
    cycle_asset_keys,
    journeys_job_name,
    raw_job_name,
    window_run_requests,
)
from lgm_pipeline.assets.freshness import STALE_AFTER, stale_branches
from lgm_pipeline.assets.partitions import tenant_partitions
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.status import TenantStatus, format_status, with_unsynced_window_dates
from lgm_pipeline.sync import run_sync
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.tenants.timezones import zone
from lgm_pipeline_tests.assets.conftest import journeys_partitions_of

CALGARY, VANCOUVER, BURNABY = "loc_lgm_calgary_001", "loc_lgm_vancouver_001", "loc_lgm_burnaby_corporate_001"
TORONTO, EDMONTON, WINNIPEG = "loc_lgm_toronto_001", "loc_lgm_edmonton_001", "loc_lgm_winnipeg_001"
PACIFIC = {VANCOUVER, BURNABY}

NOV_27, NOV_28, NOV_29 = dt.date(2026, 11, 27), dt.date(2026, 11, 28), dt.date(2026, 11, 29)
#: 23:30 in Vancouver on the 27th = 01:30 in Toronto on the 28th (00:30 in Calgary, 01:30 in Winnipeg).
VANCOUVER_2330 = dt.datetime(2026, 11, 27, 23, 30, tzinfo=zone("America/Vancouver")).astimezone(dt.UTC)
#: 00:30 in Toronto on the 28th = 23:30 in Calgary, 22:30 in Vancouver, on the 27th; 00:30 in Winnipeg.
TORONTO_0030 = dt.datetime(2026, 11, 28, 0, 30, tzinfo=zone("America/Toronto")).astimezone(dt.UTC)
#: The branches already on the 28th at TORONTO_0030: Toronto, and Winnipeg on UTC-5 since November 2026.
TURNED = {TORONTO, WINNIPEG}


def _keys(pairs: set[tuple[dt.date, str]]) -> set[str]:
    return {str(journey_partition_key(day.isoformat(), location)) for day, location in pairs}


def _windows(tenant: Tenant, now: dt.datetime) -> dict[str, list[dt.date]]:
    return {b.location_id: b.window(now) for b in tenant.branches}


def test_at_2330_in_vancouver_each_branch_has_its_own_today(tenant: Tenant) -> None:
    windows = _windows(tenant, VANCOUVER_2330)
    assert windows[VANCOUVER] == windows[BURNABY] == [NOV_27, NOV_28]
    assert windows[TORONTO] == windows[WINNIPEG] == windows[CALGARY] == windows[EDMONTON] == [NOV_28, NOV_29]
    # Toronto's clock alone would have left Vancouver's running day out of the cycle
    assert tenant.sync_window(VANCOUVER_2330) == [NOV_27, NOV_28, NOV_29]


def test_at_0030_in_toronto_only_toronto_clock_has_turned_the_page(tenant: Tenant) -> None:
    windows = _windows(tenant, TORONTO_0030)
    assert all(windows[b] == [NOV_28, NOV_29] for b in TURNED)
    assert all(windows[b] == [NOV_27, NOV_28] for b in set(tenant.location_ids) - TURNED)
    assert tenant.sync_window(TORONTO_0030) == [NOV_27, NOV_28, NOV_29]
    # the 27th is rebuilt for the branches still living it, the 29th for Toronto's clock only
    assert tenant.rebuilds_after_pull(CALGARY, NOV_27, TORONTO_0030)
    assert not tenant.rebuilds_after_pull(TORONTO, NOV_27, TORONTO_0030)
    assert not tenant.rebuilds_after_pull(WINNIPEG, NOV_27, TORONTO_0030)
    assert tenant.rebuilds_after_pull(TORONTO, NOV_29, TORONTO_0030)
    assert not tenant.rebuilds_after_pull(VANCOUVER, NOV_29, TORONTO_0030)
    # once every branch is past a date, a pull of it (the catch-up) rebuilds it everywhere
    assert tenant.rebuilds_after_pull(TORONTO, dt.date(2026, 11, 26), TORONTO_0030)


def _three_date_ticks(tenant: Tenant, day: dt.date) -> list[str]:
    """The 2-hour schedule's ticks of one local day (tenant time) whose window has three dates."""
    start = dt.datetime.combine(day, dt.time(), tenant.tz).timestamp()
    ticks = []
    for tick in schedule_execution_time_iterator(start, REFRESH_CRON, tenant.timezone):
        local = tick.astimezone(tenant.tz)
        if local.date() != day:
            break
        [request] = window_run_requests(tenant, tick, [])
        if (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) != (
            day.isoformat(),
            (day + dt.timedelta(days=1)).isoformat(),
        ):
            assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == (day - dt.timedelta(days=1)).isoformat()
            ticks.append(local.strftime("%H:%M"))
    return ticks


@pytest.mark.parametrize(
    ("day", "ticks"),
    [
        # until midnight in Vancouver, 02:00 in Toronto in winter from November 2026 (BC on UTC-7 all year)
        (NOV_28, ["00:00"]),
        (dt.date(2027, 1, 15), ["00:00"]),
        (dt.date(2026, 6, 1), ["00:00", "02:00"]),  # summer time: three hours apart, until 03:00 in Toronto
        (dt.date(2027, 6, 1), ["00:00", "02:00"]),
        # the March Sunday: Toronto skips 02:00-03:00 (the 02:00 tick runs at 03:00 EDT); Vancouver is
        # then 23:00 PST on the 7th, still a day behind
        (dt.date(2026, 3, 8), ["00:00", "03:00"]),
        # the November Sunday: Toronto falls back at 02:00 EDT (06:00 UTC); the 02:00 EST tick is
        # 07:00 UTC, already 00:00 PDT on the 1st in Vancouver
        (dt.date(2026, 11, 1), ["00:00"]),
    ],
)
def test_cycles_that_pull_a_third_date(tenant: Tenant, day: dt.date, ticks: list[str]) -> None:
    assert _three_date_ticks(tenant, day) == ticks


def test_a_branch_east_of_the_tenant_clock_has_its_tomorrow_addressable() -> None:
    # a tenant on Vancouver's clock with a branch in Halifax (4 hours ahead in winter)
    base = Tenant(**{f.name: getattr(_lgm(), f.name) for f in dataclasses.fields(Tenant)})
    halifax = dataclasses.replace(base.branches[3], timezone="America/Halifax")
    tenant = dataclasses.replace(base, timezone="America/Vancouver", branches=(*base.branches[:3], halifax))
    # the evening of the 27th in Vancouver is 01:30 on the 28th in Halifax: its window is the 28th and 29th
    now = dt.datetime(2026, 11, 28, 5, 30, tzinfo=dt.UTC)
    assert tenant.today(now) == NOV_27
    assert halifax.window(now) == [NOV_28, NOV_29]
    assert tenant.sync_window(now) == [NOV_27, NOV_28, NOV_29]
    assert tenant.max_days_ahead() == 2
    partitions = tenant_partitions(tenant)
    # the last partition is the tenant's day after tomorrow, so Halifax's tomorrow can be pulled and built
    assert partitions.service_date.get_partition_keys(current_time=now)[-1] == NOV_29.isoformat()
    with dg.partition_loading_context(now):
        assert partitions.journeys.has_partition_key(journey_partition_key(NOV_29.isoformat(), halifax.location_id))
    assert tenant.rebuilds_after_pull(halifax.location_id, NOV_29, now)
    assert not tenant.rebuilds_after_pull(halifax.location_id, NOV_27, now)


def _lgm() -> Tenant:
    from lgm_pipeline.tenants import load_tenants

    return load_tenants()[0]


def test_window_pull_at_2330_in_vancouver_rebuilds_each_branch_in_its_own_window(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance
) -> None:
    journeys = tenant.names.asset_key("journeys")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=VANCOUVER_2330)
    assert result.total_requested == 0

    [request] = window_run_requests(tenant, VANCOUVER_2330, cycle_asset_keys(tenant, defs.assets or ()))
    job = defs.resolve_job_def(raw_job_name(tenant))
    assert job.execute_in_process(instance=instance, tags=request.tags, asset_selection=request.asset_selection).success
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=result.cursor, evaluation_time=VANCOUVER_2330 + dt.timedelta(seconds=30)
    )
    requested = {str(k) for k in result.get_requested_partitions(journeys)}
    pacific = {(day, b) for day in (NOV_27, NOV_28) for b in PACIFIC}
    others = {(day, b) for day in (NOV_28, NOV_29) for b in set(tenant.location_ids) - PACIFIC}
    assert requested == _keys(pacific | others)  # 12 runs, not 18: no branch's yesterday or day after tomorrow

    job = defs.resolve_job_def(journeys_job_name(tenant))
    for key in sorted(requested):
        assert job.execute_in_process(partition_key=key, instance=instance).success
    # midnight in Vancouver: its window moves to the 28th and 29th, but the 29th's pull came before its
    # window did; nothing is rebuilt until the next pull (04:00 in Toronto)
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, cursor=result.cursor, evaluation_time=VANCOUVER_2330 + dt.timedelta(hours=1)
    )
    assert result.total_requested == 0


def test_lgm_sync_at_0030_in_toronto_makes_the_same_runs(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance
) -> None:
    report = run_sync(defs, tenant, instance, with_leads=False, now=TORONTO_0030)
    assert report.ok
    assert report.dates == [NOV_27, NOV_28, NOV_29]
    runs = [r.dagster_run for r in instance.get_run_records()]
    raw = [r for r in runs if r.job_name == raw_job_name(tenant)]
    assert [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG]) for r in raw] == [
        ("2026-11-27", "2026-11-29")
    ]  # one run, one date-range list call
    journeys = [r for r in runs if r.job_name == journeys_job_name(tenant)]
    built = [k for r in journeys for k in journeys_partitions_of(r, tenant)]
    toronto = {(day, b) for day in (NOV_28, NOV_29) for b in TURNED}
    west = {(day, b) for day in (NOV_27, NOV_28) for b in set(tenant.location_ids) - TURNED}
    assert sorted(built) == sorted(_keys(toronto | west))
    # one run per date: branches are ordered west to east, so a date's branches are neighbours
    assert len(journeys) == 3


def _written(location: str, day: dt.date, minutes_ago: int) -> dict:
    return {
        "location_id": location,
        "service_date": day,
        "age": dt.timedelta(minutes=minutes_ago),
        "status": "SUCCESS",
        "rows_written": 3,
        "inserted": 1,
        "updated": 0,
        "deleted": 0,
        "quarantined": 0,
    }


def test_freshness_and_status_follow_each_branch_window(tenant: Tenant) -> None:
    # 01:30 in Toronto: the 00:00 cycle failed. Vancouver's 27th was last written before 22:00 Toronto
    # time: stale, it is Vancouver's today. Toronto's 27th as old: its yesterday, fine.
    now = VANCOUVER_2330
    old = int((STALE_AFTER + dt.timedelta(hours=2)).total_seconds() // 60)
    latest = [_written(b, NOV_27, old) for b in tenant.location_ids]
    latest += [_written(b, NOV_28, old) for b in tenant.location_ids]
    latest += [_written(b, NOV_29, 10) for b in tenant.location_ids if b not in PACIFIC]
    stale = stale_branches(tenant, latest, now)
    assert set(stale) == set(tenant.location_ids)
    assert stale[VANCOUVER] == f"2026-11-27 synced {old} min ago; 2026-11-28 synced {old} min ago"
    assert stale[TORONTO] == f"2026-11-28 synced {old} min ago"  # not its 27th

    rows = with_unsynced_window_dates(tenant, latest[:6], now)  # only the 27th written
    status = format_status(TenantStatus(tenant, rows, 0, 0, None, now=now))
    lines = {
        (line.split()[0], line.split()[1]): line for line in status.splitlines() if line.strip().startswith("2026-")
    }
    assert lines[("2026-11-27", VANCOUVER)].endswith("STALE")
    assert lines[("2026-11-27", TORONTO)].endswith("SUCCESS")  # Toronto's yesterday: no longer refreshed
    assert "never" in lines[("2026-11-29", TORONTO)] and lines[("2026-11-29", TORONTO)].endswith("STALE")
    assert ("2026-11-29", VANCOUVER) not in lines  # not yet in Vancouver's window


def test_default_definitions_keep_one_partition_past_tomorrow_only_when_needed(tenant: Tenant) -> None:
    # every LGM branch is at or west of Toronto: the last partition stays the tenant's tomorrow
    assert tenant.max_days_ahead() == 1
    defs = build_definitions()
    journeys = next(s for s in defs.resolve_all_asset_specs() if s.key == tenant.names.asset_key("journeys"))
    assert journeys.partitions_def is not None
    assert tenant_partitions(tenant).service_date.get_partition_keys(current_time=TORONTO_0030)[-1] == "2026-11-29"
