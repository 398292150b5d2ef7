"""Raw SmartMoving rows of one service date -> normalized truck journeys (one row per job).

Normalization never raises on odd data: whatever the API sent is carried into the row (or left
null), and the data-quality rules (``lgm_pipeline.quality``) decide what is flagged or quarantined.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pandas as pd

from lgm_pipeline.storage.tables import journeys as journeys_table
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.mappings import JOB_TYPE_NAMES, STATUS_MAPPING
from lgm_pipeline.transform.raw import enum_code

JOURNEY_COLUMNS = [c.name for c in journeys_table.columns]  # one definition, in storage.tables

_EXTENSION_RE = re.compile(r"\s*(?:ext\.?|x|#)\s*\d+\s*$", re.IGNORECASE)
_NANP_RE = re.compile(r"^[2-9]\d{2}[2-9]\d{6}$")


def journey_id(tenant: Tenant, job_id: str) -> str:
    """Stable across syncs, dates and branches: a rescheduled job keeps its journey id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"smartmoving:{tenant.client_id}:{job_id}"))


def normalize_phone(value: Any) -> str | None:
    """A 10-digit NANP number as E.164 (+1XXXXXXXXXX); anything else is returned trimmed, as sent."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    digits = re.sub(r"\D", "", _EXTENSION_RE.sub("", text))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return f"+1{digits}" if _NANP_RE.match(digits) else text


def _clean_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _as_int(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    return enum_code(value)


#: ``journeys.estimated_cost`` is numeric(12, 2): a larger amount would fail the whole partition's
#: write. Such an amount is not a real estimate; it is left out (the payload keeps it verbatim) and
#: the financials rule flags the booked journey for its missing cost.
MAX_MONEY = 10**10


def _as_money(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return round(amount, 2) if amount == amount and abs(amount) < MAX_MONEY else None


def _journey_row(
    tenant: Tenant,
    job: Mapping[str, Any],
    opportunity: Mapping[str, Any],
    customer: Mapping[str, Any],
    branches: Mapping[str, Any],
    synced_at: dt.datetime,
    run_id: str,
) -> dict[str, Any]:
    job_payload = job["payload"]
    opp_customer = opportunity.get("customer") or {}
    status = _as_int(opportunity.get("status"))
    mapping = STATUS_MAPPING.get(status) if status is not None else None
    job_type = _as_int(job.get("job_type"))
    job_type_name = JOB_TYPE_NAMES.get(job_type) if job_type is not None else None
    branch_name = _clean_text((opportunity.get("branch") or {}).get("name"))
    branch = branches.get(branch_name) if branch_name else None
    addresses = list(job.get("addresses") or [])
    # The customers list is pulled every cycle while opportunity details may come from the cache:
    # contact fields prefer the list, so a rename or a fixed email shows at the next sync.
    customer_name = _clean_text(customer.get("name")) or _clean_text(opp_customer.get("name"))
    job_number = _clean_text(job.get("job_number"))
    move_size = opportunity.get("moveSize") or {}
    quote = opportunity.get("quoteNumber")
    return {
        "id": journey_id(tenant, job["job_id"]),
        "client_id": tenant.client_id,
        "location_id": branch.location_id if branch else None,
        "service_date": job["service_date"],
        "status": mapping.stage.value if mapping else None,
        "smartmoving_status": status,
        "smartmoving_status_name": mapping.smartmoving_name if mapping else None,
        "job_number": job_number,
        "quote_number": _clean_text(quote),
        "job_type": job_type,
        "job_type_name": job_type_name,
        "title": " - ".join(p for p in (job_type_name or "Job", customer_name, job_number) if p),
        "customer_name": customer_name,
        "customer_phone": normalize_phone(customer.get("phoneNumber") or opp_customer.get("phoneNumber")),
        "customer_email": _clean_text(customer.get("emailAddress") or opp_customer.get("emailAddress")),
        "start_location": addresses[0] if addresses else None,
        "end_location": addresses[-1] if len(addresses) > 1 else None,
        "addresses": addresses,
        "estimated_cost": _as_money((opportunity.get("estimatedTotal") or {}).get("finalTotal")),
        "move_size": _clean_text(move_size.get("name")) if isinstance(move_size, dict) else None,
        "confirmed": job.get("confirmed"),
        "booked": bool(mapping and mapping.booked),
        "branch_name": branch_name,
        "external_ids": {
            "smartmoving_customer_id": job.get("customer_id"),
            "smartmoving_opportunity_id": job.get("opportunity_id"),
            "smartmoving_job_id": job["job_id"],
        },
        "smartmoving_job_id": job["job_id"],
        "raw_payload": {"job": job_payload, "opportunity": dict(opportunity), "customer": dict(customer)},
        "dq_flags": [],
        "source_fetched_at": job["fetched_at"],
        "synced_at": synced_at,
        "run_id": run_id,
    }


def normalize_journeys(
    tenant: Tenant,
    customers: pd.DataFrame,
    opportunities: pd.DataFrame,
    jobs: pd.DataFrame,
    synced_at: dt.datetime,
    run_id: str,
) -> pd.DataFrame:
    """All journeys of the date, every branch (``location_id`` is None where the branch is unknown)."""
    opportunity_by_id = dict(zip(opportunities["opportunity_id"], opportunities["payload"], strict=True))
    customer_by_id = dict(zip(customers["customer_id"], customers["payload"], strict=True))
    branches = tenant.branch_by_smartmoving_name()
    rows = [
        _journey_row(
            tenant,
            job,
            opportunity_by_id.get(job["opportunity_id"]) or {},
            customer_by_id.get(job["customer_id"]) or {},
            branches,
            synced_at,
            run_id,
        )
        for job in jobs.to_dict("records")
    ]
    frame = pd.DataFrame(rows, columns=JOURNEY_COLUMNS)
    for column in ("smartmoving_status", "job_type"):
        frame[column] = frame[column].astype("Int64")
    frame["estimated_cost"] = frame["estimated_cost"].astype("Float64")
    return frame
