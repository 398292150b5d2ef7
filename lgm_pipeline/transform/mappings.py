"""SmartMoving codes -> CRM vocabulary. The one table for each mapping; docs and checks read these.

CRM journey stages are MORNING_PREP, EN_ROUTE, ONSITE, COMPLETED, AUDITED (the truck's day) plus
CANCELLED and LOST. SmartMoving knows nothing of the truck's progress during the day, so the pipeline
only ever produces MORNING_PREP for work still ahead; EN_ROUTE and ONSITE are set by the CRM's
field users, never by a sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lgm_pipeline.smartmoving.enums import CUSTOM_JOB_TYPES, JobType, OpportunityStatus


class JourneyStage(StrEnum):
    MORNING_PREP = "MORNING_PREP"
    EN_ROUTE = "EN_ROUTE"
    ONSITE = "ONSITE"
    COMPLETED = "COMPLETED"
    AUDITED = "AUDITED"
    CANCELLED = "CANCELLED"
    LOST = "LOST"


#: Stages after which a journey no longer needs a truck (excluded from ``journeys_active``).
INACTIVE_STAGES: frozenset[JourneyStage] = frozenset(
    {JourneyStage.COMPLETED, JourneyStage.AUDITED, JourneyStage.CANCELLED, JourneyStage.LOST}
)


@dataclass(frozen=True)
class StatusMapping:
    smartmoving_name: str
    stage: JourneyStage
    booked: bool  # the customer has committed: estimated cost must be known


#: SmartMoving OpportunityStatus -> CRM journey stage.
STATUS_MAPPING: dict[int, StatusMapping] = {
    OpportunityStatus.NEW_LEAD: StatusMapping("NewLead", JourneyStage.MORNING_PREP, booked=False),
    OpportunityStatus.LEAD_IN_PROGRESS: StatusMapping("LeadInProgress", JourneyStage.MORNING_PREP, booked=False),
    OpportunityStatus.OPPORTUNITY: StatusMapping("Opportunity", JourneyStage.MORNING_PREP, booked=False),
    OpportunityStatus.BOOKED: StatusMapping("Booked", JourneyStage.MORNING_PREP, booked=True),
    OpportunityStatus.COMPLETED: StatusMapping("Completed", JourneyStage.COMPLETED, booked=True),
    OpportunityStatus.CLOSED: StatusMapping("Closed", JourneyStage.AUDITED, booked=True),
    OpportunityStatus.CANCELLED: StatusMapping("Cancelled", JourneyStage.CANCELLED, booked=False),
    OpportunityStatus.LOST: StatusMapping("Lost", JourneyStage.LOST, booked=False),
    OpportunityStatus.BAD_LEAD: StatusMapping("BadLead", JourneyStage.LOST, booked=False),
}

#: SmartMoving JobType -> display name.
JOB_TYPE_NAMES: dict[int, str] = {
    JobType.MOVING: "Moving",
    JobType.PACKING: "Packing",
    JobType.MOVING_AND_PACKING: "Moving and Packing",
    JobType.LOAD_ONLY: "Load Only",
    JobType.UNLOAD_ONLY: "Unload Only",
    JobType.COMMERCIAL: "Commercial",
    JobType.STORAGE_IN_BOUND: "Storage In-Bound",
    JobType.STORAGE_OUT_BOUND: "Storage Out-Bound",
    JobType.INNER_HOUSE: "Inner House",
    JobType.JUNK_REMOVAL: "Junk Removal",
    JobType.LABOR_ONLY: "Labor Only",
    **{code: f"Custom{code - 100:02d}" for code in CUSTOM_JOB_TYPES},
}
