"""The schedules and the journeys automation: nobody clicks, every branch partition of a pulled date is rebuilt once."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from lgm_pipeline.assets.automation import (
    AUTOMATION_SENSOR,
    WORK_TAG,
    catch_up_dates,
    catch_up_run_config,
    cycle_asset_keys,
    cycle_cron,
    daily_cron,
    daily_schedule_name,
    journeys_automation_condition,
    journeys_job_name,
    range_tags,
    raw_job_name,
    window_run_requests,
)
from lgm_pipeline.assets.partitions import tenant_partitions
from lgm_pipeline.assets.webhooks import WEBHOOK_SENSOR
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.naming import journey_partition_key, parse_journey_partition_key
from lgm_pipeline.settings import AUTOMATION_INTERVAL_ENV, WEBHOOK_INTERVAL_ENV
from lgm_pipeline.sync import run_sync
from lgm_pipeline.tenants import Tenant, load_tenants
from lgm_pipeline_tests.assets.conftest import CYCLE_ASSETS, journeys_partitions_of
from lgm_pipeline_tests.conftest import pull_cycle


def test_schedule_tick_requests_today_and_tomorrow_in_toronto() -> None:
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("lgm_every_2_hours")
    tenant = load_tenants()[0]
    assert schedule.cron_schedule == cycle_cron(tenant)  # every 2 hours from the tenant's offset
    assert schedule.execution_timezone == "America/Toronto"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    # 04:00 UTC on the 26th is 23:00 on the 25th in Toronto: the window is the 25th and the 26th
    tick = dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.UTC)
    repository = defs.get_repository_def()
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repository) as context:
        result = schedule.evaluate_tick(context)
    # one run over both dates: one date-range list call
    [request] = result.run_requests
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == "2026-11-25"
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == "2026-11-26"
    # the tenant's SmartMoving job, narrowed to the raw pull and the leads: no branches, arrival windows, retention
    # or webhook refresh ride along every 2 hours
    pulled = {key.path[-1] for key in request.asset_selection or ()}
    assert pulled == CYCLE_ASSETS
    assert request.tags[WORK_TAG] == "cycle"
    assert schedule.job_name == raw_job_name(tenant)


def test_daily_catch_up_refreshes_the_last_seven_service_dates_without_refetching_for_age() -> None:
    defs = build_definitions()
    tenant = load_tenants()[0]
    schedule = defs.resolve_schedule_def(daily_schedule_name(tenant))
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == daily_cron(tenant)
    minute = tenant.cycle_offset_minutes
    # the morning tick of the 26th in Toronto (EST, UTC-5): 03:15 moved by the tenant's offset
    tick = dt.datetime(2026, 11, 26, 8, 15, tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    [request] = [r for r in requests if r.tags[WORK_TAG] == "catch_up"]
    assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        "2026-11-19",
        "2026-11-25",
    )
    config = request.run_config["ops"]["lgm__smartmoving_opportunities"]["config"]
    assert config["detail_max_age_hours"] >= 7 * 24


def test_only_journeys_is_automated_by_a_sensor_that_runs_from_the_first_start() -> None:
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    automated = {key for key in graph.get_all_asset_keys() if graph.get(key).automation_condition is not None}
    tenants = load_tenants()
    # the raw assets, leads, branches, arrival windows and retention follow their schedules only
    assert automated == {t.names.asset_key("journeys") for t in tenants}
    checks = [key for key in graph.asset_check_keys if graph.get(key).automation_condition is not None]
    assert checks == []
    repository = defs.get_repository_def()
    automation_sensors = [s for s in repository.sensor_defs if isinstance(s, dg.AutomationConditionSensorDefinition)]
    # one for the code location (a tenant group), and no stopped-by-default `default_automation_condition_sensor`
    assert [s.name for s in automation_sensors] == [AUTOMATION_SENSOR]
    [sensor] = automation_sensors
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30
    assert sensor.asset_selection.resolve(graph) == {t.names.asset_key("journeys") for t in tenants}  # type: ignore[union-attr]
    # the one hand-made sensor serves the webhook inbox, an outside table no automation condition can watch
    others = [s for s in repository.sensor_defs if not isinstance(s, dg.AutomationConditionSensorDefinition)]
    assert [s.name for s in others] == [WEBHOOK_SENSOR]


@pytest.mark.parametrize(
    "now",
    [
        dt.datetime(2026, 6, 10, 15, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 6, 11, 3, 59, tzinfo=dt.UTC),  # 23:59 on the 10th in Toronto
        dt.datetime(2026, 11, 3, 15, 0, tzinfo=dt.UTC),  # a 25-hour day (Nov 1) in the span
        dt.datetime(2026, 3, 10, 15, 0, tzinfo=dt.UTC),  # a 23-hour day (Mar 8) in the span
    ],
)
def test_condition_spans_the_catch_up_dates_and_the_window(now: dt.datetime) -> None:
    tenant = load_tenants()[0]
    # the condition's time window alone, on an asset partitioned like journeys
    [in_window] = [
        c for c in journeys_automation_condition(tenant).children if c.name.startswith("in_latest_time_window")
    ]

    @dg.asset(key="probe", partitions_def=tenant_partitions(tenant).journeys, automation_condition=in_window)
    def probe() -> None: ...

    result = dg.evaluate_automation_conditions(
        defs=[probe], instance=dg.DagsterInstance.ephemeral(), evaluation_time=now
    )
    dates = {parse_journey_partition_key(str(key))[0] for key in result.get_requested_partitions(probe.key)}
    today = tenant.today(now)
    expected = [*catch_up_dates(tenant, today), *tenant.sync_window(now)]
    assert sorted(dates) == expected
    assert len(expected) == tenant.catch_up_days + 2


def _partitions(tenant: Tenant, dates: list[dt.date], branches: list[str] | None = None) -> set[str]:
    return {str(journey_partition_key(d.isoformat(), b)) for d in dates for b in branches or tenant.location_ids}


def _in_own_window(tenant: Tenant, dates: list[dt.date], branches: list[str] | None = None) -> set[str]:
    """The partitions of ``dates`` a window pull rebuilds now: each branch's own today and tomorrow
    (all of ``dates`` but around midnight; test_branch_windows.py pins those hours)."""
    now = dt.datetime.now(dt.UTC)
    return {
        str(journey_partition_key(d.isoformat(), b))
        for d in dates
        for b in branches or tenant.location_ids
        if d in tenant.branch(b).window(now)
    }


class Automation:
    """Evaluates the definitions' automation conditions tick after tick, as the sensor does."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, tenant: Tenant) -> None:
        self.defs, self.instance, self.key = defs, instance, tenant.names.asset_key("journeys")
        # the first evaluation only records the state: it requests nothing
        self.result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert self.result.total_requested == 0

    def tick(self) -> set[str]:
        self.result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.result.cursor
        )
        requested = {str(k) for k in self.result.get_requested_partitions(self.key)}
        assert self.result.total_requested == len(requested)  # nothing but journeys is ever requested
        return requested


def _scheduled_raw_pull(
    defs: dg.Definitions, instance: dg.DagsterInstance, tenant: Tenant, tags: dict, run_config: dict | None = None
) -> None:
    assert pull_cycle(defs, tenant, instance, tags=tags, run_config=run_config).success


def _rebuild(defs: dg.Definitions, instance: dg.DagsterInstance, tenant: Tenant, keys: set[str]) -> None:
    job = defs.resolve_job_def(journeys_job_name(tenant))
    for key in sorted(keys):
        assert job.execute_in_process(partition_key=key, instance=instance).success


def test_raw_pull_requests_every_branch_partition_of_its_dates_once(defs, tenant, instance, window) -> None:
    automation = Automation(defs, instance, tenant)

    # the 2-hour schedule's run: today and tomorrow in one run
    [request] = window_run_requests(tenant, dt.datetime.now(dt.UTC), cycle_asset_keys(tenant, defs.assets or ()))
    _scheduled_raw_pull(defs, instance, tenant, request.tags)
    requested = automation.tick()
    assert requested == _in_own_window(tenant, window)
    assert len(requested) == 12  # six branches, each its today and tomorrow
    # requested once: the next tick, with the runs not even started, asks for nothing more
    assert automation.tick() == set()

    # the requested runs execute (as the daemon's would): still nothing more
    _rebuild(defs, instance, tenant, requested)
    assert automation.tick() == set()

    # a manual rebuild of one branch partition triggers nothing, neither itself again nor anything else
    _rebuild(defs, instance, tenant, {str(journey_partition_key(window[0].isoformat(), tenant.location_ids[0]))})
    assert automation.tick() == set()


def test_catch_up_pull_rebuilds_the_past_dates_it_refreshed(defs, tenant, instance) -> None:
    automation = Automation(defs, instance, tenant)
    dates = catch_up_dates(tenant, tenant.today())
    # the daily schedule's catch-up run, as the daemon launches it: the daily job narrowed to the raw pull
    schedule = defs.resolve_schedule_def(daily_schedule_name(tenant))
    morning = dt.datetime.combine(tenant.today(), dt.time(4), tenant.tz)
    with dg.build_schedule_context(scheduled_execution_time=morning, repository_def=defs.get_repository_def()) as ctx:
        [request] = [r for r in schedule.evaluate_tick(ctx).run_requests if r.tags[WORK_TAG] == "catch_up"]
    assert request.run_config == catch_up_run_config(tenant)
    assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == tuple(
        range_tags(dates).values()
    )
    job = defs.resolve_job_def(schedule.job_name)
    assert job.execute_in_process(
        instance=instance, tags=request.tags, run_config=request.run_config, asset_selection=request.asset_selection
    ).success
    assert automation.tick() == _partitions(tenant, dates)
    assert automation.tick() == set()


def test_raw_run_that_stopped_before_smartmoving_jobs_rebuilds_nothing(defs, tenant, instance, window) -> None:
    automation = Automation(defs, instance, tenant)
    _scheduled_raw_pull(defs, instance, tenant, range_tags(window))
    _rebuild(defs, instance, tenant, automation.tick())
    # what a raw run failing on the opportunity details leaves: the customers written, smartmoving_jobs not
    job = defs.resolve_job_def(raw_job_name(tenant))
    customers = tenant.names.asset_key("smartmoving_customers")
    assert job.execute_in_process(instance=instance, tags=range_tags(window), asset_selection=[customers]).success
    assert automation.tick() == set()


def test_lgm_sync_makes_the_automations_runs_and_the_daemon_does_not_repeat_them(
    defs, tenant, instance, window
) -> None:
    automation = Automation(defs, instance, tenant)
    report = run_sync(defs, tenant, instance, with_leads=False)
    assert report.ok
    # the runs the schedule and the automation make: one raw run over the window, one journeys run per date
    # covering all its branches (a single-run backfill of the requested partitions)
    runs = instance.get_run_records()
    journeys_runs = [r.dagster_run for r in runs if r.dagster_run.job_name == journeys_job_name(tenant)]
    raw_runs = [r.dagster_run for r in runs if r.dagster_run.job_name == raw_job_name(tenant)]
    assert len(raw_runs) == 1
    assert len(journeys_runs) == len(window)
    rebuilt = [k for r in journeys_runs for k in journeys_partitions_of(r, tenant)]
    assert sorted(rebuilt) == sorted(_in_own_window(tenant, window))
    dates_per_run = [
        {parse_journey_partition_key(k)[0] for k in journeys_partitions_of(r, tenant)} for r in journeys_runs
    ]
    assert all(len(dates) == 1 for dates in dates_per_run)
    assert report.branches and all(b.success and b.checks_passed for b in report.branches)
    # sync's journeys runs came after its raw pull: the daemon's next evaluation has nothing to do
    assert automation.tick() == set()


def _partition_writers(db: sa.Engine, tenant: Tenant) -> dict[tuple[dt.date, str], set[str]]:
    """The runs that wrote each (date, branch) of journeys (``sync_runs``, one row per partition write)."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT service_date, location_id, run_id FROM {tenant.schema}.sync_runs WHERE asset = 'journeys'")
        ).all()
    writers: dict[tuple[dt.date, str], set[str]] = {}
    for day, location_id, run_id in rows:
        writers.setdefault((day, location_id), set()).add(run_id)
    return writers


def test_an_engineer_rebuilds_one_branch_partition_alone_after_a_date_run(defs, tenant, instance, window, db) -> None:
    assert run_sync(defs, tenant, instance, with_leads=False).ok
    before = _partition_writers(db, tenant)
    branch = tenant.location_ids[0]
    key = str(journey_partition_key(window[0].isoformat(), branch))
    # what the UI's "Materialize" of one partition launches: the partition tag only
    result = defs.resolve_job_def(journeys_job_name(tenant)).execute_in_process(
        instance=instance, tags={"dagster/partition": key}
    )
    assert result.success
    after = _partition_writers(db, tenant)
    assert after[(window[0], branch)] == before[(window[0], branch)] | {result.run_id}
    assert {p: w for p, w in after.items() if p != (window[0], branch)} == {
        p: w for p, w in before.items() if p != (window[0], branch)
    }
    # its checks speak of that partition alone, as before runs covered several (freshness: of every branch)
    evaluations = [e for e in result.get_asset_check_evaluations() if e.check_name != "journeys_freshness"]
    assert evaluations and all(e.metadata["partition"].value == f"{window[0]} / {branch}" for e in evaluations)
    [materialization] = result.get_asset_materialization_events()
    assert materialization.materialization.partition == key


def test_lgm_sync_of_one_branch_leaves_the_other_branches_to_the_daemon(defs, tenant, instance, window) -> None:
    automation = Automation(defs, instance, tenant)
    branch = tenant.location_ids[0]
    assert run_sync(defs, tenant, instance, location_ids=[branch], with_leads=False).ok
    others = [b for b in tenant.location_ids if b != branch]
    # the pulled dates' other branches are rebuilt by the daemon; the synced one is not rebuilt again
    assert automation.tick() == _in_own_window(tenant, window, others)
    assert automation.tick() == set()


def test_the_automation_interval_is_a_setting_and_a_bad_value_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTOMATION_INTERVAL_ENV, "120")
    assert build_definitions().resolve_sensor_def(AUTOMATION_SENSOR).minimum_interval_seconds == 120
    monkeypatch.setenv(AUTOMATION_INTERVAL_ENV, "2 minutes")
    with pytest.raises(ValueError, match=AUTOMATION_INTERVAL_ENV):
        build_definitions()


def test_the_webhook_sensors_interval_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEBHOOK_INTERVAL_ENV, raising=False)
    assert build_definitions().resolve_sensor_def(WEBHOOK_SENSOR).minimum_interval_seconds == 10
    monkeypatch.setenv(WEBHOOK_INTERVAL_ENV, "3")  # a demo's, or a location that wants every second back
    assert build_definitions().resolve_sensor_def(WEBHOOK_SENSOR).minimum_interval_seconds == 3
    monkeypatch.setenv(WEBHOOK_INTERVAL_ENV, "0")
    with pytest.raises(ValueError, match=WEBHOOK_INTERVAL_ENV):
        build_definitions()


def test_the_default_interval_grows_with_the_code_locations_tenants_up_to_two_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lgm_pipeline.settings import automation_interval_s

    monkeypatch.delenv(AUTOMATION_INTERVAL_ENV, raising=False)
    # an idle tick costs per tenant: a bigger location ticks less often, never more than 2 minutes apart
    assert [automation_interval_s(n) for n in (1, 25, 26, 50, 75, 100, 1000)] == [30, 30, 60, 60, 90, 120, 120]
    assert build_definitions().resolve_sensor_def(AUTOMATION_SENSOR).minimum_interval_seconds == 30  # LGM alone
    monkeypatch.setenv(AUTOMATION_INTERVAL_ENV, "45")
    assert automation_interval_s(100) == 45  # an operator's setting wins
