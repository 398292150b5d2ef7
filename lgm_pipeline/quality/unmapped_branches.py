"""Jobs of SmartMoving branches the tenants file does not map: a date-level problem, found once per date.

Such a job belongs to no branch partition of ``journeys``; the ``branch_mapping`` rule quarantines
it, and this summary is what ``smartmoving_jobs``' ``branch_mapping`` check reports: which branch
names, how many jobs on each date, what share of the date's booked work.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from lgm_pipeline.transform.journeys import is_journey


@dataclass(frozen=True)
class UnmappedBranches:
    #: ISO date -> SmartMoving branch name -> booked jobs.
    by_date: dict[str, dict[str, int]]
    #: ISO date -> booked jobs of every branch (the share's denominator).
    booked_by_date: dict[str, int]
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return sum(sum(names.values()) for names in self.by_date.values())

    def worst_share(self) -> float:
        shares = [sum(n.values()) / self.booked_by_date[d] for d, n in self.by_date.items() if self.booked_by_date[d]]
        return max(shares, default=0.0)

    def names(self) -> list[str]:
        return sorted({name for names in self.by_date.values() for name in names})


def unmapped_branches(normalized: pd.DataFrame) -> UnmappedBranches:
    """From ``job_branches``' (or ``normalize_journeys``') rows of every branch: booked work whose branch maps
    to no location.

    A job of an unmapped branch was never stored as a journey, so "booked work" needs no existing ids.
    """
    work = normalized[is_journey(normalized, set())]
    dates = work["service_date"].map(lambda d: d.isoformat())
    booked = Counter(dates)
    stray = work[work["location_id"].isna()]
    by_date: dict[str, Counter[str]] = {}
    for day, name in zip(dates[stray.index], stray["branch_name"].fillna("(no branch)"), strict=True):
        by_date.setdefault(day, Counter())[name] += 1
    examples = [
        {"job_number": str(r.job_number), "branch_name": str(r.branch_name), "service_date": r.service_date.isoformat()}
        for r in stray.head(5).itertuples(index=False)
    ]
    return UnmappedBranches({d: dict(c) for d, c in sorted(by_date.items())}, dict(booked), examples)
