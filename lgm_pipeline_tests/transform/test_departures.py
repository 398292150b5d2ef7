"""Why a job left its pulled dates, read from its opportunity's details (no API, no database)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from lgm_pipeline.smartmoving.enums import OpportunityStatus
from lgm_pipeline.transform.raw import departure_reason

DAY = dt.date(2026, 11, 25)
WINDOW = {DAY, DAY + dt.timedelta(days=1)}


def _detail(job_date: int | None, status: int = OpportunityStatus.BOOKED, job: str = "j1") -> dict[str, Any]:
    return {"id": "o1", "status": int(status), "jobs": [{"id": job, "jobDate": job_date}]}


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        (None, ("deleted", None)),  # SmartMoving answered 400
        (_detail(20261125, job="another"), ("deleted", None)),  # the job was removed from its opportunity
        (_detail(20261205), ("rescheduled", dt.date(2026, 12, 5))),
        (_detail(None), ("rescheduled", None)),  # undated ("TBD"): no new date to give
        (_detail(20261205, OpportunityStatus.CANCELLED), ("cancelled", None)),  # cancelled wins over the date
        (_detail(20261125, OpportunityStatus.LOST), ("cancelled", None)),
        (_detail(20261126), None),  # still on a pulled date: nothing explains why the list dropped it
    ],
    ids=["400", "job-removed", "later-date", "undated", "cancelled", "lost", "still-dated"],
)
def test_departure_reason(detail: dict[str, Any] | None, expected: tuple | None) -> None:
    assert departure_reason("j1", detail, WINDOW) == expected
