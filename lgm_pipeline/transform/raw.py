"""Shaping SmartMoving payloads into the raw tables' rows (one DataFrame per raw asset).

Each raw row keeps the API payload untouched, its fetch time and the run id, so every downstream
partition can be rebuilt from the database without calling the API again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lgm_pipeline.storage.tables import raw_customers, raw_jobs, raw_opportunities

# The frames' columns are the tables' columns: one definition, in storage.tables.
CUSTOMER_COLUMNS = [c.name for c in raw_customers.columns]
OPPORTUNITY_COLUMNS = [c.name for c in raw_opportunities.columns]
JOB_COLUMNS = [c.name for c in raw_jobs.columns]


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


def yyyymmdd_to_date(value: Any) -> dt.date | None:
    """SmartMoving dates are integers like 20261125 (not timestamps)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        text = str(int(value))
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) if len(text) == 8 else None
    except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity, which json.loads accepts
        return None


@dataclass(frozen=True)
class OpportunitySummary:
    """What the customers list says about an opportunity; a change here means refetch details."""

    opportunity_id: str
    customer_id: str
    summary_hash: str


def _summary_hash(opportunity: Mapping[str, Any]) -> str:
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


def customers_frame(
    customers: Iterable[Mapping[str, Any]], service_date: dt.date, fetched_at: dt.datetime, run_id: str
) -> pd.DataFrame:
    rows = [
        {
            "service_date": service_date,
            "customer_id": str(c["id"]),
            "name": c.get("name"),
            "payload": dict(c),
            "fetched_at": fetched_at,
            "run_id": run_id,
        }
        for c in customers
    ]
    return pd.DataFrame(rows, columns=CUSTOMER_COLUMNS)


def opportunity_summaries(customers: pd.DataFrame) -> dict[str, OpportunitySummary]:
    """Every opportunity the customers list shows for the date, with its summary hash."""
    summaries: dict[str, OpportunitySummary] = {}
    for customer_id, payload in zip(customers["customer_id"], customers["payload"], strict=True):
        for opportunity in payload.get("opportunities") or []:
            if opportunity.get("id") is None:
                continue
            oid = str(opportunity["id"])
            summaries[oid] = OpportunitySummary(oid, customer_id, _summary_hash(opportunity))
    return summaries


def opportunities_frame(
    details: Mapping[str, Mapping[str, Any]],
    summaries: Mapping[str, OpportunitySummary],
    fetched_at: Mapping[str, dt.datetime],
    service_date: dt.date,
    run_id: str,
) -> pd.DataFrame:
    rows = [
        {
            "service_date": service_date,
            "opportunity_id": oid,
            "customer_id": summaries[oid].customer_id,
            "summary_hash": summaries[oid].summary_hash,
            "payload": dict(payload),
            "fetched_at": fetched_at[oid],
            "run_id": run_id,
        }
        for oid, payload in details.items()
    ]
    return pd.DataFrame(rows, columns=OPPORTUNITY_COLUMNS)


def job_date(job: Mapping[str, Any], opportunity: Mapping[str, Any]) -> dt.date | None:
    """A job's date: its own jobDate, else (a job not yet dated) the opportunity's serviceDate."""
    return yyyymmdd_to_date(job.get("jobDate")) or yyyymmdd_to_date(opportunity.get("serviceDate"))


def jobs_frame(opportunities: pd.DataFrame, service_date: dt.date, run_id: str) -> pd.DataFrame:
    """One row per job dated ``service_date`` (a multi-day move's other jobs belong to other dates)."""
    rows: list[dict[str, Any]] = []
    for opportunity, customer_id, fetched_at in zip(
        opportunities["payload"], opportunities["customer_id"], opportunities["fetched_at"], strict=True
    ):
        for job in opportunity.get("jobs") or []:
            if job_date(job, opportunity) != service_date or job.get("id") is None:
                continue
            rows.append(
                {
                    "service_date": service_date,
                    "job_id": str(job["id"]),
                    "opportunity_id": str(opportunity["id"]),
                    "customer_id": customer_id,
                    "job_number": job.get("jobNumber"),
                    "job_type": enum_code(job.get("type")),
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
