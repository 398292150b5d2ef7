"""The staggered cycles: each tenant ticks at its own minute of the 2 hours, with two schedules a tenant."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter

import dagster as dg
import pytest
import yaml
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._utils.schedules import schedule_execution_time_iterator

from lgm_pipeline import settings
from lgm_pipeline.assets.automation import (
    REFRESH_CRON,
    WORK_TAG,
    cycle_cron,
    daily_cron,
    daily_schedule_name,
    next_cycle_tick,
    refresh_schedule_name,
)
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.settings import CYCLE_PERIOD_MINUTES
from lgm_pipeline.status import TenantStatus, format_status
from lgm_pipeline.tenants import Tenant, load_tenants
from lgm_pipeline.tenants.config import DEFAULT_TENANTS_FILE, default_cycle_offset, parse_tenants
from lgm_pipeline_tests.assets.conftest import CYCLE_ASSETS


@pytest.fixture(autouse=True)
def _default_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.REFRESH_CRON_ENV, raising=False)
    monkeypatch.delenv(settings.CYCLE_PERIOD_ENV, raising=False)


def _block(key: str, **overrides: object) -> dict:
    return {
        "key": key,
        "client_id": f"clm_{key}",
        "name": key.title(),
        "timezone": "America/Toronto",
        "first_service_date": "2026-01-01",
        "smartmoving": {"api_key_env": f"{key.upper()}_KEY", "base_url_env": f"{key.upper()}_URL"},
        "branches": [{"location_id": f"loc_{key}", "name": "One", "smartmoving_branch_name": "ONE"}],
        **overrides,
    }


def _tenant(key: str = "acme", **overrides: object) -> Tenant:
    [tenant] = parse_tenants({"tenants": [_block(key, **overrides)]})
    return tenant


def _ticks(cron: str, timezone: str, day: dt.date, tz: dt.tzinfo) -> list[dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tz)
    ticks = []
    for tick in schedule_execution_time_iterator(start.timestamp(), cron, timezone):
        if tick.astimezone(tz).date() != day:
            return ticks
        ticks.append(tick.astimezone(tz))
    return ticks


def test_the_offset_is_stable_for_a_key_and_not_pythons_hash() -> None:
    # sha256 of the key: the same in every process (hash() of a str changes with PYTHONHASHSEED)
    assert default_cycle_offset("lgm") == 74
    assert _tenant("acme").cycle_offset_minutes == default_cycle_offset("acme") == _tenant("acme").cycle_offset_minutes
    assert {default_cycle_offset(f"t{i}") for i in range(200)} <= set(range(CYCLE_PERIOD_MINUTES))


@pytest.mark.parametrize("pattern", ["t{:03d}", "t{}", "lgm_t{}", "acme{}_movers"])
def test_a_hundred_keys_spread_over_the_period(pattern: str) -> None:
    offsets = [default_cycle_offset(pattern.format(i)) for i in range(1, 101)]
    buckets = Counter(offset // 10 for offset in offsets)  # twelve 10-minute buckets, 8.3 tenants each on average
    mean = len(offsets) / (CYCLE_PERIOD_MINUTES // 10)
    assert max(buckets.values()) <= 2 * mean, buckets
    assert len(buckets) >= 11  # no stretch of 20 minutes left empty
    # and within a minute: at most a handful of tenants start together (all 100 did before)
    assert max(Counter(offsets).values()) <= 5


def test_the_cycle_ticks_every_2_hours_from_the_offset() -> None:
    day = dt.date(2026, 11, 26)
    for offset, first in [(0, "00:00"), (14, "00:14"), (60, "01:00"), (74, "01:14"), (119, "01:59")]:
        tenant = _tenant(cycle_offset_minutes=offset)
        assert tenant.cycle_offset_minutes == offset  # the override wins over the hash
        ticks = _ticks(cycle_cron(tenant), tenant.timezone, day, tenant.tz)
        assert len(ticks) == 12
        assert ticks[0].strftime("%H:%M") == first
        assert {b - a for a, b in itertools.pairwise(ticks)} == {dt.timedelta(hours=2)}
    assert cycle_cron(_tenant(cycle_offset_minutes=0)) == REFRESH_CRON
    assert cycle_cron(_tenant(cycle_offset_minutes=74)) == "14 1-23/2 * * *"


def test_an_explicit_refresh_cron_is_kept_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.REFRESH_CRON_ENV, "*/3 * * * *")
    assert cycle_cron(_tenant(cycle_offset_minutes=74)) == "*/3 * * * *"
    assert cycle_cron(_tenant("other")) == "*/3 * * * *"
    # the daily work keeps its stagger
    assert daily_cron(_tenant(cycle_offset_minutes=74)) == "29 4,15 * * *"


@pytest.mark.parametrize(("period", "cron"), [(10, "4-59/10 * * * *"), (30, "14-59/30 * * * *"), (60, "14 * * * *")])
def test_a_shorter_period_keeps_each_tenant_on_its_own_minute(
    period: int, cron: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.CYCLE_PERIOD_ENV, str(period))
    tenant = _tenant(cycle_offset_minutes=74)
    assert cycle_cron(tenant) == cron
    ticks = _ticks(cron, tenant.timezone, dt.date(2026, 11, 26), tenant.tz)
    assert len(ticks) == 24 * 60 // period
    assert {b - a for a, b in itertools.pairwise(ticks)} == {dt.timedelta(minutes=period)}
    assert ticks[0].minute == 74 % period
    # 25 tenants every 30 minutes: spread over the half hour as 100 are over the 2 hours
    if period == 30:
        offsets = Counter(default_cycle_offset(f"t{i:03d}") % period for i in range(1, 26))
        assert max(offsets.values()) <= 5 and len({o // 10 for o in offsets}) == 3


@pytest.mark.parametrize("value", ["45", "7", "0", "every 30", "-10"])
def test_a_period_a_cron_cannot_repeat_evenly_names_the_setting(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.CYCLE_PERIOD_ENV, value)
    with pytest.raises(ValueError, match=f"^{settings.CYCLE_PERIOD_ENV} must be one of 1, 2, .*, 120, not '{value}'$"):
        cycle_cron(_tenant())


@pytest.mark.parametrize(
    ("offset", "cron"), [(0, "15 3,14 * * *"), (44, "59 3,14 * * *"), (45, "0 4,15 * * *"), (119, "14 5,16 * * *")]
)
def test_the_daily_work_moves_with_the_offset_and_never_meets_a_cycle_tick(offset: int, cron: str) -> None:
    tenant = _tenant(cycle_offset_minutes=offset)
    assert daily_cron(tenant) == cron
    day = dt.date(2026, 11, 26)
    cycle = set(_ticks(cycle_cron(tenant), tenant.timezone, day, tenant.tz))
    daily = _ticks(daily_cron(tenant), tenant.timezone, day, tenant.tz)
    assert len(daily) == 2 and not cycle & set(daily)


def test_every_tenant_has_at_most_two_schedules(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    lgm = yaml.safe_load(DEFAULT_TENANTS_FILE.read_text())["tenants"][0]
    blocks = [lgm, _block("acme"), _block("zed", cycle_offset_minutes=5)]
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": blocks}))
    monkeypatch.setenv(settings.TENANTS_FILE_ENV, str(path))
    tenants = load_tenants()
    defs = build_definitions()
    per_tenant = Counter(s.name.split("_")[0] for s in defs.schedules if s.name.split("_")[0] in {"lgm", "acme", "zed"})
    assert per_tenant == {"lgm": 2, "acme": 2, "zed": 2}
    for tenant in tenants:
        refresh = defs.resolve_schedule_def(refresh_schedule_name(tenant))
        daily = defs.resolve_schedule_def(daily_schedule_name(tenant))
        assert (refresh.cron_schedule, daily.cron_schedule) == (cycle_cron(tenant), daily_cron(tenant))
        assert refresh.execution_timezone == daily.execution_timezone == tenant.timezone
    assert defs.resolve_schedule_def("zed_every_2_hours").cron_schedule == "5 */2 * * *"
    # the tenants no longer share their minute
    assert len({t.cycle_offset_minutes for t in tenants}) == 3


def _daily_requests(defs: dg.Definitions, tenant: Tenant, local: dt.datetime) -> dict[str, dg.RunRequest]:
    schedule = defs.resolve_schedule_def(daily_schedule_name(tenant))
    tick = local.replace(tzinfo=tenant.tz)
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert all(r.job_name is None for r in requests)  # all under the schedule's job, narrowed by asset_selection
    return {r.tags[WORK_TAG]: r for r in requests}


def test_the_daily_schedule_requests_the_mornings_work_then_the_arrival_windows() -> None:
    defs = build_definitions()
    tenant = load_tenants()[0]
    names = tenant.names
    minute = daily_cron(tenant).split()[0]
    hours = [int(h) for h in daily_cron(tenant).split()[1].split(",")]
    morning = _daily_requests(defs, tenant, dt.datetime(2026, 11, 26, hours[0], int(minute)))
    assert list(morning) == ["retention", "branches", "catch_up"]
    assert morning["retention"].asset_selection == [names.asset_key("history_retention")]
    assert morning["branches"].asset_selection == [names.asset_key("smartmoving_branches")]
    catch_up = morning["catch_up"]
    assert set(catch_up.asset_selection or []) == {names.asset_key(name) for name in CYCLE_ASSETS}
    assert (catch_up.tags[ASSET_PARTITION_RANGE_START_TAG], catch_up.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        "2026-11-19",
        "2026-11-25",
    )
    afternoon = _daily_requests(defs, tenant, dt.datetime(2026, 11, 26, hours[1], int(minute)))
    assert list(afternoon) == ["arrival_windows"]
    assert afternoon["arrival_windows"].asset_selection == [names.asset_key("smartmoving_arrival_windows")]
    assert afternoon["arrival_windows"].partition_key == "2026-11-27"  # tomorrow
    # each run a distinct key: the daemon launches all of a tick's requests
    assert len({r.run_key for r in [*morning.values(), *afternoon.values()]}) == 4


def test_no_catch_up_when_catch_up_days_is_0(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [_block("acme", catch_up_days=0, cycle_offset_minutes=0)]}))
    monkeypatch.setenv(settings.TENANTS_FILE_ENV, str(path))
    [tenant] = load_tenants()
    morning = _daily_requests(build_definitions(), tenant, dt.datetime(2026, 11, 26, 3, 15))
    assert list(morning) == ["retention", "branches"]


def test_status_shows_the_next_cycle_tick_in_the_tenants_time() -> None:
    tenant = _tenant(cycle_offset_minutes=74)
    now = dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.UTC)  # 00:00 in Toronto (EST)
    assert next_cycle_tick(tenant, now) == dt.datetime(2026, 11, 26, 1, 14, tzinfo=tenant.tz)
    status = format_status(TenantStatus(tenant, [], 0, 0, None, now=now))
    assert status.splitlines()[1] == (
        "  next cycle tick: 2026-11-26 01:14 EST (in 1h 14m; cron 14 1-23/2 * * *, America/Toronto)"
    )
    # on the tick itself, the next one
    assert next_cycle_tick(tenant, dt.datetime(2026, 11, 26, 6, 14, tzinfo=dt.UTC)).strftime("%H:%M") == "03:14"
