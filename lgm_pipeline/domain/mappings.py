"""SmartMoving codes -> CRM vocabulary: the one table for each mapping; docs, views and checks read these.

Two vocabularies meet on the dispatch board:

* the **synced status** (``journeys.status``): what SmartMoving says about the booking, written only
  by the sync (BOOKED, COMPLETED, CLOSED, and CANCELLED, LOST, BAD_LEAD, UNBOOKED for booked work
  that fell through);
* the **field progress** (``journey_progress``): what the CRM's users record during the truck's day
  (MORNING_PREP, EN_ROUTE, ONSITE, COMPLETED) and finance's AUDITED. SmartMoving knows nothing of
  it, so the sync never writes it.

Only booked work becomes a journey: a lead or an open quote is sales' business, not a truck's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from lgm_pipeline.smartmoving.enums import CUSTOM_JOB_TYPES, JobType, OpportunityStatus, OpportunityType, PhoneType


class JourneyStage(StrEnum):
    # Synced from SmartMoving.
    BOOKED = "BOOKED"
    COMPLETED = "COMPLETED"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"
    LOST = "LOST"
    BAD_LEAD = "BAD_LEAD"
    UNBOOKED = "UNBOOKED"
    # Recorded by the CRM's users (journey_progress), never by the sync.
    MORNING_PREP = "MORNING_PREP"
    EN_ROUTE = "EN_ROUTE"
    ONSITE = "ONSITE"
    AUDITED = "AUDITED"


@dataclass(frozen=True)
class StatusMapping:
    smartmoving_name: str
    stage: JourneyStage
    booked: bool  # the customer has committed: the work is on the schedule
    creates_journey: bool  # a job first seen with this status becomes a journey
    reason: str  # why, for docs/architecture.md


#: SmartMoving OpportunityStatus -> synced journey stage.
STATUS_MAPPING: dict[int, StatusMapping] = {
    OpportunityStatus.NEW_LEAD: StatusMapping(
        "NewLead", JourneyStage.UNBOOKED, False, False, "a lead: no journey; a journey sent back to lead is unbooked"
    ),
    OpportunityStatus.LEAD_IN_PROGRESS: StatusMapping(
        "LeadInProgress", JourneyStage.UNBOOKED, False, False, "as NewLead"
    ),
    OpportunityStatus.OPPORTUNITY: StatusMapping(
        "Opportunity", JourneyStage.UNBOOKED, False, False, "an open quote: no journey until booked"
    ),
    OpportunityStatus.BOOKED: StatusMapping(
        "Booked", JourneyStage.BOOKED, True, True, "booked work: a truck's day is planned for it"
    ),
    OpportunityStatus.COMPLETED: StatusMapping(
        "Completed", JourneyStage.COMPLETED, True, True, "the move happened; actual charges recorded"
    ),
    OpportunityStatus.CLOSED: StatusMapping(
        "Closed", JourneyStage.CLOSED, True, True, "closed in SmartMoving; AUDITED is finance's own step in the CRM"
    ),
    OpportunityStatus.CANCELLED: StatusMapping(
        "Cancelled", JourneyStage.CANCELLED, False, False, "shown on an existing journey so dispatch sees it"
    ),
    OpportunityStatus.LOST: StatusMapping(
        "Lost", JourneyStage.LOST, False, False, "the sale was lost; shown on an existing journey"
    ),
    OpportunityStatus.BAD_LEAD: StatusMapping(
        "BadLead", JourneyStage.BAD_LEAD, False, False, "spam or invalid enquiry: not a lost sale"
    ),
}

#: Synced stages that create a journey the first time a job is seen.
JOURNEY_CREATING_STAGES: frozenset[JourneyStage] = frozenset(
    m.stage for m in STATUS_MAPPING.values() if m.creates_journey
)

#: Synced stages of booked work that fell through: not on the day's board, kept visible as cancellations.
FALLEN_THROUGH_STAGES: frozenset[JourneyStage] = frozenset(m.stage for m in STATUS_MAPPING.values() if not m.booked)

#: Stages the CRM's users record in ``journey_progress``.
CRM_PROGRESS_STAGES: tuple[JourneyStage, ...] = (
    JourneyStage.MORNING_PREP,
    JourneyStage.EN_ROUTE,
    JourneyStage.ONSITE,
    JourneyStage.COMPLETED,
    JourneyStage.AUDITED,
)

#: How far along the truck's day a stage is; the board shows the further of the synced status and
#: the CRM's latest progress (a crew's ONSITE beats SmartMoving's BOOKED; SmartMoving's CLOSED
#: beats a stale EN_ROUTE). Fallen-through stages are not ranked: they always show.
STAGE_ORDER: dict[JourneyStage, int] = {
    JourneyStage.BOOKED: 10,
    JourneyStage.MORNING_PREP: 20,
    JourneyStage.EN_ROUTE: 30,
    JourneyStage.ONSITE: 40,
    JourneyStage.COMPLETED: 50,
    JourneyStage.CLOSED: 60,
    JourneyStage.AUDITED: 70,
}

#: Stages after which no truck is needed any more (the end of ``journeys_active``).
FINISHED_STAGES: frozenset[JourneyStage] = frozenset(
    {JourneyStage.COMPLETED, JourneyStage.CLOSED, JourneyStage.AUDITED} | FALLEN_THROUGH_STAGES
)


class AddressRoles(StrEnum):
    """How a job's ``jobAddresses`` list reads."""

    ROUTE = "route"  # first = pickup, last = drop-off, any between = stops
    PICKUP = "pickup"  # the work happens at (or starts from) the one address: pickup
    DROPOFF = "dropoff"  # the crew brings things to the address: drop-off


@dataclass(frozen=True)
class JobTypeInfo:
    name: str
    needs_truck: bool | None  # None: unknown type, nobody can tell
    roles: AddressRoles
    requires: tuple[str, ...]  # address roles a booked truck job of this type cannot do without


_PICKUP = ("pickup",)
_DROPOFF = ("dropoff",)
_BOTH = ("pickup", "dropoff")

#: SmartMoving JobType -> name, truck need and address reading.
JOB_TYPES: dict[int, JobTypeInfo] = {
    JobType.MOVING: JobTypeInfo("Moving", True, AddressRoles.ROUTE, _BOTH),
    JobType.PACKING: JobTypeInfo("Packing", False, AddressRoles.PICKUP, ()),
    JobType.MOVING_AND_PACKING: JobTypeInfo("Moving and Packing", True, AddressRoles.ROUTE, _BOTH),
    # Loading or unloading the customer's own truck or container: a crew, no truck.
    JobType.LOAD_ONLY: JobTypeInfo("Load Only", False, AddressRoles.PICKUP, ()),
    JobType.UNLOAD_ONLY: JobTypeInfo("Unload Only", False, AddressRoles.DROPOFF, ()),
    JobType.COMMERCIAL: JobTypeInfo("Commercial", True, AddressRoles.ROUTE, _BOTH),
    JobType.STORAGE_IN_BOUND: JobTypeInfo("Storage In-Bound", True, AddressRoles.PICKUP, _PICKUP),
    JobType.STORAGE_OUT_BOUND: JobTypeInfo("Storage Out-Bound", True, AddressRoles.DROPOFF, _DROPOFF),
    JobType.INNER_HOUSE: JobTypeInfo("Inner House", False, AddressRoles.PICKUP, ()),
    JobType.JUNK_REMOVAL: JobTypeInfo("Junk Removal", True, AddressRoles.PICKUP, _PICKUP),
    JobType.LABOR_ONLY: JobTypeInfo("Labor Only", False, AddressRoles.PICKUP, ()),
    # Custom types are named per company (tenants.yaml); until then a route, truck unknown.
    **{code: JobTypeInfo(f"Custom{code - 100:02d}", None, AddressRoles.ROUTE, ()) for code in CUSTOM_JOB_TYPES},
}


def job_type_info(code: int | None, custom: Mapping[int, JobTypeInfo] | None = None) -> JobTypeInfo | None:
    """The tenant's own custom type first, then SmartMoving's; an unknown code is named "Unknown (<code>)"."""
    if code is None:
        return None
    known = (custom or {}).get(code) or JOB_TYPES.get(code)
    return known or JobTypeInfo(f"Unknown ({code})", None, AddressRoles.ROUTE, ())


#: SmartMoving OpportunityType -> name (Intrastate and Interstate are long-distance moves).
OPPORTUNITY_TYPE_NAMES: dict[int, str] = {
    OpportunityType.LOCAL: "Local",
    OpportunityType.INTRASTATE: "Long distance (same province)",
    OpportunityType.INTERSTATE: "Long distance (other province)",
}

#: SmartMoving PhoneType -> name.
PHONE_TYPE_NAMES: dict[int, str] = {
    PhoneType.MOBILE: "Mobile",
    PhoneType.HOME: "Home",
    PhoneType.OFFICE: "Office",
    PhoneType.OTHER: "Other",
}


#: SmartMoving lead status -> the CRM's lead stage; a lead naming an opportunity is CONVERTED whatever its status.
LEAD_STATUS_NAMES: dict[int, str] = {
    0: "NEW",
    1: "IN_PROGRESS",
    50: "BAD_LEAD",
}
LEAD_CONVERTED = "CONVERTED"
