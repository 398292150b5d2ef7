"""Raw SmartMoving leads -> the CRM's ``leads`` rows: typed, contacts normalized, branch mapped.

Like journeys, normalization never raises on odd data; the lead rules (``quality.rules``) decide what
is flagged or quarantined.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from lgm_pipeline.domain.mappings import LEAD_CONVERTED, LEAD_STATUS_NAMES
from lgm_pipeline.smartmoving.enums import LeadStatus
from lgm_pipeline.smartmoving.shapes import UnreadableValue, pick, read_enum, read_id, read_timestamp
from lgm_pipeline.storage.tables import leads as leads_table
from lgm_pipeline.storage.tables import raw_leads
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.journeys import clean_email, clean_name, clean_text, contact_phone
from lgm_pipeline.transform.raw import PullAccount, UnreadableRecord, yyyymmdd_to_date

LEAD_COLUMNS = [c.name for c in leads_table.columns]
RAW_LEAD_COLUMNS = [c.name for c in raw_leads.columns]


def lead_id(tenant: Tenant, smartmoving_lead_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"smartmoving-lead:{tenant.client_id}:{smartmoving_lead_id}"))


def created_at(lead: Mapping[str, Any]) -> dt.datetime | None:
    """When the lead was created, from whichever of the field's names it came under; raises
    :class:`UnreadableValue` when it is missing or unreadable (a lead is filed by it)."""
    name, value = pick(lead, "lead.createdAtUtc")
    moment = read_timestamp(value, name)
    if moment is None:
        raise UnreadableValue(name, None)
    return moment


def created_date(tenant: Tenant, lead: Mapping[str, Any]) -> dt.date | None:
    """The lead's creation date in the tenant's timezone (None when SmartMoving sent no readable time)."""
    try:
        return created_at(lead).astimezone(tenant.tz).date()
    except UnreadableValue:
        return None


def raw_leads_frame(
    tenant: Tenant, leads: Iterable[Mapping[str, Any]], dates: list[dt.date], fetched_at: dt.datetime, run_id: str
) -> pd.DataFrame:
    """The pulled leads created on ``dates`` (tenant time), payload verbatim, one row per lead and date."""
    return read_leads(tenant, list(leads), dates, fetched_at, run_id)[0]


def read_leads(
    tenant: Tenant, leads: list[Any], dates: list[dt.date], fetched_at: dt.datetime, run_id: str, duplicates: int = 0
) -> tuple[pd.DataFrame, PullAccount]:
    """(:func:`raw_leads_frame`, where each served lead went): stored, created outside ``dates`` (the
    UTC range asked for spans more than the tenant's days), or unreadable (no id, no readable creation
    time: kept raw with the reason, never dropped)."""
    wanted = set(dates)
    rows = {}
    account = PullAccount("lead", served=len(leads) + duplicates)
    outside = 0
    for position, lead in enumerate(leads):
        try:
            smartmoving_id = read_id(lead, "lead.id")
            day = created_at(lead).astimezone(tenant.tz).date()
        except UnreadableValue as error:
            key = str(lead.get("id")) if isinstance(lead, Mapping) and lead.get("id") is not None else f"#{position}"
            account.unreadable.append(UnreadableRecord("lead", key, error.reason, lead, dates[0]))
            continue
        if day not in wanted:
            outside += 1
            continue
        rows[(day, smartmoving_id)] = {
            "created_date": day,
            "lead_id": smartmoving_id,
            "payload": dict(lead),
            "fetched_at": fetched_at,
            "run_id": run_id,
        }
    account.stored = len(rows)
    account.set_aside = {"created outside the pulled dates": outside, "listed twice": duplicates}
    return pd.DataFrame(list(rows.values()), columns=RAW_LEAD_COLUMNS), account


def lead_name(lead: Mapping[str, Any]) -> str | None:
    """``name``, or ``firstName`` and ``lastName`` (a published model of the endpoint splits it)."""
    _, name = pick(lead, "lead.name")
    if name is not None:
        return clean_name(name)
    return clean_name(" ".join(str(p) for p in (lead.get("firstName"), lead.get("lastName")) if clean_text(p)))


def lead_status(lead: Mapping[str, Any]) -> int | None:
    try:
        return read_enum(lead.get("status"), LeadStatus, "status")
    except UnreadableValue:
        return None


def _lead_row(
    tenant: Tenant, raw: Mapping[str, Any], branches: Mapping[str, Any], synced_at: dt.datetime, run_id: str
) -> dict[str, Any]:
    lead = raw["payload"]
    branch_name = clean_text((lead.get("branch") or {}).get("name")) if isinstance(lead.get("branch"), dict) else None
    branch = branches.get(branch_name) if branch_name else None
    status = lead_status(lead)
    converted = clean_text(lead.get("opportunityId"))
    phone, phone_type = contact_phone({**lead, "phoneNumber": pick(lead, "lead.phoneNumber")[1]})
    move_size = lead.get("moveSize")
    return {
        "id": lead_id(tenant, raw["lead_id"]),
        "client_id": tenant.client_id,
        "location_id": branch.location_id if branch else None,
        "created_date": raw["created_date"],
        "created_at": created_at(lead),
        "name": lead_name(lead),
        "phone": phone,
        "phone_type": phone_type,
        "email": clean_email(pick(lead, "lead.emailAddress")[1]),
        "source": clean_text(lead.get("referralSource")),
        "move_date": yyyymmdd_to_date(lead.get("moveDate")),
        "move_size": clean_text(move_size.get("name") if isinstance(move_size, dict) else move_size),
        "status": LEAD_CONVERTED if converted else LEAD_STATUS_NAMES.get(status) if status is not None else None,
        "smartmoving_status": status,
        "converted_opportunity_id": converted,
        "probable_duplicate_of": None,
        "branch_name": branch_name,
        "smartmoving_lead_id": raw["lead_id"],
        "raw_payload": dict(lead),
        "dq_flags": [],
        "source_fetched_at": raw["fetched_at"],
        "synced_at": synced_at,
        "run_id": run_id,
    }


def normalize_leads(tenant: Tenant, raw: pd.DataFrame, synced_at: dt.datetime, run_id: str) -> pd.DataFrame:
    branches = tenant.branch_by_smartmoving_name()
    rows = [_lead_row(tenant, r, branches, synced_at, run_id) for r in raw.to_dict("records")]
    frame = pd.DataFrame(rows, columns=LEAD_COLUMNS)
    frame["smartmoving_status"] = frame["smartmoving_status"].astype("Int64")
    return frame


def mark_probable_duplicates(frame: pd.DataFrame, earlier: pd.DataFrame) -> pd.DataFrame:
    """``probable_duplicate_of``: the first earlier lead (stored, or earlier in the frame) with the same
    phone or email; ``earlier`` holds stored leads of the last 30 days (``id, phone, email, created_at``)."""
    frame = frame.copy()
    candidates = pd.concat(
        [earlier[["id", "phone", "email", "created_at"]], frame[["id", "phone", "email", "created_at"]]]
    )
    candidates = candidates.assign(at_=pd.to_datetime(candidates["created_at"], utc=True)).sort_values(["at_", "id"])
    first_by: dict[tuple[str, str], tuple[str, Any]] = {}
    for row in candidates.itertuples(index=False):
        for kind in ("phone", "email"):
            value = getattr(row, kind)
            if isinstance(value, str) and value and (kind, value) not in first_by:
                first_by[(kind, value)] = (row.id, row.at_)
    duplicates = []
    for row in frame.itertuples(index=False):
        found = None
        for kind in ("phone", "email"):
            value = getattr(row, kind)
            first = first_by.get((kind, value)) if isinstance(value, str) and value else None
            if first and first[0] != row.id:
                found = first[0]
                break
        duplicates.append(found)
    frame["probable_duplicate_of"] = pd.Series(duplicates, index=frame.index, dtype=object)
    return frame
