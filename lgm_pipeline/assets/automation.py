"""What runs without anyone clicking: the 2-hour refresh, the daily work, and journeys after each pull.

Two schedules a tenant. The cycle's (:func:`build_refresh_schedule`) pulls the raw assets for every
branch's today and tomorrow (each on its own clock: two dates, three around midnight) and the leads of
yesterday and today in one run (one date-range list call each). It ticks at the tenant's own minute of
the 2 hours (:func:`cycle_cron`: ``Tenant.cycle_offset_minutes``, from a hash of the key or
tenants.yaml), so a location's tenants do not all start at once; load tests shorten the period
(``LGM_CYCLE_PERIOD_MINUTES``), staggered alike. The daily one
(:func:`build_daily_schedule`), staggered by the same offset, requests in the early morning the
retention, the branches and the catch-up (the tenant's last ``catch_up_days`` service dates, pulled the
same way, so past jobs reach Completed and Closed), and in the afternoon tomorrow's arrival windows.

``journeys`` follows by declarative automation (:func:`journeys_automation_condition`): Dagster's
``eager`` condition with its time window widened from the latest date to the catch-up dates plus the
window. When a raw pull of a date lands, each branch partition of that date in the branch's own
window (:class:`InBranchWindow`; every branch for the catch-up's past dates) is requested once; a
partition rebuilt after that pull (by ``lgm sync`` or by hand) counts as handled, so nothing is
rebuilt twice, and a manual rebuild of one partition requests nothing else. Only ``journeys`` has a
condition: the schedules drive the raw assets, leads and the rest. The code location's one
:func:`build_automation_sensor` evaluates every tenant's, every 30 s by default, on from the first start.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from lgm_pipeline.naming import parse_journey_partition_key
from lgm_pipeline.settings import (
    DEFAULT_REFRESH_CRON,
    automation_interval_s,
    cycle_period_minutes,
    refresh_cron_override,
)
from lgm_pipeline.tenants import Tenant

REFRESH_CRON = DEFAULT_REFRESH_CRON  # the cycle's cadence at offset 0; a tenant's own cron is cycle_cron(tenant)
#: The daily schedule's two ticks at offset 0, each moved by the tenant's offset (0 to 119 minutes):
#: the morning's work from 03:15 to 05:14 (after the evening's jobs are closed in SmartMoving, before
#: the day starts; 04:15 on average, the catch-up's time before the stagger), tomorrow's arrival
#: windows from 14:15 to 16:14 (dispatch plans tomorrow in the afternoon). The morning's tick falls 75
#: minutes past a tick of the tenant's cycle, the afternoon's 15 (unless LGM_REFRESH_CRON overrides the
#: cycle): never at the same minute.
DAILY_TICKS = (dt.time(3, 15), dt.time(14, 15))
#: Ticks before this hour (tenant time) are the morning's; after it, the afternoon's.
AFTERNOON_FROM_HOUR = 12
#: Which work a run of a tenant's SmartMoving job is (the job is the same for all of them): ``cycle``,
#: ``retention``, ``branches``, ``catch_up``, ``arrival_windows`` or ``webhook_refresh``.
WORK_TAG = "lgm/work"

# The SmartMoving job holds the raw pull and the leads (single-run backfill policy: a run covers a range of
# dates) with the arrival windows (one date a run); Dagster warns at every load of the definitions that
# the job's own backfill policy is then one date a run. That policy only matters for a backfill of that
# job, which nothing launches (its runs are the schedules' and the sensor's, each over one kind of work; a
# range run's tags work whatever the job's policy): the warning says nothing here, so it is silenced for
# this job only.
warnings.filterwarnings(
    "ignore",
    message=r"Asset job \w+_smartmoving_refresh materializes assets with varying BackfillPolicies",
    category=UserWarning,
)


def cycle_offset(tenant: Tenant) -> int:
    """The tenant's minute in the cycle's period: ``cycle_offset_minutes`` (a minute of 2 hours) modulo the period."""
    return tenant.cycle_offset_minutes % cycle_period_minutes()


def cycle_cron(tenant: Tenant) -> str:
    """The tenant's cycle schedule's cron (tenant time): every period (2 hours by default,
    ``LGM_CYCLE_PERIOD_MINUTES``) from its :func:`cycle_offset`, e.g. ``14 1-23/2 * * *`` or ``4-59/10 * * * *``.

    ``LGM_REFRESH_CRON``, when set, is kept verbatim for every tenant, unstaggered: tests, demos and
    benchmarks set it to tick now (``* * * * *``, a given minute), and an operator's explicit cron means
    that cron. The stagger applies to the default 2-hour period only.
    """
    override = refresh_cron_override()
    if override:
        return override
    period, offset = cycle_period_minutes(), cycle_offset(tenant)
    if period <= 60:
        minutes = f"{offset}-59/{period}" if period < 60 else str(offset)
        return f"{minutes} * * * *"
    first_hour, minute = divmod(offset, 60)
    hours = f"{first_hour}-23/{period // 60}" if first_hour else f"*/{period // 60}"
    return f"{minute} {hours} * * *"


def daily_cron(tenant: Tenant) -> str:
    """The daily schedule's cron (tenant time): :data:`DAILY_TICKS` moved by the tenant's offset, e.g.
    ``29 4,15 * * *`` for an offset of 74 minutes (the morning's and the afternoon's tick share a minute)."""
    starts = [t.hour * 60 + t.minute + tenant.cycle_offset_minutes for t in DAILY_TICKS]
    assert len({start % 60 for start in starts}) == 1, "the daily ticks must share their minute"
    return f"{starts[0] % 60} {','.join(str(start // 60) for start in starts)} * * *"


def raw_job_name(tenant: Tenant) -> str:
    """The tenant's SmartMoving job: every run that pulls (or prunes) its raw data, each narrowed to its assets."""
    return tenant.names.job("smartmoving_refresh")


def journeys_job_name(tenant: Tenant) -> str:
    return tenant.names.job("journeys")


def cycle_asset_keys(tenant: Tenant, assets: Iterable[dg.AssetsDefinition]) -> list[dg.AssetKey]:
    """The cycle's assets (its groups: the raw pull and the leads), which the cycle and the catch-up runs select."""
    groups = {tenant.names.group("raw"), tenant.names.group("leads")}
    return [key for a in assets for key in a.keys if a.group_names_by_key.get(key) in groups]


def build_jobs(tenant: Tenant) -> tuple[dg.UnresolvedAssetJobDefinition, dg.UnresolvedAssetJobDefinition]:
    """The tenant's two jobs: everything that calls SmartMoving (or prunes history), and the journeys rebuild.

    Each run of the first is narrowed to its assets (``asset_selection``): the cycle's raw pull with the
    leads, the daily work (retention, branches, catch-up, arrival windows), a webhook refresh. One job, not
    one per kind of run: the daemon reloads every job's snapshot from every code location every minute, and
    the code server builds each anew for it, most of the standing cost with many tenants
    (docs/performance.md, section 12). A schedule launches its runs under its own job (the daemon ignores a
    ``RunRequest``'s ``job_name``, which only sensors honour), so both schedules target this one.
    ``journeys`` cannot join it: a job's assets share one partitions definition (its is date x branch)."""
    names = tenant.names
    smartmoving = dg.define_asset_job(
        raw_job_name(tenant),
        selection=(
            dg.AssetSelection.groups(names.group("raw"), names.group("leads"), names.group("webhooks"))
            | dg.AssetSelection.assets(
                names.asset_key("smartmoving_branches"),
                names.asset_key("history_retention"),
                names.asset_key("smartmoving_arrival_windows"),
            )
        ),
        description=(
            "Every pull from SmartMoving, each run narrowed to one kind (tag lgm/work): the 2-hour cycle's service "
            "dates with the leads, the morning's retention, branches and catch-up, the afternoon's arrival windows, "
            "a webhook refresh."
        ),
        tags=names.tags,
    )
    journeys = dg.define_asset_job(
        journeys_job_name(tenant),
        # Every check of journeys, the freshness check too: the automation's backfill runs all of them (Dagster
        # gives a backfill run every check of its assets), and lgm sync makes the same runs.
        selection=dg.AssetSelection.assets(names.asset_key("journeys")),
        description=(
            "Rebuild journeys partitions from the raw tables (no API call): one date x branch, or a date's branches."
        ),
        tags=names.tags,
    )
    return smartmoving, journeys


def range_tags(dates: list[dt.date]) -> dict[str, str]:
    """Tags that make one run cover ``dates`` (consecutive) of the date-partitioned raw assets."""
    return {
        ASSET_PARTITION_RANGE_START_TAG: min(dates).isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: max(dates).isoformat(),
    }


def range_dates(tags: Mapping[str, str]) -> list[dt.date]:
    """The dates a raw run's range tags cover (the inverse of :func:`range_tags`)."""
    first = dt.date.fromisoformat(tags[ASSET_PARTITION_RANGE_START_TAG])
    last = dt.date.fromisoformat(tags[ASSET_PARTITION_RANGE_END_TAG])
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def partition_range_tags(keys: Sequence[str]) -> dict[str, str]:
    """Tags that make one run cover ``keys``, the first and last of a range (a single-run backfill's form)."""
    return {ASSET_PARTITION_RANGE_START_TAG: str(keys[0]), ASSET_PARTITION_RANGE_END_TAG: str(keys[-1])}


def window_run_requests(tenant: Tenant, now: dt.datetime, cycle_keys: Sequence[dg.AssetKey]) -> list[dg.RunRequest]:
    """The cycle's one run at ``now``: ``cycle_keys`` (:func:`cycle_asset_keys`) over every branch's window."""
    return [
        dg.RunRequest(
            run_key=f"window@{now.isoformat()}",
            asset_selection=list(cycle_keys),
            tags={**range_tags(tenant.sync_window(now)), WORK_TAG: "cycle"},
        )
    ]


def catch_up_run_config(tenant: Tenant) -> dict:
    """Past dates' details are refetched only when their jobs changed or work was newly Completed.

    Why: refetching every past opportunity daily would cost ~1,400 calls a day at LGM's volume, and
    refetching on every status change ~330 (each booked job is completed, then closed); statuses
    come from the customers list, which the catch-up pulls anyway (docs/performance.md).
    """
    max_age = 24.0 * (tenant.catch_up_days + 1)
    op = tenant.names.op("smartmoving_opportunities")
    return {"ops": {op: {"config": {"detail_max_age_hours": max_age, "refetch_on_status_change": False}}}}


def refresh_details_run_config(tenant: Tenant, run_config: dict | None = None) -> dict:
    """``run_config`` with every opportunity's details fetched again (``lgm sync --refresh-details``).

    What the list summary does not show (a job moved to another branch, an address) otherwise waits until
    the cached details are ``detail_max_age_hours`` old: one call per opportunity, ~212 a date at LGM's volume.
    """
    op = tenant.names.op("smartmoving_opportunities")
    ops = dict((run_config or {}).get("ops", {}))
    config = dict(ops.get(op, {}).get("config", {}))
    ops[op] = {"config": {**config, "force_refresh": True}}
    return {**(run_config or {}), "ops": ops}


def catch_up_dates(tenant: Tenant, today: dt.date) -> list[dt.date]:
    days = [today - dt.timedelta(days=n) for n in range(tenant.catch_up_days, 0, -1)]
    return [d for d in days if d >= tenant.first_service_date]


def refresh_schedule_name(tenant: Tenant) -> str:
    return tenant.names.schedule("every_2_hours")


def build_refresh_schedule(
    tenant: Tenant, job: dg.UnresolvedAssetJobDefinition, cycle_keys: Sequence[dg.AssetKey]
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=refresh_schedule_name(tenant),
        cron_schedule=cycle_cron(tenant),
        job=job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            "Refresh every branch's today and tomorrow (its own time zone) from SmartMoving every "
            f"{cycle_period_minutes()} minutes, {cycle_offset(tenant)} minutes into the period (the tenant's stagger)."
        ),
    )
    def refresh(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        return window_run_requests(tenant, now, cycle_keys)

    return refresh


def daily_schedule_name(tenant: Tenant) -> str:
    return tenant.names.schedule("daily")


def daily_run_requests(tenant: Tenant, now: dt.datetime, cycle_keys: Sequence[dg.AssetKey]) -> list[dg.RunRequest]:
    """What the daily schedule launches at ``now``, a tick of :func:`daily_cron`, by the tick's local hour.

    In the morning: the retention, the branches (one call) and the catch-up of ``cycle_keys`` (the
    cycle's assets: the raw pull and the leads) over the last ``catch_up_days`` dates (no catch-up when
    it is 0 or no past date is a partition yet). In the afternoon: tomorrow's arrival windows (the asset
    itself skips the calls when the month's projected calls pass 90 % of the quota).
    """
    names = tenant.names
    stamp = now.isoformat()
    if now.astimezone(tenant.tz).hour >= AFTERNOON_FROM_HOUR:
        tomorrow = tenant.today(now) + dt.timedelta(days=1)
        return [
            dg.RunRequest(
                run_key=f"arrival-windows@{stamp}",
                asset_selection=[names.asset_key("smartmoving_arrival_windows")],
                partition_key=tomorrow.isoformat(),
                tags={WORK_TAG: "arrival_windows"},
            )
        ]
    requests = [
        dg.RunRequest(
            run_key=f"retention@{stamp}",
            asset_selection=[names.asset_key("history_retention")],
            tags={WORK_TAG: "retention"},
        ),
        dg.RunRequest(
            run_key=f"branches@{stamp}",
            asset_selection=[names.asset_key("smartmoving_branches")],
            tags={WORK_TAG: "branches"},
        ),
    ]
    dates = catch_up_dates(tenant, tenant.today(now))
    if dates:
        requests.append(
            dg.RunRequest(
                run_key=f"catch-up@{stamp}",
                asset_selection=list(cycle_keys),
                tags={**range_tags(dates), WORK_TAG: "catch_up"},
                run_config=catch_up_run_config(tenant),
            )
        )
    return requests


def build_daily_schedule(
    tenant: Tenant, job: dg.UnresolvedAssetJobDefinition, cycle_keys: Sequence[dg.AssetKey]
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=daily_schedule_name(tenant),
        cron_schedule=daily_cron(tenant),
        job=job,
        execution_timezone=tenant.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Morning: prune old history, pull the branches and refresh the last {tenant.catch_up_days} service "
            "dates, so jobs whose date has passed reach Completed and Closed (details refetched only where the "
            "customers list shows a change). Afternoon: tomorrow's arrival windows (skipped by the asset when "
            "the month's quota has no room)."
        ),
    )
    def daily(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        return daily_run_requests(tenant, now, cycle_keys)

    return daily


def next_cycle_tick(tenant: Tenant, now: dt.datetime | None = None) -> dt.datetime:
    """The tenant's first cycle tick after ``now``, in its time zone (Dagster's cron iterator, as the daemon's)."""
    from dagster._utils.schedules import cron_string_iterator

    now = now or dt.datetime.now(dt.UTC)
    ticks = cron_string_iterator(now.timestamp(), cycle_cron(tenant), tenant.timezone)
    return next(tick for tick in ticks if tick > now).astimezone(tenant.tz)


#: The code location's one automation sensor: every tenant's ``journeys`` (a location is a tenant group).
AUTOMATION_SENSOR = "journeys_automation"
#: Tags of the runs the automation sensor launches (they cover one tenant each; the asset keys say which).
#: Ahead of the queued raw pulls: a tenant whose pull is done gets its journeys next, not after every
#: other tenant's pull (the queue is otherwise first in, first out).
AUTOMATION_RUN_TAGS = {"lgm/launched_by": AUTOMATION_SENSOR, "dagster/priority": "1"}


def journeys_lookback(tenant: Tenant) -> dt.timedelta:
    """The dates whose raw pulls rebuild journeys: the catch-up's past dates and every branch's window.

    Measured back from the end of the last partition (the tenant's tomorrow, or the day after when a
    branch lives east of the tenant's clock): ``catch_up_days + 1 + max_days_ahead`` dates, also
    across the DST changes (tested).
    """
    return dt.timedelta(days=tenant.catch_up_days + 1 + tenant.max_days_ahead())


class InBranchWindow(dg.AutomationCondition[dg.AssetKey]):
    """True for a (date, branch) partition that a raw pull of its date rebuilds now.

    That is, :meth:`Tenant.rebuilds_after_pull` at the evaluation time: the date is the branch's own
    today or tomorrow, or has passed for every branch (the catch-up's dates). Arbitrary Python, so
    the sensor evaluates it in the code server (``use_user_code_server``).
    """

    def __init__(self, tenant: Tenant) -> None:
        self._tenant = tenant

    @property
    def name(self) -> str:
        return "in_branch_window"

    @property
    def description(self) -> str:
        return "The date is the branch's own today or tomorrow (its time zone), or has passed for every branch"

    @property
    def requires_cursor(self) -> bool:
        return False

    def evaluate(self, context: dg.AutomationContext[dg.AssetKey]) -> dg.AutomationResult[dg.AssetKey]:
        now = context.evaluation_time
        wanted = set()
        for key in context.candidate_subset.expensively_compute_partition_keys():
            day, location_id = parse_journey_partition_key(key)
            if location_id in self._tenant.location_ids and self._tenant.rebuilds_after_pull(location_id, day, now):
                wanted.add(key)
        return dg.AutomationResult(
            context, true_subset=context.candidate_subset.compute_intersection_with_partition_keys(wanted)
        )


def journeys_automation_condition(tenant: Tenant) -> dg.AutomationCondition:
    """Dagster's ``eager()``, over the catch-up dates and the branches' windows, after complete raw pulls.

    True for a (date, branch) partition when ``smartmoving_jobs`` of its date was written (or the
    partition went missing) while the date was in the branch's window (:class:`InBranchWindow`), since
    the partition was last requested or materialized, no raw input is missing or in progress, and it
    is not in progress itself. Four changes to ``eager()``:

    - its time window, the latest date by default, spans :func:`journeys_lookback`, so the catch-up's
      past dates are rebuilt too. A raw pull of an older date (a backfill) rebuilds nothing: backfill
      journeys with it (or use ``lgm sync --date``).
    - only ``smartmoving_jobs``, the last step of a raw run, counts as an update: a run that wrote
      the customers but failed on the opportunities leaves journeys alone, as ``lgm sync`` does.
    - a missing or in-progress input is judged by ``smartmoving_jobs`` alone: the raw run writes it last, so
      it is present only after its run wrote the others, and in progress while any of them is. One input
      instead of four is a quarter of that part of each tick's work and of the cursor the sensor rewrites
      (docs/performance.md, section 12).
    - an update counts for a branch only inside its window: around midnight the cycle pulls a third
      date for the branches still (or already) living it, and the other branches' partitions of that
      date wait for their own window or the catch-up. The filter sits on the trigger, not on the
      whole condition, so a partition is not rebuilt later when its window merely arrives.

    A materialization later than the raw write resets it, whoever launched it: ``lgm sync``'s own
    journeys runs and manual rebuilds are not repeated.
    """
    jobs = dg.AssetSelection.assets(tenant.names.asset_key("smartmoving_jobs"))
    in_window = InBranchWindow(tenant)
    return (
        dg.AutomationCondition.eager()
        .replace("in_latest_time_window", dg.AutomationCondition.in_latest_time_window(journeys_lookback(tenant)))
        .replace("newly_missing", dg.AutomationCondition.missing().newly_true() & in_window)
        .replace("any_deps_updated", dg.AutomationCondition.any_deps_updated().allow(jobs) & in_window)
        .replace("any_deps_missing", dg.AutomationCondition.any_deps_missing().allow(jobs))
        .replace("any_deps_in_progress", dg.AutomationCondition.any_deps_in_progress().allow(jobs))
        .with_label(f"eager after a raw pull, each branch's window and the last {tenant.catch_up_days} dates")
    )


def build_automation_sensor(tenants: Sequence[Tenant]) -> dg.AutomationConditionSensorDefinition:
    """Evaluates every tenant's automation condition (only ``journeys`` has one), on from the first start.

    One sensor per code location, not per tenant: a tick's cost is mostly per asset evaluated, and a
    sensor per tenant adds a tick's fixed cost (a gRPC call, the cursor rewritten, the daemon's
    bookkeeping) per tenant, every interval (:func:`settings.automation_interval_s`). A code location
    is a tenant group (its tenants file; docs/performance.md, section 10), so this is a sensor per group.

    A tick requesting several partitions emits one backfill (``emit_backfills``), which ``journeys``'
    single-run backfill policy turns into one run per tenant and pulled date (Dagster groups a 2-D
    subset's ranges by its dimension with fewer keys: the dates), as ``lgm sync`` does
    (:func:`sync.journeys_runs`). Those runs carry :data:`AUTOMATION_RUN_TAGS`, not the tenant
    tag: a sensor's run tags are fixed, and journeys runs call no API, so the per-tenant run limit has
    nothing to guard there.
    """
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.assets(*(t.names.asset_key("journeys") for t in tenants)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=automation_interval_s(len(tenants)),
        emit_backfills=True,
        # InBranchWindow is Python of ours: the daemon alone could not evaluate it.
        use_user_code_server=True,
        run_tags=AUTOMATION_RUN_TAGS,
        description="Rebuild each (date, branch) partition of every tenant's journeys once after a raw pull of it.",
    )
