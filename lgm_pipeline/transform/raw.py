"""Shaping SmartMoving payloads into the raw tables' rows (one DataFrame per raw asset).

Each raw row keeps the API payload untouched, its fetch time and the run id, so every downstream
partition can be rebuilt from the database without calling the API again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from lgm_pipeline.domain.mappings import FALLEN_THROUGH_STAGES, STATUS_MAPPING
from lgm_pipeline.smartmoving.enums import JobType, OpportunityStatus
from lgm_pipeline.smartmoving.shapes import UnreadableValue, read_date, read_enum, read_id, read_timestamp
from lgm_pipeline.storage.tables import (
    raw_branches,
    raw_customers,
    raw_job_departures,
    raw_job_timelines,
    raw_jobs,
    raw_opportunities,
    unreadable_records,
)

if TYPE_CHECKING:  # the database resource's type only: transform stays free of Dagster at run time
    from lgm_pipeline.storage.resources import JourneyJob

# The frames' columns are the tables' columns: one definition, in storage.tables.
CUSTOMER_COLUMNS = [c.name for c in raw_customers.columns]
OPPORTUNITY_COLUMNS = [c.name for c in raw_opportunities.columns]
JOB_COLUMNS = [c.name for c in raw_jobs.columns]
BRANCH_COLUMNS = [c.name for c in raw_branches.columns]
TIMELINE_COLUMNS = [c.name for c in raw_job_timelines.columns]
DEPARTURE_COLUMNS = [c.name for c in raw_job_departures.columns]
UNREADABLE_COLUMNS = [c.name for c in unreadable_records.columns]


@dataclass(frozen=True)
class UnreadableRecord:
    """A served record the pipeline cannot read: kept raw in ``unreadable_records`` with its reason."""

    kind: str  # customer, opportunity, job, lead, branch
    key: str  # its id, or "#<position>" in what was served when it has none
    reason: str  # names the field and the value: "jobDate: unreadable 'next week' (...)"
    payload: Any
    service_date: dt.date  # the pulled date it is filed under


@dataclass
class PullAccount:
    """What one pull of one kind of record served, and where each record went.

    ``served`` is counted from the response; ``stored`` from the rows written; ``set_aside`` names
    records served but deliberately not rows of this table (a duplicate across pages, a job dated
    outside the pulled dates). A pull that does not balance lost a record somewhere.
    """

    kind: str
    served: int = 0
    stored: int = 0
    unreadable: list[UnreadableRecord] = field(default_factory=list)
    set_aside: dict[str, int] = field(default_factory=dict)

    @property
    def unaccounted(self) -> int:
        """Served but neither stored, set aside nor quarantined: lost somewhere (0 when the pull balances)."""
        return self.served - self.stored - len(self.unreadable) - sum(self.set_aside.values())

    @property
    def balanced(self) -> bool:
        return self.unaccounted == 0

    def reasons(self, limit: int = 5) -> list[str]:
        return [f"{r.kind} {r.key}: {r.reason}" for r in self.unreadable[:limit]]

    def summary(self) -> str:
        aside = "".join(f", {n} {why}" for why, n in sorted(self.set_aside.items()) if n)
        return f"{self.kind}: served {self.served}, stored {self.stored}, quarantined {len(self.unreadable)}{aside}"


def unreadable_frame(records: Iterable[UnreadableRecord], fetched_at: dt.datetime, run_id: str) -> pd.DataFrame:
    rows = {
        (r.kind, r.service_date, r.key): {
            "record_kind": r.kind,
            "service_date": r.service_date,
            "record_key": r.key,
            "reason": r.reason,
            "payload": r.payload if isinstance(r.payload, dict | list) else {"value": r.payload},
            "fetched_at": fetched_at,
            "run_id": run_id,
        }
        for r in records
    }
    return pd.DataFrame(list(rows.values()), columns=UNREADABLE_COLUMNS)


#: Enum codes land in PostgreSQL ``integer`` columns: a larger value would fail the whole write.
_INTEGER_RANGE = range(-(2**31), 2**31)


def enum_code(value: Any) -> int | None:
    """An integer enum code, or None for anything else (bool, text, out of range).

    Integral floats count: a raw integer column read back with a NULL in it is float64.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in _INTEGER_RANGE:
        return value
    return None


def read_job_type(value: Any) -> int | None:
    """A job type code (a code, numeric text or name); None for an unreadable one, which the job-type
    rule then quarantines with the payload's value."""
    try:
        return read_enum(value, JobType, "type")
    except UnreadableValue:
        return None


def read_status(value: Any) -> int | None:
    """An opportunity status code (a code, numeric text or name); None for an unreadable one, which the
    status rule quarantines."""
    try:
        return read_enum(value, OpportunityStatus, "status")
    except UnreadableValue:
        return None


def yyyymmdd_to_date(value: Any) -> dt.date | None:
    """A SmartMoving date (``yyyyMMdd`` integer, or any form :func:`read_date` accepts); None when
    missing or unreadable (for values where the difference does not decide where a record goes)."""
    try:
        return read_date(value, "date")
    except UnreadableValue:
        return None


@dataclass(frozen=True)
class OpportunitySummary:
    """What the customers list says about an opportunity; a change here means refetch details."""

    opportunity_id: str
    customer_id: str
    summary_hash: str
    status: int | None = None
    jobs: frozenset[tuple[str, Any]] = frozenset()  # (job id, its date as listed)


def listed_jobs(jobs: Any, date_key: str) -> frozenset[tuple[str, Any]]:
    """(job id, date) pairs of a job list: the summary's ``serviceDate`` or the details' ``jobDate``."""
    return frozenset(
        (str(j.get("id")), j.get(date_key) if date_key in j else j.get("jobDate"))
        for j in (jobs if isinstance(jobs, list) else [])
        if isinstance(j, dict)
    )


def summary_hash(opportunity: Mapping[str, Any]) -> str:
    # Sorted by their JSON text: the values are whatever the API sent (None next to an int would
    # make plain tuple comparison raise).
    jobs = sorted(
        (
            (str(j.get("id")), j.get("serviceDate") or j.get("jobDate"), j.get("type"))
            for j in opportunity.get("jobs") or []
        ),
        key=lambda job: json.dumps(job, default=str),
    )
    material = [opportunity.get("status"), str(opportunity.get("quoteNumber")), jobs]
    return hashlib.sha256(json.dumps(material, default=str).encode()).hexdigest()[:24]


def summary_dates(customer: Mapping[str, Any]) -> set[dt.date]:
    """The job dates the customers list shows for a customer's opportunities."""
    dates = set()
    for opportunity in customer.get("opportunities") or []:
        for job in (opportunity.get("jobs") or []) if isinstance(opportunity, dict) else []:
            if isinstance(job, dict):
                day = yyyymmdd_to_date(job.get("serviceDate") or job.get("jobDate"))
                if day is not None:
                    dates.add(day)
    return dates


def customers_frame(
    customers: Iterable[Any],
    service_dates: dt.date | Sequence[dt.date],
    fetched_at: dt.datetime,
    run_id: str,
) -> pd.DataFrame:
    """One row per customer and service date of the pull it has work on.

    A customer the list returns without a job date inside the pulled dates (the API matched it on
    something else, e.g. the opportunity's first day) is filed under every pulled date: the
    opportunities step files its jobs by their own dates, and nothing fetched is dropped. A customer
    without a readable id is no row: :func:`customers_account` quarantines it.
    """
    window = [service_dates] if isinstance(service_dates, dt.date) else list(service_dates)
    rows = []
    for c in customers:
        try:
            customer_id = read_id(c, "customer.id")
        except UnreadableValue:
            continue
        days = sorted(summary_dates(c) & set(window)) or window
        rows.extend(
            {
                "service_date": day,
                "customer_id": customer_id,
                "name": c.get("name"),
                "payload": dict(c),
                "fetched_at": fetched_at,
                "run_id": run_id,
            }
            for day in days
        )
    return pd.DataFrame(rows, columns=CUSTOMER_COLUMNS)


def customers_account(
    customers: Sequence[Any], frame: pd.DataFrame, dates: Sequence[dt.date], duplicates: int = 0
) -> PullAccount:
    """The customers list's records: stored (``frame``), seen twice across pages, or unreadable."""
    account = PullAccount("customer", served=len(customers) + duplicates, set_aside={"listed twice": duplicates})
    account.stored = int(frame["customer_id"].nunique()) if len(frame) else 0
    for position, customer in enumerate(customers):
        try:
            read_id(customer, "customer.id")
        except UnreadableValue as error:
            account.unreadable.append(UnreadableRecord("customer", f"#{position}", error.reason, customer, dates[0]))
    return account


def opportunity_summaries(customers: pd.DataFrame) -> dict[str, OpportunitySummary]:
    """Every opportunity the customers list shows for the date, with its summary hash."""
    summaries: dict[str, OpportunitySummary] = {}
    for customer_id, payload in zip(customers["customer_id"], customers["payload"], strict=True):
        for opportunity in listed_opportunities(payload):
            try:
                oid = read_id(opportunity, "opportunity.id")
            except UnreadableValue:
                continue  # quarantined by listed_opportunities_account
            summaries[oid] = OpportunitySummary(
                oid,
                customer_id,
                summary_hash(opportunity),
                read_status(opportunity.get("status")),
                listed_jobs(opportunity.get("jobs"), "serviceDate"),
            )
    return summaries


def listed_opportunities(customer: Mapping[str, Any]) -> list[Any]:
    listed = customer.get("opportunities")
    return listed if isinstance(listed, list) else []


def listed_opportunities_account(customers: pd.DataFrame, summaries: Mapping[str, OpportunitySummary]) -> PullAccount:
    """The opportunities the customers list names: each summarized once, or unreadable (no id)."""
    account = PullAccount("opportunity")
    seen: set[str] = set()
    twice = 0
    for customer_id, payload, day in zip(
        customers["customer_id"], customers["payload"], customers["service_date"], strict=True
    ):
        for position, opportunity in enumerate(listed_opportunities(payload)):
            try:
                oid = read_id(opportunity, "opportunity.id")
            except UnreadableValue as error:
                key = f"customer {customer_id}#{position}"
                if key not in seen:
                    seen.add(key)
                    account.served += 1
                    account.unreadable.append(UnreadableRecord("opportunity", key, error.reason, opportunity, day))
                continue
            if oid in seen:
                twice += 1  # a customer filed under several dates of the pull lists it on each
                continue
            seen.add(oid)
            account.served += 1
    account.stored = len([oid for oid in summaries if oid in seen])
    return account


def listed_statuses(customers: pd.DataFrame) -> dict[str, int]:
    """Opportunity id -> status as the customers list shows it (pulled with, or after, the details)."""
    return {
        oid: summary.status for oid, summary in opportunity_summaries(customers).items() if summary.status is not None
    }


def opportunity_dates(opportunity: Mapping[str, Any]) -> set[dt.date]:
    """Every date an opportunity has work on: its jobs' own dates and its service date."""
    days = {yyyymmdd_to_date(job.get("jobDate")) for job in opportunity.get("jobs") or [] if isinstance(job, dict)}
    days.add(yyyymmdd_to_date(opportunity.get("serviceDate")))
    return {d for d in days if d is not None}


def opportunities_frame(
    details: Mapping[str, Mapping[str, Any]],
    summaries: Mapping[str, OpportunitySummary],
    fetched_at: Mapping[str, dt.datetime],
    service_dates: dt.date | Sequence[dt.date],
    run_id: str,
) -> pd.DataFrame:
    """One row per opportunity and pulled date it has work on (a two-day move: one row per day).

    An opportunity with no work on any pulled date (moved away between list and details) is kept
    under the first pulled date, so its payload is retained; it yields no job there.
    """
    window = [service_dates] if isinstance(service_dates, dt.date) else list(service_dates)
    rows = []
    for oid, payload in details.items():
        days = sorted(opportunity_dates(payload) & set(window)) or window[:1]
        rows.extend(
            {
                "service_date": day,
                "opportunity_id": oid,
                "customer_id": summaries[oid].customer_id,
                "summary_hash": summaries[oid].summary_hash,
                "payload": dict(payload),
                "fetched_at": fetched_at[oid],
                "run_id": run_id,
            }
            for day in days
        )
    return pd.DataFrame(rows, columns=OPPORTUNITY_COLUMNS)


def job_date(job: Mapping[str, Any]) -> dt.date | None:
    """A job's own date. None: not scheduled yet ("TBD"): no journey, listed as unscheduled instead.

    (Filing such a job on its opportunity's date made a phantom second journey on that day.)
    Raises :class:`UnreadableValue` for a date present but unreadable: that job is quarantined, never
    taken for an undated one.
    """
    return read_date(job.get("jobDate"), "jobDate")


def jobs_on(opportunity: Mapping[str, Any], days: Collection[dt.date]) -> list[dict[str, Any]]:
    """The opportunity's jobs (with an id) dated on one of ``days``: what a pull of them files."""
    return [
        job
        for job in opportunity.get("jobs") or []
        if isinstance(job, dict) and job.get("id") is not None and yyyymmdd_to_date(job.get("jobDate")) in days
    ]


def jobs_account(opportunities: pd.DataFrame, jobs: pd.DataFrame, days: Collection[dt.date]) -> PullAccount:
    """Every job of the pulled opportunities' details, each once: filed (``jobs``), dated outside ``days``,
    not dated yet, or unreadable (no id, an unreadable ``jobDate``)."""
    account = PullAccount("job")
    account.stored = int(jobs["job_id"].nunique()) if len(jobs) else 0
    seen: set[str] = set()
    aside = {"dated outside the pulled dates": 0, "not dated yet": 0, "listed twice": 0}
    for opportunity, dates_filed in _opportunities_once(opportunities):
        oid = str(opportunity.get("id"))
        for position, job in enumerate(opportunity.get("jobs") or []):
            account.served += 1
            filed_on = min(dates_filed)
            try:
                job_id = read_id(job, "job.id")
            except UnreadableValue as error:
                account.unreadable.append(UnreadableRecord("job", f"{oid}#{position}", error.reason, job, filed_on))
                continue
            if job_id in seen:
                aside["listed twice"] += 1
                continue
            seen.add(job_id)
            try:
                day = job_date(job)
            except UnreadableValue as error:
                account.unreadable.append(UnreadableRecord("job", job_id, error.reason, job, filed_on))
                continue
            if day is None:
                aside["not dated yet"] += 1
            elif day not in days:
                aside["dated outside the pulled dates"] += 1
    account.set_aside = aside
    return account


def _opportunities_once(opportunities: pd.DataFrame) -> list[tuple[Mapping[str, Any], list[dt.date]]]:
    """Each opportunity's payload once, with the dates its rows are filed under."""
    by_id: dict[str, tuple[Mapping[str, Any], list[dt.date]]] = {}
    for oid, payload, day in zip(
        opportunities["opportunity_id"], opportunities["payload"], opportunities["service_date"], strict=True
    ):
        entry = by_id.setdefault(str(oid), (payload, []))
        entry[1].append(day if isinstance(day, dt.date) else pd.Timestamp(day).date())
    return list(by_id.values())


def jobs_frame(opportunities: pd.DataFrame, service_date: dt.date, run_id: str) -> pd.DataFrame:
    """One row per job dated ``service_date`` (a multi-day move's other jobs belong to other dates)."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for opportunity, customer_id, fetched_at in zip(
        opportunities["payload"], opportunities["customer_id"], opportunities["fetched_at"], strict=True
    ):
        for job in jobs_on(opportunity, {service_date}):
            if str(job["id"]) in seen:  # the same opportunity filed under several dates of a pull
                continue
            seen.add(str(job["id"]))
            rows.append(
                {
                    "service_date": service_date,
                    "job_id": str(job["id"]),
                    "opportunity_id": str(opportunity["id"]),
                    "customer_id": customer_id,
                    "job_number": job.get("jobNumber"),
                    "job_type": read_job_type(job.get("type")),
                    "confirmed": job.get("confirmed") if isinstance(job.get("confirmed"), bool) else None,
                    "addresses": [a for a in job.get("jobAddresses") or [] if isinstance(a, str)],
                    "estimated_charges": list(job.get("estimatedCharges") or []),
                    "payload": dict(job),
                    "fetched_at": fetched_at,
                    "run_id": run_id,
                }
            )
    frame = pd.DataFrame(rows, columns=JOB_COLUMNS)
    frame["job_type"] = frame["job_type"].astype("Int64")
    return frame


def departure_reason(
    job_id: str, detail: Mapping[str, Any] | None, days: Collection[dt.date]
) -> tuple[str, dt.date | None] | None:
    """Why a job no longer shows on ``days`` (its journey's pulled dates), from its opportunity's details.

    ``detail`` None: SmartMoving answered 400 for the opportunity. Returns (reason, new date) or None
    when the details still date the job on ``days`` (nothing explains why the list left it out).
    """
    if detail is None:
        return "deleted", None
    job = next((j for j in detail.get("jobs") or [] if isinstance(j, dict) and str(j.get("id")) == job_id), None)
    if job is None:
        return "deleted", None  # removed from its opportunity, which lives on
    mapping = STATUS_MAPPING.get(read_status(detail.get("status")))  # type: ignore[arg-type]
    if mapping is not None and mapping.stage in FALLEN_THROUGH_STAGES:
        # Whatever its date now: the booking fell through (cancelled, lost, sent back to lead).
        return "cancelled", None
    try:
        day = job_date(job)
    except UnreadableValue:
        return None  # its date cannot be read: quarantined by the pull, not explained as a move
    if day in days:
        return None
    return "rescheduled", day  # None: no date yet ("TBD")


def departures_frame(
    leaving: Iterable[JourneyJob],
    details: Mapping[str, Mapping[str, Any]],
    fetched_at: Mapping[str, dt.datetime],
    days: Collection[dt.date],
    now: dt.datetime,
    run_id: str,
) -> pd.DataFrame:
    """One row per leaving job whose opportunity's details (absent from ``details``: a 400) say why.

    ``fetched_at``: when each detail was fetched; one fetched just now for the purpose, or a 400, is ``now``.
    """
    rows = []
    for job in leaving:
        detail = details.get(job.opportunity_id)
        why = departure_reason(job.job_id, detail, days)
        if why is None:
            continue
        rows.append(
            {
                "service_date": job.service_date,
                "job_id": job.job_id,
                "opportunity_id": job.opportunity_id,
                "reason": why[0],
                "new_service_date": why[1],
                "fetched_at": fetched_at.get(job.opportunity_id, now) if detail is not None else now,
                "run_id": run_id,
            }
        )
    return pd.DataFrame(rows, columns=DEPARTURE_COLUMNS)


def branches_frame(branches: Iterable[Any], fetched_at: dt.datetime, run_id: str) -> pd.DataFrame:
    rows = {}
    for b in branches:
        try:
            branch_id = read_id(b, "branch.id")
        except UnreadableValue:
            continue  # quarantined by branches_account
        rows[branch_id] = {
            "branch_id": branch_id,
            "name": b.get("name"),
            "payload": dict(b),
            "fetched_at": fetched_at,
            "run_id": run_id,
        }
    return pd.DataFrame(list(rows.values()), columns=BRANCH_COLUMNS)


def branches_account(branches: Sequence[Any], frame: pd.DataFrame, day: dt.date) -> PullAccount:
    account = PullAccount("branch", served=len(branches), stored=len(frame))
    for position, branch in enumerate(branches):
        try:
            read_id(branch, "branch.id")
        except UnreadableValue as error:
            account.unreadable.append(UnreadableRecord("branch", f"#{position}", error.reason, branch, day))
    account.set_aside = {"listed twice": account.served - account.stored - len(account.unreadable)}
    return account


def utc_timestamp(value: Any) -> dt.datetime | None:
    """A SmartMoving ``*AtUtc`` text as an aware datetime (UTC when it names no offset); None otherwise."""
    try:
        return read_timestamp(value, "timestamp")
    except UnreadableValue:
        return None


def timelines_frame(
    jobs_by_opportunity: Mapping[str, list[Mapping[str, Any]]],
    service_date: dt.date,
    fetched_at: dt.datetime,
    run_id: str,
) -> pd.DataFrame:
    """``/opportunities/{id}/jobs`` answers: one row per job dated ``service_date``."""
    rows = [
        {
            "service_date": service_date,
            "job_id": str(job["id"]),
            "opportunity_id": oid,
            "start_at": utc_timestamp(job.get("startTimeUtc")),
            "end_at": utc_timestamp(job.get("endTimeUtc")),
            "payload": dict(job),
            "fetched_at": fetched_at,
            "run_id": run_id,
        }
        for oid, jobs in jobs_by_opportunity.items()
        for job in jobs
        if isinstance(job, Mapping)
        and job.get("id") is not None
        and yyyymmdd_to_date(job.get("jobDate")) == service_date
    ]
    return pd.DataFrame(rows, columns=TIMELINE_COLUMNS)
