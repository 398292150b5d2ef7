"""One tick of the cycle, decided by the production definitions and executed in this process.

``lgm sync`` (and ``lgm up``'s first sync) is one way to tick the cycle the daemon ticks: it asks the tenant's
2-hour schedule what to run at "now" (``build_schedule_context``), executes those raw runs, asks the
declarative automation what it requests afterwards (``evaluate_automation_conditions`` with a cursor of its
own, taken before the raw runs so that their writes count as updates), and executes exactly those
``journeys`` partitions, one run per key range of the requested subset (Dagster's own ranges: a date's
neighbouring branches, or with one branch its dates). Runs go through the instance: the UI shows them.

What an operator names explicitly (``--date``, ``--catch-up``) is a rematerialization, as from the UI: the
dates are pulled in one run per block of consecutive dates and every (date, branch) partition asked for is
rebuilt. ``--branch`` narrows either to its branches.

A tick of the daemon's automation after this one requests nothing more: a partition materialized after its
raw pull is handled (``since_last_handled``). The report is built from the runs' results (``sync_report``).

Interruption (Ctrl-C, SIGTERM; ``cli/signals.py`` catches them): no further run starts and the run in flight
is canceled through the instance (``sync_execution``); the report says what finished.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from lgm_pipeline.assets.automation import (
    cycle_asset_keys,
    journeys_job_name,
    partition_range_tags,
    range_dates,
    range_tags,
    raw_job_name,
    refresh_schedule_name,
)
from lgm_pipeline.naming import journey_partition_key, parse_journey_partition_key
from lgm_pipeline.sync_execution import Interruption, Stopped, execute_run
from lgm_pipeline.sync_report import (
    BranchResult,
    Progress,
    RawPull,
    RunOutcome,
    SyncReport,
    add_calls,
    branch_result,
    count_quarantine,
    date_label,
    failure,
    format_report,
    leads_outcome,
    leads_steps,
    pull_line,
    raw_pull,
    record_failure,
    records_line,
    report_dict,
    succeeded_apart_from,
    unmapped_line,
)
from lgm_pipeline.tenants import Tenant

__all__ = ["BranchResult", "Interruption", "RawPull", "SyncReport", "format_report", "report_dict", "run_sync"]


def consecutive_blocks(dates: Sequence[dt.date]) -> list[list[dt.date]]:
    """Sorted, de-duplicated dates in runs of consecutive days (each is one raw run)."""
    blocks: list[list[dt.date]] = []
    for day in sorted(set(dates)):
        if blocks and day - blocks[-1][-1] == dt.timedelta(days=1):
            blocks[-1].append(day)
        else:
            blocks.append([day])
    return blocks


def journeys_runs(partitions_def: dg.PartitionsDefinition, keys: Sequence[str]) -> list[list[str]]:
    """The runs that rebuild ``keys``: one per key range of their subset, as Dagster's single-run backfill makes
    them (a 2-D subset is ranged over its dimension with fewer keys: a date's branches, or one branch's dates)."""
    subset = partitions_def.subset_with_partition_keys(keys)
    return [
        [str(k) for k in partitions_def.get_partition_keys_in_range(key_range)]
        for key_range in subset.get_partition_key_ranges(partitions_def)
    ]


def _merged(scheduled: Mapping[str, Any] | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """A run request's config with the operator's on top, op by op (``--refresh-details`` keeps a schedule's
    own op config)."""
    merged = {**(scheduled or {}), **given}
    ops = {**(scheduled or {}).get("ops", {}), **given.get("ops", {})}
    return {**merged, "ops": ops} if ops else merged


def quiet_console(level: str) -> dict[str, Any]:
    """Run config sending Dagster's console logger only events at ``level`` and above (the instance keeps all)."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def scheduled_raw_requests(defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, now: dt.datetime):
    """What the tenant's 2-hour schedule requests at ``now``: the raw run(s) of the cycle's window."""
    schedule = defs.resolve_schedule_def(refresh_schedule_name(tenant))
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=now) as context:
        requested = schedule(context)
    return [r for r in (requested if isinstance(requested, list) else [requested]) if isinstance(r, dg.RunRequest)]


class _Automation:
    """The journeys automation of one tenant, evaluated with a cursor of this sync's own (not the daemon's)."""

    def __init__(self, defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, now: dt.datetime) -> None:
        self.defs, self.instance, self.now = defs, instance, now
        self.key = tenant.names.asset_key("journeys")
        self.cursor = None
        self.error: str | None = None
        # The first evaluation records the state the raw runs then change (and requests what is already due).
        self.requested = self.evaluate()

    def evaluate(self) -> set[str]:
        """The partitions requested; none when the evaluation fails (``error`` says why; the pulls stand)."""
        try:
            result = dg.evaluate_automation_conditions(
                defs=self.defs,
                instance=self.instance,
                asset_selection=dg.AssetSelection.assets(self.key),
                evaluation_time=self.now,
                cursor=self.cursor,
            )
        except Exception as error:  # a database blip, a bug in a condition: reported, not a traceback
            self.error = self.error or f"the journeys automation could not be evaluated: {error}".splitlines()[0]
            return set()
        self.cursor = result.cursor
        return {str(k) for k in result.get_requested_partitions(self.key)}


class _Tick:
    """The runs of one sync, in order, and what each tells the report."""

    def __init__(
        self,
        defs: dg.Definitions,
        tenant: Tenant,
        instance: dg.DagsterInstance,
        report: SyncReport,
        progress: Progress,
        interruption: Interruption | None,
        run_config: dict | None,
        console_level: str | None,
        run_tags: Mapping[str, str] | None,
    ) -> None:
        self.defs, self.tenant, self.instance, self.report = defs, tenant, instance, report
        self.progress, self.interruption, self.run_config = progress, interruption, run_config or {}
        self.console = quiet_console(console_level) if console_level else {}
        self.tags = dict(run_tags or {})
        self.in_flight = ""  # what the run being executed is ("2026-11-27 raw pull")
        self.unpulled: list[dt.date] = []
        self.pulled: list[dt.date] = []
        self.branches = list(tenant.location_ids)  # whose journeys this sync rebuilds

    @property
    def interrupted(self) -> bool:
        return self.interruption is not None and self.interruption.requested

    def _run(
        self, job: str, what: str, config: dict | None = None, tags: Mapping[str, str] = {}, **kw: Any
    ) -> RunOutcome:
        self.in_flight = what
        run_config = {**(config or {}), **self.console} or None
        run = execute_run(
            self.defs.resolve_job_def(job), self.instance, self.interruption, run_config, {**self.tags, **tags}, **kw
        )
        add_calls(self.report, run.api_calls)
        return run

    def pull(self, requests: Sequence[dg.RunRequest], with_leads: bool, with_branches: bool) -> list[dt.date]:
        """The raw runs; returns the dates pulled. A cycle-stopping error (settings, key, quota) ends the pull."""
        tenant, report, pulled = self.tenant, self.report, self.pulled
        self.unpulled = list(report.dates)
        if with_branches and not self._branches():
            return []
        steps = leads_steps(tenant)
        cycle_keys = cycle_asset_keys(tenant, self.defs.assets or ())
        raw_only = [k for k in cycle_keys if not steps(k.to_python_identifier())]

        def not_leads(step: str) -> bool:
            return not steps(step)

        for index, request in enumerate(requests):
            block = range_dates(request.tags)
            label = date_label(block)
            self.progress(f"{tenant.key} {label}: pulling customers and opportunity details from SmartMoving")
            leads_here = with_leads and index == 0  # the leads ride in the first pull, as in the daemon's runs
            config = _merged(request.run_config, self.run_config)
            selection = cycle_keys if leads_here else raw_only
            raw = self._run(raw_job_name(tenant), f"{label} raw pull", config, request.tags, asset_selection=selection)
            raw_ok = succeeded_apart_from(raw.result, steps)
            pull = raw_pull(block, raw, raw_ok)
            report.pulls.append(pull)
            text, stop, _ = ("", False, False) if raw_ok else failure(raw.result, not_leads)
            if leads_here and not stop and not self.interrupted:  # else the leads made no call: nothing to say
                leads_outcome(tenant, report, raw, steps, self.progress)
            if not raw_ok:
                record_failure(report, raw, f"{label} raw pull", not_leads)
                pull.error = text
                report.raw_failures.update(dict.fromkeys(block, text))
                self.progress(f"{tenant.key} {label}: FAILED {text}  [run {raw.run_id}]")
                self.unpulled = [d for d in self.unpulled if d not in block]
                if stop or self.interrupted:  # the other dates would only spend calls failing the same way
                    report.cycle_stopped = text if stop else None
                    why = "interrupted" if self.interrupted else f"cycle stopped: {text}"
                    report.raw_failures.update(dict.fromkeys(self.unpulled, f"not pulled, {why}"))
                    self.unpulled = []
                    break
                continue
            pulled.extend(block)
            self.unpulled = [d for d in self.unpulled if d not in block]
            self.progress(pull_line(tenant, pull))
            for shown, line in ((pull.records, records_line), (pull.unmapped_branches, unmapped_line)):
                if shown:
                    self.progress(line(tenant, pull))
        return pulled

    def _branches(self) -> bool:
        """SmartMoving's branches (dispatch addresses); False when their failure stops the cycle."""
        report = self.report
        branches = [self.tenant.names.asset_key("smartmoving_branches")]
        run = self._run(raw_job_name(self.tenant), "branches", asset_selection=branches)
        if run.result.success:
            return True
        report.branches_failure = record_failure(report, run, "branches")
        self.progress(f"{self.tenant.key}: branches not pulled: {report.branches_failure}  [run {run.run_id}]")
        if not failure(run.result)[1]:
            return True
        report.cycle_stopped = report.branches_failure
        report.raw_failures.update(dict.fromkeys(report.dates, f"not pulled, cycle stopped: {report.branches_failure}"))
        self.unpulled = []
        return False

    def rebuild(self, keys: Sequence[str]) -> None:
        """The journeys runs of ``keys``, one per key range (a date's branches; one branch's dates)."""
        tenant, report = self.tenant, self.report
        job = self.defs.resolve_job_def(journeys_job_name(tenant))
        assert job.partitions_def is not None
        report.not_started = [parse_journey_partition_key(k) for k in keys]
        for run_keys in journeys_runs(job.partitions_def, keys):
            partitions = [parse_journey_partition_key(k) for k in run_keys]
            days = sorted({day for day, _ in partitions})
            label = date_label(days)
            what = f"{label} " + (
                partitions[0][1] if len({b for _, b in partitions}) == 1 else f"({len(run_keys)} partitions)"
            )
            run = self._run(job.name, f"{what} journeys", tags=partition_range_tags(run_keys))
            results = [
                branch_result(day, branch, key, run) for key, (day, branch) in zip(run_keys, partitions, strict=True)
            ]
            report.branches.extend(results)
            report.not_started = [p for p in report.not_started if p not in partitions]
            if not run.result.success:
                text = record_failure(report, run, f"{what} journeys")
                self.progress(f"{tenant.key} {what}: FAILED {text}  [run {run.run_id}]")
            ok = [b for b in results if b.success]
            self.progress(
                f"{tenant.key} {label}: journeys of {len(ok)}/{len(results)} partitions, {sum(b.rows for b in ok)} "
                f"rows, checks {sum(b.checks_passed for b in ok)} ok / {sum(b.checks_warned for b in ok)} warn / "
                f"{sum(b.checks_failed for b in ok)} fail"
            )

    def stopped(self, stopped: Stopped) -> None:
        """The sync was interrupted: the run given up on, the dates never pulled, the partitions never rebuilt."""
        report = self.report
        add_calls(report, stopped.api_calls)
        if stopped.run_id:
            report.failed_runs[stopped.run_id] = self.in_flight
        for day in self.unpulled:
            report.raw_failures.setdefault(day, "not pulled: interrupted")
        rebuilt = {(b.service_date, b.location_id) for b in report.branches}
        if not report.not_started and not rebuilt:  # stopped before the journeys runs began
            report.not_started = [(day, branch) for day in self.pulled for branch in self.branches]


def run_sync(
    defs: dg.Definitions,
    tenant: Tenant,
    instance: dg.DagsterInstance,
    dates: Sequence[dt.date] | None = None,
    location_ids: Sequence[str] | None = None,
    progress: Progress = lambda _: None,
    run_config: dict | None = None,
    with_branches: bool = False,
    with_leads: bool | None = None,
    interruption: Interruption | None = None,
    console_level: str | None = None,
    now: dt.datetime | None = None,
    run_tags: Mapping[str, str] | None = None,
) -> SyncReport:
    """Tick the cycle at ``now`` (default: the current time), or rematerialize ``dates``; see the module.

    ``location_ids``: only these branches' journeys (the raw pull is per date, for every branch).
    ``with_branches``: also pull SmartMoving's branches (dispatch addresses), as the daily schedule does.
    ``with_leads``: the leads ride in the first raw run (default: when ticking the cycle, as its runs do).
    ``run_config``: merged into the raw runs' (``--catch-up``, ``--refresh-details``).
    ``interruption``: once requested, no run starts and the one in flight is canceled (see ``Interruption``).
    ``console_level``: Dagster's console logger level for these runs (None: Dagster's default, DEBUG).
    ``run_tags``: put on every run (``lgm sync`` tags them with its process: ``cli/dead_syncs.py``).
    """
    started = time.monotonic()
    unknown = sorted(set(location_ids or ()) - set(tenant.location_ids))
    if unknown:
        raise ValueError(f"unknown branch(es) {unknown}; configured: {tenant.location_ids}")
    now = now or dt.datetime.now(dt.UTC)
    automation = None if dates else _Automation(defs, tenant, instance, now)
    if dates:
        requests = [dg.RunRequest(tags=range_tags(block)) for block in consecutive_blocks(dates)]
    else:
        requests = scheduled_raw_requests(defs, tenant, instance, now)
    report = SyncReport(tenant, sorted({d for r in requests for d in range_dates(r.tags)}))
    tick = _Tick(defs, tenant, instance, report, progress, interruption, run_config, console_level, run_tags)
    tick.branches = list(location_ids or tenant.location_ids)
    try:
        pulled = tick.pull(
            requests, with_leads=not dates if with_leads is None else with_leads, with_branches=with_branches
        )
        if automation is not None:
            wanted = automation.requested | automation.evaluate()
            report.journeys_failure = automation.error
            progress(f"{tenant.key}: the journeys automation requests {len(wanted)} partition(s)")
        else:
            wanted = {str(journey_partition_key(d.isoformat(), b)) for d in pulled for b in tenant.location_ids}
        tick.rebuild(sorted(k for k in wanted if parse_journey_partition_key(k)[1] in tick.branches))
    except Stopped as stopped:
        tick.stopped(stopped)
    finally:
        if interruption is not None and interruption.requested:
            report.interrupted = interruption.reason or "interrupt"
        count_quarantine(report)
        report.duration_s = time.monotonic() - started
    return report
