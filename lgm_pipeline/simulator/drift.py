"""Shape drift: the same world served in the other shapes SmartMoving's public descriptions give.

Our client and this simulator were written from the same guesses, so a test against the plain
simulator cannot show that the pipeline reads a shape it did not guess. With drift on, responses
keep their meaning but change their form: job dates as ISO texts, statuses and lead statuses as
names, amounts as numeric texts, a lead's ``createdOn``/``firstName``/``lastName``/``email``. A few
records (chosen by id, so every pull drifts alike) carry a value no reader can take (an unreadable
``jobDate`` or lead creation time, a charge of ``"TBD"``): the pipeline must quarantine those records,
or for an amount flag the journey, naming the field, and read the rest as it reads the plain shapes.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from typing import Any

from lgm_pipeline.smartmoving.enums import OpportunityStatus

#: One record in this many gets a value no reader accepts (by a hash of its id: stable across pulls).
UNREADABLE_ONE_IN = 29
UNREADABLE_AMOUNT_ONE_IN = 7

_LEAD_STATUS_NAMES = {0: "New", 1: "In Progress", 50: "Bad Lead"}
UNREADABLE_JOB_DATE = "week of the 12th"
UNREADABLE_CREATED = "yesterday afternoon"
UNREADABLE_AMOUNT = "TBD"


def _bucket(record_id: Any, salt: str, modulo: int) -> int:
    digest = hashlib.sha256(f"{salt}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % modulo


def is_unreadable(record_id: Any, salt: str) -> bool:
    """Whether drift serves this record with a value no reader accepts."""
    # Amounts more often: a flagged journey stays on the board, and a branch's day should show one.
    return _bucket(record_id, salt, UNREADABLE_AMOUNT_ONE_IN if salt == "totalCost" else UNREADABLE_ONE_IN) == 0


def _iso_date(value: Any) -> Any:
    """``20261204`` -> ``"2026-12-04T00:00:00"`` (the form the real customers list uses)."""
    if isinstance(value, int) and not isinstance(value, bool) and len(str(value)) == 8:
        text = str(value)
        return f"{text[:4]}-{text[4:6]}-{text[6:]}T00:00:00"
    return value


def _status_name(value: Any) -> Any:
    try:
        return OpportunityStatus(value).name.replace("_", " ").title()
    except ValueError:
        return value


def customer(record: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(record)
    for opportunity in out.get("opportunities") or []:
        if not isinstance(opportunity, dict):
            continue
        if _bucket(opportunity.get("id"), "status", 2) == 0:
            opportunity["status"] = _status_name(opportunity.get("status"))
        for job in opportunity.get("jobs") or []:
            if isinstance(job, dict):
                job["serviceDate"] = _iso_date(job.get("serviceDate"))
    return out


def opportunity(record: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(record)
    if _bucket(out.get("id"), "status", 2) == 0:
        out["status"] = _status_name(out.get("status"))
    for job in out.get("jobs") or []:
        if not isinstance(job, dict):
            continue
        _drift_job_date(job)
        charges = [c for c in job.get("estimatedCharges") or [] if isinstance(c, dict)]
        for charge in charges:
            if isinstance(charge.get("totalCost"), int | float):
                charge["totalCost"] = str(charge["totalCost"])
        if charges and is_unreadable(job.get("id"), "totalCost"):
            charges[-1]["totalCost"] = UNREADABLE_AMOUNT
    return out


def opportunity_jobs(jobs: list[Any]) -> list[Any]:
    """``/opportunities/{id}/jobs``: the same job dates as the details serve (one world, one shape)."""
    out = copy.deepcopy(jobs)
    for job in out:
        if isinstance(job, dict):
            _drift_job_date(job)
    return out


def _drift_job_date(job: dict[str, Any]) -> None:
    """A third of the dates as ISO texts; one job in :data:`UNREADABLE_ONE_IN` (dated) unreadable."""
    if is_unreadable(job.get("id"), "jobDate") and job.get("jobDate") is not None:
        job["jobDate"] = UNREADABLE_JOB_DATE
    elif _bucket(job.get("id"), "jobDate", 3) == 0:
        job["jobDate"] = _iso_date(job.get("jobDate"))


def lead(record: dict[str, Any]) -> dict[str, Any]:
    """A lead as a published model of ``/api/leads`` describes it."""
    out = copy.deepcopy(record)
    created = out.pop("createdAtUtc", None)
    if is_unreadable(out.get("id"), "createdOn"):
        out["createdOn"] = UNREADABLE_CREATED
    elif isinstance(created, str):
        moment = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        out["createdOn"] = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    name = out.pop("name", None)
    if isinstance(name, str) and name.strip():
        first, _, last = name.strip().partition(" ")
        out["firstName"], out["lastName"] = first, last or None
    if "emailAddress" in out:
        out["email"] = out.pop("emailAddress")
    status = out.get("status")
    out["status"] = _LEAD_STATUS_NAMES.get(status, status) if isinstance(status, int) else status
    return out
