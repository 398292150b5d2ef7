"""A full sync in one process: what the schedule and the journeys automation do, run headless.

Used by ``lgm sync`` and ``lgm up``. Runs go through the Dagster instance like any other run, so
they show in the UI: one raw run per block of consecutive dates, then one ``journeys`` run per
(date, branch), exactly the runs the schedule and the automation sensor produce for those dates.

Why sync launches the journeys runs itself rather than asking the automation conditions: it must
work without a daemon (``lgm up`` syncs before the daemon starts; ``lgm sync`` from cron) and for
what the condition leaves out (dates older than the catch-up, ``--branch``). An evaluation of its
own would also need the daemon's cursor (a first evaluation requests nothing) and would move it.
Nothing is rebuilt twice: a journeys partition materialized after the raw pull of its date is
"handled" for the condition (``since_last_handled`` compares the two timestamps), so the daemon's
next evaluation requests nothing for it. With ``--branch``, the daemon rebuilds the other branches
of the pulled dates. The one overlap left: a daemon tick landing between the raw run and the end of
the journeys runs of a sync started while the daemon runs may rebuild a partition twice (no API
call, same rows).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from lgm_pipeline.assets.automation import (
    branches_job_name,
    journeys_job_name,
    lead_dates,
    leads_job_name,
    range_tags,
    raw_job_name,
)
from lgm_pipeline.assets.raw import STOP_CYCLE
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.tenants import Tenant


@dataclass
class BranchResult:
    service_date: dt.date
    location_id: str
    success: bool
    rows: int = 0
    quarantined: int = 0
    flagged: int = 0
    checks_passed: int = 0
    checks_warned: int = 0
    checks_failed: int = 0
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class SyncReport:
    tenant: Tenant
    dates: list[dt.date]
    branches: list[BranchResult] = field(default_factory=list)
    raw_failures: dict[dt.date, str] = field(default_factory=dict)
    leads: int = 0
    leads_quarantined: int = 0
    leads_failure: str | None = None
    api_calls: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.raw_failures and not self.leads_failure and all(b.success for b in self.branches)

    @property
    def total_api_calls(self) -> int:
        return sum(self.api_calls.values())


Progress = Callable[[str], None]


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            # Dagster wraps some failures in its own errors ("Exceeded max_retries of N" once a
            # RetryPolicy gives up, "Error occurred while handling output ..." from the IO manager);
            # the reason a user can act on is the first cause that is not Dagster's.
            wrappers = []
            while error.cause is not None and error.cls_name.startswith(("Dagster", "RetryRequested")):
                wrappers.append(error.message.strip().splitlines()[0])
                error = error.cause
            text = error.message.strip().splitlines()[0]
            retries = [w for w in wrappers if w.startswith("Exceeded max_retries")]
            return f"{text} ({retries[0]})" if retries else text
    return "run failed"


def _stops_cycle(result: dg.ExecuteInProcessResult) -> bool:
    for event in result.all_events:
        failure = event.step_failure_data if event.is_step_failure else None
        if failure and failure.user_failure_data and failure.user_failure_data.metadata.get(STOP_CYCLE):
            return True
    return False


def _add_api_calls(report: SyncReport, result: dg.ExecuteInProcessResult) -> None:
    counted: set[dg.AssetKey] = set()
    for event in result.get_asset_materialization_events():
        # A range run records one materialization per date, each with the run's (shared) calls.
        if event.asset_key in counted:
            continue
        counted.add(event.asset_key)  # type: ignore[arg-type]
        calls = event.materialization.metadata.get("api_calls_by_endpoint")
        for endpoint, count in (calls.value if calls else {}).items():  # type: ignore[union-attr]
            report.api_calls[endpoint] = report.api_calls.get(endpoint, 0) + int(count)


def _branch_result(day: dt.date, location_id: str, result: dg.ExecuteInProcessResult) -> BranchResult:
    branch = BranchResult(day, location_id, success=result.success)
    if not result.success:
        branch.error = _failure_text(result)
        return branch
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        branch.rows = int(metadata["journeys"].value)  # type: ignore[arg-type]
        branch.quarantined = int(metadata["quarantined"].value)  # type: ignore[arg-type]
        branch.flagged = int(metadata["flagged"].value)  # type: ignore[arg-type]
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            branch.checks_passed += 1
            continue
        branch.failed_checks.append(evaluation.check_name)
        if evaluation.severity == dg.AssetCheckSeverity.WARN:
            branch.checks_warned += 1
        else:
            branch.checks_failed += 1
    return branch


def consecutive_blocks(dates: Sequence[dt.date]) -> list[list[dt.date]]:
    """Sorted, de-duplicated dates in runs of consecutive days (each is one raw run)."""
    blocks: list[list[dt.date]] = []
    for day in sorted(set(dates)):
        if blocks and day - blocks[-1][-1] == dt.timedelta(days=1):
            blocks[-1].append(day)
        else:
            blocks.append([day])
    return blocks


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
) -> SyncReport:
    """Pull the dates (one run per block of consecutive dates), then rebuild journeys for each (date, branch).

    ``with_branches``: also pull SmartMoving's branches (dispatch addresses), as the daily schedule does.
    ``with_leads``: also pull yesterday's and today's leads (default: when syncing the cycle's own window).
    """
    with_leads = dates is None if with_leads is None else with_leads
    started = time.monotonic()
    dates = sorted(set(dates or tenant.sync_window()))
    unknown = sorted(set(location_ids or ()) - set(tenant.location_ids))
    if unknown:
        raise ValueError(f"unknown branch(es) {unknown}; configured: {tenant.location_ids}")
    branches = list(location_ids or tenant.location_ids)
    report = SyncReport(tenant, dates)
    raw_job = defs.resolve_job_def(raw_job_name(tenant))
    journeys_job = defs.resolve_job_def(journeys_job_name(tenant))
    if with_branches:
        result = defs.resolve_job_def(branches_job_name(tenant)).execute_in_process(
            instance=instance, raise_on_error=False
        )
        _add_api_calls(report, result)
        if not result.success:
            progress(f"{tenant.key}: branches not pulled: {_failure_text(result)}")
    pulled: list[dt.date] = []
    for block in consecutive_blocks(dates):
        label = block[0].isoformat() if len(block) == 1 else f"{block[0]}..{block[-1]}"
        progress(f"{tenant.key} {label}: pulling customers and opportunity details from SmartMoving")
        raw = raw_job.execute_in_process(
            instance=instance, raise_on_error=False, tags=range_tags(block), run_config=run_config
        )
        _add_api_calls(report, raw)
        if not raw.success:
            for day in block:
                report.raw_failures[day] = _failure_text(raw)
            progress(f"{tenant.key} {label}: FAILED {_failure_text(raw)}")
            if _stops_cycle(raw):
                # A rejected key or an exhausted quota: the other dates would only spend calls failing.
                for later in dates[dates.index(block[-1]) + 1 :]:
                    report.raw_failures[later] = f"not pulled, cycle stopped: {_failure_text(raw)}"
                break
            continue
        pulled.extend(block)
        progress(f"{tenant.key} {label}: {report.total_api_calls} API calls so far")
    for day in pulled:
        for location_id in branches:
            result = journeys_job.execute_in_process(
                partition_key=journey_partition_key(day.isoformat(), location_id),
                instance=instance,
                raise_on_error=False,
            )
            branch = _branch_result(day, location_id, result)
            report.branches.append(branch)
            state = "ok" if branch.success else f"FAILED {branch.error}"
            progress(
                f"{tenant.key} {day} {location_id}: {branch.rows} journeys, {branch.quarantined} quarantined, {state}"
            )
    if with_leads:
        _sync_leads(defs, tenant, instance, report, progress)
    report.duration_s = time.monotonic() - started
    return report


def _sync_leads(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, report: SyncReport, progress: Progress
) -> None:
    dates = lead_dates(tenant)
    if not dates:
        return
    result = defs.resolve_job_def(leads_job_name(tenant)).execute_in_process(
        instance=instance, raise_on_error=False, tags=range_tags(dates)
    )
    _add_api_calls(report, result)
    if not result.success:
        report.leads_failure = _failure_text(result)
        progress(f"{tenant.key} leads: FAILED {report.leads_failure}")
        return
    for event in result.get_asset_materialization_events():
        if event.asset_key == tenant.names.asset_key("leads"):
            metadata = event.materialization.metadata
            report.leads = int(metadata["leads"].value)  # type: ignore[arg-type]
            report.leads_quarantined = int(metadata["quarantined"].value)  # type: ignore[arg-type]
            break
    progress(f"{tenant.key} leads: {report.leads} of {dates[0]}..{dates[-1]}, {report.leads_quarantined} quarantined")


def format_report(report: SyncReport) -> str:
    lines = [
        f"{report.tenant.name} ({report.tenant.key}): {', '.join(d.isoformat() for d in report.dates)}",
        f"{'date':<12}{'branch':<32}{'rows':>6}{'quar.':>7}{'flag.':>7}{'checks ok/warn/fail':>21}  status",
    ]
    for b in report.branches:
        checks = f"{b.checks_passed}/{b.checks_warned}/{b.checks_failed}"
        status = "ok" if b.success else f"FAILED: {b.error}"
        lines.append(
            f"{b.service_date.isoformat():<12}{b.location_id:<32}{b.rows:>6}{b.quarantined:>7}{b.flagged:>7}"
            f"{checks:>21}  {status}"
        )
    for day, error in report.raw_failures.items():
        lines.append(f"{day.isoformat():<12}{'(all branches)':<32}{'':>41}  FAILED: {error}")
    if report.leads or report.leads_quarantined or report.leads_failure:
        state = f"FAILED: {report.leads_failure}" if report.leads_failure else "ok"
        lines.append(f"leads (yesterday and today): {report.leads}, quarantined {report.leads_quarantined}  {state}")
    calls = ", ".join(f"{k}={v}" for k, v in sorted(report.api_calls.items())) or "none"
    lines.append(
        f"rows {sum(b.rows for b in report.branches)}, quarantined {sum(b.quarantined for b in report.branches)}, "
        f"API calls {report.total_api_calls} ({calls}), {report.duration_s:.1f} s"
    )
    return "\n".join(lines)
