"""Materialization metadata shared by the assets: what an engineer wants to see in the UI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import dagster as dg
import pandas as pd

from lgm_pipeline.settings import cycle_period_minutes
from lgm_pipeline.tenants import Tenant


def cycles_per_day() -> int:
    """How many cycles a day each tenant runs (12 at the default 2-hour period): API budgets project with it."""
    return 24 * 60 // cycle_period_minutes()


def api_cost_metadata(tenant: Tenant, calls: Mapping[str, int], runs_per_day: int = 1) -> dict[str, dg.MetadataValue]:
    """Calls this run spent, and what a month of such runs (``runs_per_day``) would cost against the quota."""
    total = sum(calls.values())
    projected = total * runs_per_day * 30
    quota = tenant.smartmoving.monthly_call_quota
    return {
        "api_calls": dg.MetadataValue.int(total),
        "api_calls_by_endpoint": dg.MetadataValue.json(dict(sorted(calls.items()))),
        "projected_monthly_calls": dg.MetadataValue.int(projected),
        "monthly_quota": dg.MetadataValue.int(quota),
        "projected_quota_share": dg.MetadataValue.float(round(projected / quota, 3) if quota else 0.0),
    }


def preview(frame: pd.DataFrame, columns: list[str], rows: int = 5) -> dg.MetadataValue:
    shown = frame.loc[:, [c for c in columns if c in frame.columns]].head(rows)
    return dg.MetadataValue.md(shown.astype(str).to_markdown(index=False) if len(shown) else "_no rows_")


def per_branch(names: pd.Series) -> dg.MetadataValue:
    return dg.MetadataValue.json(dict(Counter(str(n) for n in names.fillna("(unknown)")).most_common()))
