"""SmartMoving API v1 integer enums, with the meanings the vendor documents.

(Earlier integrations mapped status 30 as "Confirmed": it is Lost.)
"""

from __future__ import annotations

from enum import IntEnum


class OpportunityStatus(IntEnum):
    NEW_LEAD = 0
    LEAD_IN_PROGRESS = 1
    OPPORTUNITY = 3
    BOOKED = 4
    COMPLETED = 10
    CLOSED = 11
    CANCELLED = 20
    LOST = 30
    BAD_LEAD = 50


class LeadStatus(IntEnum):
    """A lead's status: the opportunity statuses a lead can have (their names are accepted too)."""

    NEW = 0
    NEW_LEAD = 0
    IN_PROGRESS = 1
    LEAD_IN_PROGRESS = 1
    BAD_LEAD = 50


class JobType(IntEnum):
    MOVING = 1
    PACKING = 3
    MOVING_AND_PACKING = 4
    LOAD_ONLY = 5
    UNLOAD_ONLY = 6
    COMMERCIAL = 7
    STORAGE_IN_BOUND = 8
    STORAGE_OUT_BOUND = 9
    INNER_HOUSE = 10
    JUNK_REMOVAL = 11
    LABOR_ONLY = 12


CUSTOM_JOB_TYPES = range(101, 141)  # Custom01..Custom40, named per company in SmartMoving


class OpportunityType(IntEnum):
    LOCAL = 0
    INTRASTATE = 1
    INTERSTATE = 2


class PhoneType(IntEnum):
    MOBILE = 0
    HOME = 1
    OFFICE = 2
    OTHER = 3
