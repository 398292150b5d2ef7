"""Raw SmartMoving rows of one service date -> normalized truck journeys (one row per job).

Normalization never raises on odd data: whatever the API sent is carried into the row (or left
null: an amount present but unreadable is named in the row's ``dq_flags``, so it never reads as a
missing one), and the data-quality rules (``lgm_pipeline.quality``) decide what is flagged or quarantined.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pandas as pd

from lgm_pipeline.domain.mappings import (
    JOURNEY_CREATING_STAGES,
    OPPORTUNITY_TYPE_NAMES,
    PHONE_TYPE_NAMES,
    STATUS_MAPPING,
    AddressRoles,
    JobTypeInfo,
    job_type_info,
)
from lgm_pipeline.smartmoving.shapes import UnreadableValue, is_missing, read_money
from lgm_pipeline.storage.tables import MAX_MONEY
from lgm_pipeline.storage.tables import journeys as journeys_table
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.raw import enum_code, listed_statuses, read_status

JOURNEY_COLUMNS = [c.name for c in journeys_table.columns]  # one definition, in storage.tables
#: Journey columns read from the opportunity's details, which are reused while the customers list's summary
#: of it is unchanged and younger than ``detail_max_age_hours`` (assets/raw.py): a change SmartMoving makes to
#: them alone shows when the details are fetched again. Every other column follows the list, pulled every cycle.
COLUMNS_FROM_DETAILS = frozenset(
    {
        "location_id",
        "branch_name",
        "opportunity_type",
        "pickup_address",
        "dropoff_address",
        "stop_addresses",
        "addresses",
        "estimated_cost",
        "actual_cost",
        "opportunity_subtotal",
        "opportunity_tax",
        "opportunity_total",
        "move_size",
        "volume",
        "weight",
        "sales_assignee",
        "confirmed",
        "raw_payload",
        "dq_flags",  # the rules read the columns above too (an unmapped branch, a missing address)
    }
)

_EXTENSION_RE = re.compile(r"\s*(?:ext\.?|extension|x|#)\s*(\d{1,6})\s*$", re.IGNORECASE)
_NANP_RE = re.compile(r"^[2-9]\d{2}[2-9]\d{6}$")


def journey_id(tenant: Tenant, job_id: str) -> str:
    """Stable across syncs, dates and branches: a rescheduled job keeps its journey id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"smartmoving:{tenant.client_id}:{job_id}"))


def normalize_phone(value: Any) -> str | None:
    """A 10-digit NANP number as E.164 (+1XXXXXXXXXX), an extension kept as RFC 3966 ``;ext=``.

    Anything else is returned trimmed, as sent (the contact rule flags it).
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    extension = _EXTENSION_RE.search(text)
    digits = re.sub(r"\D", "", text[: extension.start()] if extension else text)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if not _NANP_RE.match(digits):
        return text
    return f"+1{digits}" + (f";ext={extension.group(1)}" if extension else "")


def is_e164(phone: str | None) -> bool:
    return bool(phone) and phone.startswith("+1")  # type: ignore[union-attr]


def clean_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def clean_name(value: Any) -> str | None:
    """Repeated and odd whitespace collapsed: "Zoë  O'Brien" and "Zoë O'Brien" are one customer."""
    text = clean_text(value)
    return " ".join(text.split()) if text else None


def clean_email(value: Any) -> str | None:
    text = clean_text(value)
    return text.lower() if text else None


def _as_int(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    return enum_code(value)


_CENT = Decimal("0.01")


def read_amount(value: Any, field: str) -> Decimal | None:
    """An amount (a number or a numeric text) as an exact Decimal to the cent; None when missing.

    Raises ``UnreadableValue`` naming ``field`` for anything else, and for an amount the money columns
    cannot hold: neither may pass for "no amount".
    """
    amount = read_money(value, field)
    if amount is None:
        return None
    if abs(amount) >= MAX_MONEY:
        raise UnreadableValue(field, value, f"an amount under {MAX_MONEY:,}")
    return amount.quantize(_CENT) + 0  # + 0 turns -0.00 into 0.00


class Readings:
    """Reads a row's amounts; one present but unreadable leaves its column empty and is named in dq_flags."""

    RULE = "values_readable"

    def __init__(self) -> None:
        self.flags: list[dict[str, Any]] = []

    def _unreadable(self, column: str, error: UnreadableValue) -> None:
        self.flags.append({"rule": self.RULE, "column": column, "check": "unreadable", "value": error.reason})

    def amount(self, value: Any, field: str, column: str) -> Decimal | None:
        try:
            return read_amount(value, field)
        except UnreadableValue as error:
            self._unreadable(column, error)
            return None

    def charges_total(self, charges: Any, field: str, column: str) -> Decimal | None:
        """The sum of each charge's ``totalCost`` (after its discount), before tax.

        None when no charge has an amount ("no estimate" is not an estimate of 0), and when one is
        unreadable: a sum without it would understate the job.
        """
        if charges is None:
            return None
        if not isinstance(charges, list):
            self._unreadable(column, UnreadableValue(field, charges, "a list of charges"))
            return None
        amounts: list[Decimal] = []
        readable = True
        for index, charge in enumerate(charges):
            where = f"{field}[{index}]"
            if not isinstance(charge, dict):
                self._unreadable(column, UnreadableValue(where, charge, "a charge"))
                readable = False
                continue
            amount = self.amount(charge.get("totalCost"), f"{where}.totalCost", column)
            if amount is None and not is_missing(charge.get("totalCost")):
                readable = False
            elif amount is not None:
                amounts.append(amount)
        if not readable or not amounts:
            return None
        total = sum(amounts, Decimal(0))
        if abs(total) >= MAX_MONEY:
            self._unreadable(column, UnreadableValue(field, f"sum {total}", f"a total under {MAX_MONEY:,}"))
            return None
        return total


def _address_roles(addresses: list[str], info: JobTypeInfo | None) -> tuple[str | None, str | None, list[str]]:
    """(pickup, drop-off, stops) as the job type reads its address list."""
    roles = info.roles if info else AddressRoles.ROUTE
    if len(addresses) == 1 and roles is AddressRoles.PICKUP:
        return addresses[0], None, []
    if len(addresses) == 1 and roles is AddressRoles.DROPOFF:
        return None, addresses[0], []
    if not addresses:
        return None, None, []
    if len(addresses) == 1:
        return addresses[0], None, []
    return addresses[0], addresses[-1], addresses[1:-1]


def contact_phone(*sources: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(phone, its type name): the first E.164 number among the primary and secondary numbers.

    Falls back to the primary as sent (the contact rule flags it) when none is usable.
    """
    candidates: list[tuple[Any, Any]] = []
    for source in sources:
        candidates.append((source.get("phoneNumber"), source.get("phoneType")))
    for source in sources:
        for secondary in source.get("secondaryPhoneNumbers") or []:
            if isinstance(secondary, dict):
                candidates.append((secondary.get("phoneNumber"), secondary.get("phoneType")))
    first_sent: tuple[str | None, str | None] = (None, None)
    for number, kind in candidates:
        phone = normalize_phone(number)
        kind_name = PHONE_TYPE_NAMES.get(_as_int(kind)) if _as_int(kind) is not None else None  # type: ignore[arg-type]
        if is_e164(phone):
            return phone, kind_name
        if phone and first_sent[0] is None:
            first_sent = (phone, kind_name)
    return first_sent


def _name_of(value: Any) -> str | None:
    return clean_text(value.get("name")) if isinstance(value, dict) else None


def _status(opportunity: Mapping[str, Any]) -> tuple[int | None, Any]:
    """SmartMoving's status code and its mapping (None: unreadable or unknown)."""
    status = read_status(opportunity.get("status"))
    return status, STATUS_MAPPING.get(status) if status is not None else None


def _branch(opportunity: Mapping[str, Any], branches: Mapping[str, Any]) -> tuple[str | None, Any]:
    """The SmartMoving branch name and the tenant's branch it maps to (None: not in the tenants file)."""
    branch_name = clean_text((opportunity.get("branch") or {}).get("name"))
    return branch_name, branches.get(branch_name) if branch_name else None


def _journey_row(
    tenant: Tenant,
    job: Mapping[str, Any],
    opportunity: Mapping[str, Any],
    customer: Mapping[str, Any],
    branches: Mapping[str, Any],
    custom_types: Mapping[int, JobTypeInfo],
    synced_at: dt.datetime,
    run_id: str,
) -> dict[str, Any]:
    job_payload = job["payload"]
    opp_customer = opportunity.get("customer") or {}
    status, mapping = _status(opportunity)
    job_type = _as_int(job.get("job_type"))
    type_info = job_type_info(job_type, custom_types)
    branch_name, branch = _branch(opportunity, branches)
    addresses = [a.strip() for a in job.get("addresses") or [] if isinstance(a, str) and a.strip()]
    pickup, dropoff, stops = _address_roles(addresses, type_info)
    # The customers list is pulled every cycle while opportunity details may come from the cache: contact
    # fields are the list's copy of the customer, so a rename or a changed number shows at the next sync.
    # Filling a gap in it from the details would put back what SmartMoving no longer says; their copy is
    # read only when the list has none (a carried multi-day move).
    contact = customer if customer else opp_customer
    customer_name = clean_name(contact.get("name"))
    phone, phone_type = contact_phone(contact)
    job_number = clean_text(job.get("job_number"))
    move_size = opportunity.get("moveSize") or {}
    totals = opportunity.get("estimatedTotal") if isinstance(opportunity.get("estimatedTotal"), dict) else {}
    read = Readings()
    volume = read.amount(opportunity.get("volume"), "volume", "volume")
    if volume is None and isinstance(move_size, dict):
        volume = read.amount(move_size.get("volume"), "moveSize.volume", "volume")
    opportunity_type = _as_int(opportunity.get("opportunityType"))
    return {
        "id": journey_id(tenant, job["job_id"]),
        "client_id": tenant.client_id,
        "location_id": branch.location_id if branch else None,
        "service_date": job["service_date"],
        "status": mapping.stage.value if mapping else None,
        "smartmoving_status": status,
        "smartmoving_status_name": mapping.smartmoving_name if mapping else None,
        "job_number": job_number,
        "quote_number": clean_text(opportunity.get("quoteNumber")),
        "job_type": job_type,
        "job_type_name": type_info.name if type_info else None,
        "needs_truck": type_info.needs_truck if type_info else None,
        "opportunity_type": OPPORTUNITY_TYPE_NAMES.get(opportunity_type) if opportunity_type is not None else None,
        "title": " - ".join(p for p in (type_info.name if type_info else "Job", customer_name, job_number) if p),
        "customer_name": customer_name,
        "customer_phone": phone,
        "customer_phone_type": phone_type,
        "customer_email": clean_email(contact.get("emailAddress")),
        "pickup_address": pickup,
        "dropoff_address": dropoff,
        "stop_addresses": stops,
        "addresses": addresses,
        "estimated_cost": read.charges_total(job.get("estimated_charges"), "estimatedCharges", "estimated_cost"),
        "actual_cost": read.charges_total(job_payload.get("actualCharges"), "actualCharges", "actual_cost"),
        "opportunity_subtotal": read.amount(totals.get("subtotal"), "estimatedTotal.subtotal", "opportunity_subtotal"),
        "opportunity_tax": read.amount(totals.get("tax"), "estimatedTotal.tax", "opportunity_tax"),
        "opportunity_total": read.amount(totals.get("finalTotal"), "estimatedTotal.finalTotal", "opportunity_total"),
        "currency": tenant.currency,
        "move_size": clean_text(move_size.get("name")) if isinstance(move_size, dict) else None,
        "volume": volume,
        "weight": read.amount(opportunity.get("weight"), "weight", "weight"),
        "sales_assignee": _name_of(opportunity.get("salesAssignee")),
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
        "dq_flags": read.flags,  # the rules add theirs (quality/rules.py)
        "source_fetched_at": job["fetched_at"],
        "synced_at": synced_at,
        "run_id": run_id,
    }


def custom_job_types(tenant: Tenant) -> dict[int, JobTypeInfo]:
    """The tenant's job type names from tenants.yaml, in the mapping table's terms."""
    return {t.code: JobTypeInfo(t.name, t.needs_truck, AddressRoles(t.addresses), ()) for t in tenant.job_types}


def normalize_journeys(
    tenant: Tenant,
    customers: pd.DataFrame,
    opportunities: pd.DataFrame,
    jobs: pd.DataFrame,
    synced_at: dt.datetime,
    run_id: str,
) -> pd.DataFrame:
    """All journeys of the date, every branch (``location_id`` is None where the branch is unknown)."""
    opportunity_by_id = current_opportunities(customers, opportunities)
    customer_by_id = dict(zip(customers["customer_id"], customers["payload"], strict=True))
    branches = tenant.branch_by_smartmoving_name()
    custom_types = custom_job_types(tenant)
    rows = [
        _journey_row(
            tenant,
            job,
            opportunity_by_id.get(job["opportunity_id"]) or {},
            customer_by_id.get(job["customer_id"]) or {},
            branches,
            custom_types,
            synced_at,
            run_id,
        )
        for job in jobs.to_dict("records")
    ]
    frame = pd.DataFrame(rows, columns=JOURNEY_COLUMNS)
    for column in ("smartmoving_status", "job_type"):
        frame[column] = frame[column].astype("Int64")
    frame["needs_truck"] = frame["needs_truck"].astype("boolean")
    return frame


def current_opportunities(customers: pd.DataFrame, opportunities: pd.DataFrame) -> dict[str, Mapping[str, Any]]:
    """Each opportunity's details by id, with the status the customers list shows.

    The list is pulled every run while details may be cached (the catch-up reuses them across a status-only
    change): the listed status is the current one.
    """
    opportunity_by_id = dict(zip(opportunities["opportunity_id"], opportunities["payload"], strict=True))
    for oid, status in listed_statuses(customers).items():
        if oid in opportunity_by_id and read_status(opportunity_by_id[oid].get("status")) != status:
            opportunity_by_id[oid] = {**opportunity_by_id[oid], "status": status}
    return opportunity_by_id


#: What the branch mapping check reads of each job (``job_branches``): a journey's key, date, stage and branch.
JOB_BRANCH_COLUMNS = ["id", "service_date", "job_number", "status", "branch_name", "location_id"]


def job_branches(
    tenant: Tenant, customers: pd.DataFrame, opportunities: pd.DataFrame, jobs: pd.DataFrame
) -> pd.DataFrame:
    """Per job, the journey it would be as far as its branch goes: id, date, stage, branch name and location.

    What the raw pull's branch check needs, read as ``normalize_journeys`` reads it (the same helpers),
    without normalizing the rest (contacts, money, addresses): that is the journeys asset's work, once.
    """
    opportunity_by_id = current_opportunities(customers, opportunities)
    branches = tenant.branch_by_smartmoving_name()
    rows = []
    for job in jobs.to_dict("records"):
        opportunity = opportunity_by_id.get(job["opportunity_id"]) or {}
        _, mapping = _status(opportunity)
        branch_name, branch = _branch(opportunity, branches)
        rows.append(
            {
                "id": journey_id(tenant, job["job_id"]),
                "service_date": job["service_date"],
                "job_number": clean_text(job.get("job_number")),
                "status": mapping.stage.value if mapping else None,
                "branch_name": branch_name,
                "location_id": branch.location_id if branch else None,
            }
        )
    return pd.DataFrame(rows, columns=JOB_BRANCH_COLUMNS)


def is_journey(frame: pd.DataFrame, existing_ids: set[str]) -> pd.Series:
    """Rows that are (or become) journeys: booked work, any job already a journey, and rows whose
    status maps to nothing (they may be booked work: the status rule quarantines them for a look).
    """
    creating = [str(s) for s in JOURNEY_CREATING_STAGES]
    return frame["status"].isin(creating) | frame["status"].isna() | frame["id"].isin(existing_ids)
