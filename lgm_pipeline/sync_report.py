"""What ``lgm sync`` says: the report of one tick, read from the runs it executed.

Each run's result carries what the steps recorded: the pull's counts as materialization metadata, each
journeys partition's figures (``by_partition``), the records-read and branch-mapping checks, and for a
failed step the ``dg.Failure`` whose description and metadata (``STOP_CYCLE``, ``CONFIGURATION_ERROR``)
the assets set for the operator. ``sync.py`` decides what runs; this module only reads and renders.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import sqlalchemy as sa

from lgm_pipeline.assets.raw import BRANCH_MAPPING_CHECK, RECORDS_READ_CHECK
from lgm_pipeline.naming import BY_PARTITION_METADATA, CONFIGURATION_ERROR, STOP_CYCLE
from lgm_pipeline.tenants import Tenant

#: Where a run's events are in the Dagster UI (``lgm up`` serves it; any webserver on the instance does).
UI_RUN_PATH = "/runs/{run_id}"


def date_label(dates: Sequence[dt.date]) -> str:
    """``2026-11-27``, or ``2026-11-27..2026-11-28`` for consecutive dates."""
    first, last = min(dates), max(dates)
    return first.isoformat() if first == last else f"{first}..{last}"


@dataclass
class BranchResult:
    service_date: dt.date
    location_id: str
    success: bool
    rows: int = 0
    #: Jobs of this branch held in quarantine by this sync (jobs of unmapped branches: SyncReport.unmapped_quarantined).
    quarantined: int = 0
    flagged: int = 0
    checks_passed: int = 0
    checks_warned: int = 0
    checks_failed: int = 0
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None
    run_id: str | None = None


@dataclass
class RawPull:
    """One raw run: a block of consecutive dates pulled with one list query."""

    dates: list[dt.date]
    run_id: str
    success: bool
    customers: int = 0
    opportunities_listed: int = 0
    details_fetched: int = 0
    details_reused: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None
    #: The date-level branch_mapping check: ISO date -> SmartMoving branch not in the tenants file -> jobs.
    unmapped_branches: dict[str, dict[str, int]] = field(default_factory=dict)
    unmapped_severity: str | None = None  # WARN or ERROR when the check failed
    # asset -> {served, stored, quarantined, unaccounted} from its records_read check; reasons: the first few
    records: dict[str, dict[str, int]] = field(default_factory=dict)
    unreadable_reasons: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return date_label(self.dates)


@dataclass
class SyncReport:
    tenant: Tenant
    dates: list[dt.date]
    branches: list[BranchResult] = field(default_factory=list)
    raw_failures: dict[dt.date, str] = field(default_factory=dict)
    pulls: list[RawPull] = field(default_factory=list)
    leads: int = 0
    leads_quarantined: int = 0
    leads_failure: str | None = None
    #: Attempts by endpoint, failed ones included (every client of the process counts them).
    api_calls: dict[str, int] = field(default_factory=dict)
    #: Jobs of SmartMoving branches missing from the tenants file, by date: each counted once, though every
    #: branch partition of the date holds them.
    unmapped_quarantined: dict[dt.date, int] = field(default_factory=dict)
    duration_s: float = 0.0
    #: Failed runs: run id -> what it was ("2026-11-27 loc_x journeys").
    failed_runs: dict[str, str] = field(default_factory=dict)
    #: Wrong settings (base URL, key): the message, and ``lgm sync`` exits 2.
    configuration_error: str | None = None
    #: The signal that stopped the sync ("SIGINT"), if one did.
    interrupted: str | None = None
    #: (date, branch) partitions never started because the sync was interrupted.
    not_started: list[tuple[dt.date, str]] = field(default_factory=list)
    branches_failure: str | None = None
    #: The automation could not be asked what to rebuild (the raw pulls stand; the daemon's next tick rebuilds).
    journeys_failure: str | None = None
    #: Why the cycle stopped early (wrong settings, exhausted quota): later runs would fail the same way.
    cycle_stopped: str | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.raw_failures
            and not self.leads_failure
            and not self.branches_failure
            and not self.journeys_failure
            and not self.interrupted
            and all(b.success for b in self.branches)
        )

    @property
    def partial(self) -> bool:
        """Only a side pull failed (the leads, SmartMoving's branches): every date was pulled and every journeys
        partition written, so the dispatchers' board is current; ``lgm sync`` exits 3, not 1."""
        return (
            not self.ok
            and not self.configuration_error
            and not self.interrupted
            and not self.raw_failures
            and all(b.success for b in self.branches)
            and not self.journeys_failure
            and bool(self.leads_failure or self.branches_failure)
        )

    @property
    def outcome(self) -> str:
        """ok, partial, failed, configuration_error or interrupted: what the exit code says, per tenant."""
        if self.interrupted:
            return "interrupted"
        if self.configuration_error:
            return "configuration_error"
        if self.ok:
            return "ok"
        return "partial" if self.partial else "failed"

    @property
    def side_failures(self) -> dict[str, str]:
        """The side pulls that failed, by name (``leads``, ``branches``), with their reasons."""
        failed = {"leads": self.leads_failure, "branches": self.branches_failure}
        return {name: why for name, why in failed.items() if why}

    @property
    def total_api_calls(self) -> int:
        return sum(self.api_calls.values())

    @property
    def quarantined_jobs(self) -> int:
        """Distinct jobs held in quarantine by this sync."""
        return sum(b.quarantined for b in self.branches) + sum(self.unmapped_quarantined.values())


Progress = Callable[[str], None]
#: Which steps of a run a question is about (by step key).
Steps = Callable[[str], bool]


@dataclass
class RunOutcome:
    """A run this process executed: its result, and the API calls it made (counted by the client)."""

    result: dg.ExecuteInProcessResult
    run_id: str
    api_calls: Counter[str]
    duration_s: float


# "dagster._core.definitions.events.Failure: text" -> "text": the class path says nothing to an operator.
_CLASS_PREFIX = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Failure|Interrupt)?: ")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def failure(result: dg.ExecuteInProcessResult, steps: Steps | None = None) -> tuple[str, bool, bool]:
    """(what went wrong, in words an operator can act on; stops the cycle; is a configuration error).

    ``steps``: only the failures of the steps it accepts (the raw pull's, or the leads' of the same run).
    """
    for event in result.all_events:
        if not (event.is_step_failure and event.step_failure_data):
            continue
        if steps is not None and not steps(event.step_key or ""):
            continue
        data = event.step_failure_data
        user = data.user_failure_data
        stop = bool(user and user.metadata.get(STOP_CYCLE))
        configuration = bool(user and user.metadata.get(CONFIGURATION_ERROR))
        error = data.error
        # Dagster wraps some failures in its own errors ("Exceeded max_retries of N" once a RetryPolicy
        # gives up, "Error occurred while handling output ..." from the IO manager); the reason a user can
        # act on is the first cause that is not Dagster's.
        wrappers = []
        while (
            error is not None and error.cause is not None and error.cls_name.startswith(("Dagster", "RetryRequested"))
        ):
            wrappers.append(_first_line(error.message))
            error = error.cause
        if error is not None and error.cls_name == "DagsterExecutionInterruptedError":
            return "interrupted by the operator", stop, configuration
        if user and user.description:
            text = _first_line(user.description)
        elif error is not None:
            text = _first_line(error.message)
            if text.startswith(f"{error.cls_name}: ") or _CLASS_PREFIX.match(text):
                text = text.split(": ", 1)[1]
        else:
            text = "step failed"
        retries = [w for w in wrappers if w.startswith("Exceeded max_retries")]
        return (f"{text} ({retries[0].lower()})" if retries else text), stop, configuration
    if result.dagster_run.status == dg.DagsterRunStatus.CANCELED:
        return "interrupted by the operator", False, False
    return "run failed", False, False


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return failure(result)[0]


def record_failure(report: SyncReport, run: RunOutcome, what: str, steps: Steps | None = None) -> str:
    text, _, configuration = failure(run.result, steps)
    report.failed_runs.setdefault(run.run_id, what)
    if configuration and report.configuration_error is None:
        report.configuration_error = text
    return text


def add_calls(report: SyncReport, calls: Mapping[str, int]) -> None:
    for endpoint, count in calls.items():
        report.api_calls[endpoint] = report.api_calls.get(endpoint, 0) + int(count)


def metadata_value(metadata: Mapping[str, Any], name: str) -> Any:
    entry = metadata.get(name)
    return None if entry is None else getattr(entry, "value", entry)


def leads_steps(tenant: Tenant) -> Steps:
    """The steps of the raw run that pull and merge the leads: their failure is the leads', not the pull's."""
    names = {tenant.names.op("smartmoving_leads"), tenant.names.op("leads")}
    return names.__contains__


def succeeded_apart_from(result: dg.ExecuteInProcessResult, steps: Steps) -> bool:
    """Whether the run did all it was asked, except perhaps the ``steps`` (whose failure is reported apart)."""
    if result.success:
        return True
    if result.dagster_run.status == dg.DagsterRunStatus.CANCELED:
        return False
    failed = {event.step_key or "" for event in result.all_events if event.is_step_failure}
    return bool(failed) and all(steps(key) for key in failed)


def raw_pull(block: list[dt.date], run: RunOutcome, ok: bool) -> RawPull:
    pull = RawPull(block, run.run_id, ok, api_calls=dict(run.api_calls), duration_s=run.duration_s)
    seen: set[str] = set()
    for event in run.result.get_asset_materialization_events():
        # A range run records one materialization per date, each with the run's (shared) numbers.
        name = event.asset_key.path[-1] if event.asset_key else ""
        if name in seen:
            continue
        seen.add(name)
        metadata = event.materialization.metadata
        if name == "smartmoving_customers":
            pull.customers = int(metadata_value(metadata, "rows") or 0)
            pull.opportunities_listed = int(metadata_value(metadata, "opportunities_listed") or 0)
        elif name == "smartmoving_opportunities":
            pull.details_fetched = int(metadata_value(metadata, "details_fetched") or 0)
            pull.details_reused = int(metadata_value(metadata, "details_reused") or 0)
    for evaluation in run.result.get_asset_check_evaluations():
        if evaluation.check_name == RECORDS_READ_CHECK:
            counts = ("served", "stored", "quarantined", "unaccounted")
            pull.records[evaluation.asset_key.path[-1]] = {
                k: int(metadata_value(evaluation.metadata, k) or 0) for k in counts
            }
            pull.unreadable_reasons.extend(metadata_value(evaluation.metadata, "reasons") or [])
        if evaluation.check_name == BRANCH_MAPPING_CHECK and not evaluation.passed:
            pull.unmapped_branches = dict(metadata_value(evaluation.metadata, "by_date") or {})
            pull.unmapped_severity = evaluation.severity.value
    return pull


def pull_line(tenant: Tenant, pull: RawPull) -> str:
    calls = sum(pull.api_calls.values())
    pages = pull.api_calls.get("customers", 0)
    return (
        f"{tenant.key} {pull.label}: {pull.customers} customer rows ({pages} list call{'s' if pages != 1 else ''}), "
        f"{pull.opportunities_listed} opportunities: {pull.details_fetched} details fetched, "
        f"{pull.details_reused} reused; {calls} API calls, {pull.duration_s:.1f} s"
    )


def records_line(tenant: Tenant, pull: RawPull) -> str:
    """Served = stored + set aside + quarantined, summed over the pull's assets; ERROR when it is not."""
    total = {k: sum(r[k] for r in pull.records.values()) for k in ("served", "stored", "quarantined", "unaccounted")}
    line = (
        f"{tenant.key} {pull.label}: records served {total['served']}, stored {total['stored']}, "
        f"quarantined {total['quarantined']} (unreadable_records)"
    )
    if total["unaccounted"]:
        lost = ", ".join(f"{name} {r['unaccounted']:+d}" for name, r in pull.records.items() if r["unaccounted"])
        line += f"; ERROR records_read: unaccounted for: {lost}"
    if pull.unreadable_reasons:
        line += "; first: " + "; ".join(pull.unreadable_reasons[:2])
    return line


def unmapped_line(tenant: Tenant, pull: RawPull) -> str:
    named = sorted({name for names in pull.unmapped_branches.values() for name in names})
    jobs = sum(n for names in pull.unmapped_branches.values() for n in names.values())
    return (
        f"{tenant.key} {pull.label}: {pull.unmapped_severity} branch_mapping: {jobs} booked job(s) of SmartMoving "
        f"branch(es) not in the tenants file, quarantined: {', '.join(named)}"
    )


def branch_result(day: dt.date, location_id: str, key: str, run: RunOutcome) -> BranchResult:
    """One (date, branch) partition's result from the run that rebuilt it, alone or with others."""
    result = run.result
    branch = BranchResult(day, location_id, success=result.success, run_id=run.run_id)
    if not result.success:
        branch.error = failure_text(result)
        return branch
    for event in result.get_asset_materialization_events():
        # Every partition of the run carries the run's output metadata: each one's own figures are in it.
        summary = (metadata_value(event.materialization.metadata, BY_PARTITION_METADATA) or {}).get(key)
        if summary is None:
            continue
        branch.rows = int(summary["journeys"])
        # What the partition held back; count_quarantine replaces it with the rows it wrote.
        branch.quarantined = int(summary["quarantined"])
        branch.flagged = int(summary["flagged"])
        branch.checks_passed = int(summary["checks_passed"])
        branch.checks_warned = int(summary["checks_warned"])
        branch.checks_failed = int(summary["checks_failed"])
        branch.failed_checks = list(summary["failed_checks"])
        break
    return branch


def count_quarantine(report: SyncReport) -> None:
    """Quarantined jobs, each once: a job of a branch missing from the tenants file is quarantined by every
    branch partition of its date (each must account for it), but it is one row of journeys_quarantine."""
    from lgm_pipeline.storage.resources import PostgresResource
    from lgm_pipeline.storage.tables import journeys_quarantine, tenant_options

    run_ids = [b.run_id for b in report.branches if b.success and b.run_id]
    if not run_ids:
        return
    q = journeys_quarantine
    query = (
        sa.select(q.c.service_date, q.c.location_id, sa.func.count())
        .where(q.c.run_id.in_(run_ids))
        .group_by(q.c.service_date, q.c.location_id)
    )
    try:
        with PostgresResource().ensure_tenant(report.tenant).connect() as conn:
            rows = conn.execution_options(**tenant_options(report.tenant)).execute(query).all()
    except sa.exc.SQLAlchemyError:
        return  # the partitions' own counts stay
    counts = {(day, location): int(n) for day, location, n in rows}
    for branch in report.branches:
        if branch.success:
            branch.quarantined = counts.get((branch.service_date, branch.location_id), 0)
    report.unmapped_quarantined = {
        day: n for (day, location), n in sorted(counts.items(), key=lambda item: item[0][0]) if location is None and n
    }


def leads_outcome(tenant: Tenant, report: SyncReport, run: RunOutcome, steps: Steps, progress: Progress) -> None:
    """The leads' part of a raw run: their counts, or their failure (the pull itself may have succeeded)."""
    if any(event.is_step_failure and steps(event.step_key or "") for event in run.result.all_events):
        report.leads_failure = record_failure(report, run, "leads", steps)
        progress(f"{tenant.key} leads: FAILED {report.leads_failure}  [run {run.run_id}]")
        return
    dates: list[str] = []
    for event in run.result.get_asset_materialization_events():
        if event.asset_key == tenant.names.asset_key("smartmoving_leads"):
            dates = list(metadata_value(event.materialization.metadata, "dates") or [])
        if event.asset_key == tenant.names.asset_key("leads"):
            metadata = event.materialization.metadata
            report.leads = int(metadata["leads"].value)  # type: ignore[arg-type]
            report.leads_quarantined = int(metadata["quarantined"].value)  # type: ignore[arg-type]
    if dates:
        progress(f"{tenant.key} leads {dates[0]}..{dates[-1]}: {report.leads}, {report.leads_quarantined} quarantined")


def _finished_dates(report: SyncReport) -> list[str]:
    by_day: dict[dt.date, list[BranchResult]] = {}
    for branch in report.branches:
        by_day.setdefault(branch.service_date, []).append(branch)
    parts = []
    for day, results in sorted(by_day.items()):
        done = [b.location_id for b in results if b.success]
        total = len(results) + sum(1 for d, _ in report.not_started if d == day)
        parts.append(
            f"{day} ({len(done)} of {total} branches" + (f": {', '.join(done)})" if done and len(done) < total else ")")
        )
    return parts


def format_report(report: SyncReport, ui_url: str | None = None) -> str:
    """The summary table: one row per (date, branch), then totals, failures with their runs, an interruption."""
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
    unmapped_names = {d: names for p in report.pulls for d, names in p.unmapped_branches.items()}
    for day, count in report.unmapped_quarantined.items():
        named = ", ".join(sorted(unmapped_names.get(day.isoformat(), {})))
        lines.append(
            f"{day.isoformat():<12}{'(branch not in tenants file)':<32}{'':>6}{count:>7}"
            + (f"  branch_mapping: {named}" if named else "")
        )
    # Consecutive dates failing alike (a wrong setting fails them all) share one line.
    grouped: list[tuple[list[dt.date], str]] = []
    for day, error in sorted(report.raw_failures.items()):
        if grouped and grouped[-1][1] == error.removeprefix("not pulled, cycle stopped: "):
            grouped[-1][0].append(day)
        else:
            grouped.append(([day], error))
    for days, error in grouped:
        label = days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"
        lines.append(f"{label + ' ':<12}{'(all branches)':<32}  FAILED: {error}")
    if report.leads or report.leads_quarantined or report.leads_failure:
        state = f"FAILED: {report.leads_failure}" if report.leads_failure else "ok"
        lines.append(f"leads (yesterday and today): {report.leads}, quarantined {report.leads_quarantined}  {state}")
    if report.branches_failure and not report.cycle_stopped:  # a stopped cycle says it on the dates' lines
        lines.append(f"branches (SmartMoving's, dispatch addresses): FAILED: {report.branches_failure}")
    if report.journeys_failure:
        lines.append(f"journeys not rebuilt (the daemon's next tick does): FAILED: {report.journeys_failure}")
    calls = ", ".join(f"{k}={v}" for k, v in sorted(report.api_calls.items())) or "none"
    lines.append(
        f"journeys {sum(b.rows for b in report.branches)}, quarantined jobs {report.quarantined_jobs}, "
        f"API calls {report.total_api_calls} ({calls}), {report.duration_s:.1f} s"
    )
    if report.interrupted:
        finished = ", ".join(_finished_dates(report)) or "nothing"
        lines.append(f"INTERRUPTED ({report.interrupted}): journeys finished for {finished}")
        if report.not_started:
            lines.append(f"  not started: {len(report.not_started)} (date, branch) partition(s); run `lgm sync` again")
    if report.failed_runs:
        where = f"{ui_url.rstrip('/')}{UI_RUN_PATH}" if ui_url else "Dagster UI (lgm up): Runs -> {run_id}"
        lines.append("Failed runs (events, errors and logs in the " + ("UI" if ui_url else "Dagster UI") + "):")
        for run_id, what in report.failed_runs.items():
            lines.append(f"  {what}: {where.format(run_id=run_id)}")
    return "\n".join(lines)


def report_dict(report: SyncReport) -> dict[str, Any]:
    """The report as plain JSON types (``lgm sync --json``)."""
    return {
        "tenant": report.tenant.key,
        "dates": [d.isoformat() for d in report.dates],
        "ok": report.ok,
        # partial: only the leads or branches failed, every journeys partition was written (lgm sync exits 3).
        "outcome": report.outcome,
        "branches": [
            {
                "date": b.service_date.isoformat(),
                "branch": b.location_id,
                "ok": b.success,
                "rows": b.rows,
                "quarantined": b.quarantined,
                "flagged": b.flagged,
                "checks": {"passed": b.checks_passed, "warned": b.checks_warned, "failed": b.checks_failed},
                "failed_checks": b.failed_checks,
                "error": b.error,
                "run_id": b.run_id,
            }
            for b in report.branches
        ],
        "pulls": [
            {
                "dates": [d.isoformat() for d in p.dates],
                "ok": p.success,
                "customers": p.customers,
                "opportunities_listed": p.opportunities_listed,
                "details_fetched": p.details_fetched,
                "details_reused": p.details_reused,
                "records": p.records,
                "api_calls": sum(p.api_calls.values()),
                "duration_s": round(p.duration_s, 2),
                "error": p.error,
                "run_id": p.run_id,
            }
            for p in report.pulls
        ],
        "raw_failures": {d.isoformat(): e for d, e in report.raw_failures.items()},
        "unmapped_branch_quarantined": {d.isoformat(): n for d, n in report.unmapped_quarantined.items()},
        "journeys": sum(b.rows for b in report.branches),
        "quarantined_jobs": report.quarantined_jobs,
        "leads": {"rows": report.leads, "quarantined": report.leads_quarantined, "error": report.leads_failure},
        "smartmoving_branches_error": report.branches_failure,
        "journeys_error": report.journeys_failure,
        "api_calls": report.total_api_calls,
        "api_calls_by_endpoint": dict(sorted(report.api_calls.items())),
        "failed_runs": [{"run_id": r, "what": w} for r, w in report.failed_runs.items()],
        "configuration_error": report.configuration_error,
        "interrupted": report.interrupted,
        "not_started": [{"date": d.isoformat(), "branch": b} for d, b in report.not_started],
        "duration_s": round(report.duration_s, 2),
    }
