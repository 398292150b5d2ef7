"""How the pipeline reads SmartMoving's values: the accepted variants of each field, in one place.

SmartMoving's public descriptions disagree on some shapes (a lead's creation time is ``createdAtUtc``
in one model and ``createdOn`` in another; the customers list sends ``serviceDate`` as an ISO text
where the details send ``jobDate`` as a ``yyyyMMdd`` integer). Where the meaning is unambiguous the
readers accept every variant (:data:`FIELD_VARIANTS`, mirrored in docs/architecture.md); anything
else raises :class:`UnreadableValue`, naming the field and the value, so the record is kept raw and
quarantined rather than read as missing. *Missing* (absent, null, a blank text) is a value of its own:
the readers return None for it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Any

#: Field -> the names it may arrive under, preferred first (the names our client was written for).
FIELD_VARIANTS: dict[str, tuple[str, ...]] = {
    "customer.id": ("id", "customerId"),
    "opportunity.id": ("id", "opportunityId"),
    "job.id": ("id", "jobId"),
    "job.jobDate": ("jobDate", "serviceDate"),
    "lead.id": ("id", "leadId"),
    "lead.createdAtUtc": ("createdAtUtc", "createdOn", "createdAt", "createdDate"),
    "lead.name": ("name", "fullName"),
    "lead.emailAddress": ("emailAddress", "email"),
    "lead.phoneNumber": ("phoneNumber", "phone"),
    "branch.id": ("id", "branchId"),
}

#: Longest value quoted in a reason: enough to recognise it, never a whole payload.
_QUOTED = 60

# ASCII digits only (``\d`` would take any script's digits, which the database's twin does not).
_YYYYMMDD = re.compile(r"^\s*([0-9]{4})([0-9]{2})([0-9]{2})\s*$")
_ISO_DATE = re.compile(r"^\s*([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ][0-9:.]+(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?\s*$")


class UnreadableValue(ValueError):
    """A value present but not readable as its field's type: the record is quarantined with ``reason``."""

    def __init__(self, field: str, value: Any, expected: str = "") -> None:
        self.field = field
        self.value = value
        if value is None:
            self.reason = f"{field}: missing"
        else:
            self.reason = f"{field}: unreadable {quote(value)}" + (f" (expected {expected})" if expected else "")
        super().__init__(self.reason)


def quote(value: Any) -> str:
    """The value as a reason shows it: its JSON-ish repr, cut to :data:`_QUOTED` characters."""
    text = repr(value)
    return text if len(text) <= _QUOTED else text[: _QUOTED - 1] + "…"


def is_missing(value: Any) -> bool:
    """Absent, null or a blank text: SmartMoving has no value there (e.g. a job not yet dated)."""
    return value is None or (isinstance(value, str) and not value.strip())


def pick(record: Mapping[str, Any], field: str) -> tuple[str, Any]:
    """(the name it came under, the value) of ``field`` (``"lead.createdAtUtc"``): the first variant
    present and not missing; the preferred name and None when none is."""
    names = FIELD_VARIANTS[field]
    for name in names:
        if name in record and not is_missing(record[name]):
            return name, record[name]
    return names[0], None


def read_date(value: Any, field: str) -> dt.date | None:
    """A calendar date: ``yyyyMMdd`` as a number or text, or an ISO date or date-time (its date as
    written: SmartMoving's dates are the branch's own, not instants). None when missing."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        raise UnreadableValue(field, value, "a date")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value) if isinstance(value, int | str) else None
    match = (_YYYYMMDD.match(text) or _ISO_DATE.match(text)) if text is not None else None
    if match is None:
        raise UnreadableValue(field, value, "yyyyMMdd or an ISO date")
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise UnreadableValue(field, value, "a calendar date") from None


def read_timestamp(value: Any, field: str) -> dt.datetime | None:
    """An instant from an ISO text (UTC when it names no offset). None when missing."""
    if is_missing(value):
        return None
    if not isinstance(value, str):
        raise UnreadableValue(field, value, "an ISO date-time")
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UnreadableValue(field, value, "an ISO date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def read_money(value: Any, field: str) -> Decimal | None:
    """An amount from a number or a numeric text (``"1250.00"``). None when missing."""
    if is_missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UnreadableValue(field, value, "an amount")
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise UnreadableValue(field, value, "an amount") from None
    if not amount.is_finite():
        raise UnreadableValue(field, value, "an amount")
    return amount


def _enum_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def enum_names(enum: type[IntEnum]) -> dict[str, int]:
    """Normalised name -> code (``"Lead In Progress"``, ``"LEAD_IN_PROGRESS"``, ``"leadInProgress"`` alike)."""
    return {_enum_key(name): int(member) for name, member in enum.__members__.items()}


def read_enum(value: Any, enum: type[IntEnum], field: str, *, open_codes: bool = True) -> int | None:
    """An enum's integer code from a code, a numeric text or a member's name. None when missing.

    ``open_codes``: an integer the enum does not list is still a code (a status or type SmartMoving
    added; the data-quality rules decide about it), only a name must be known.
    """
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        if open_codes or value in set(enum.__members__.values()):
            return value
        raise UnreadableValue(field, value, f"a {enum.__name__} code")
    if isinstance(value, str):
        code = enum_names(enum).get(_enum_key(value))
        if code is not None:
            return code
    raise UnreadableValue(field, value, f"a {enum.__name__} code or name")


def read_id(record: Any, field: str) -> str:
    """A record's id as text (a number or a non-blank text); raises when it has none."""
    if not isinstance(record, Mapping):
        raise UnreadableValue(field.split(".")[0], record, "an object")
    _, value = pick(record, field)
    if value is None:
        raise UnreadableValue(field, None, "an id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UnreadableValue(field, value, "an id")
    return str(value).strip()
