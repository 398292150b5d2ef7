"""Builders of SmartMoving-shaped payloads and raw frames for unit tests (the API's documented shapes)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pandas as pd

from lgm_pipeline.transform.raw import customers_frame, jobs_frame, opportunities_frame, opportunity_summaries

_ids = itertools.count(1)
CALGARY = "CALGARY 🇨🇦 - Let's Get Moving"
TORONTO = "TORONTO 🇨🇦 - Let's Get Moving"


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):06d}"


def job(day: dt.date, quote: int, n: int = 1, **overrides: Any) -> dict[str, Any]:
    base = {
        "id": _id("job"),
        "jobNumber": f"{quote}-{n}",
        "jobDate": int(day.strftime("%Y%m%d")),
        "type": 1,
        "confirmed": True,
        "jobAddresses": ["12 Elm St, Calgary, AB", "99 Oak Ave, Calgary, AB"],
        "estimatedCharges": [{"name": "Labour", "totalCost": 850.0}],
        "actualCharges": [],
    }
    return base | overrides


def opportunity(
    day: dt.date, *, branch: str = CALGARY, status: int = 4, jobs: list[dict[str, Any]] | None = None, **overrides: Any
) -> dict[str, Any]:
    quote = 240000 + next(_ids)
    customer = {
        "id": _id("cus"),
        "name": "Zoë O'Brien",
        "emailAddress": "zoe@example.com",
        "phoneNumber": "(403) 555-0123",
        "phoneType": 0,
    }
    base = {
        "id": _id("opp"),
        "quoteNumber": quote,
        "customer": customer,
        "branch": {"name": branch, "phoneNumber": "403-555-0000"},
        "serviceDate": int(day.strftime("%Y%m%d")),
        "status": status,
        "moveSize": {"name": "2 Bedroom", "description": "", "volume": 600},
        "estimatedTotal": {"subtotal": 1000.0, "taxableAmount": 1000.0, "tax": 50.0, "finalTotal": 1050.0},
        "jobs": jobs if jobs is not None else [job(day, quote)],
    }
    return base | overrides


def customer_for(opp: dict[str, Any]) -> dict[str, Any]:
    c = opp["customer"]
    return {
        "id": c["id"],
        "name": c["name"],
        "phoneNumber": c["phoneNumber"],
        "phoneType": 0,
        "emailAddress": c["emailAddress"],
        "address": "1 Main St",
        "secondaryPhoneNumbers": [],
        "opportunities": [
            {
                "id": opp["id"],
                "quoteNumber": str(opp["quoteNumber"]),
                "status": opp["status"],
                "jobs": [
                    {"id": j["id"], "jobNumber": j["jobNumber"], "serviceDate": j["jobDate"], "type": j["type"]}
                    for j in opp["jobs"]
                ],
            }
        ],
    }


def raw_frames(day: dt.date, opportunities: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(customers, opportunities, jobs) raw frames for one service date, as the raw assets build them."""
    fetched = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    customers = customers_frame([customer_for(o) for o in opportunities], day, fetched, "run-1")
    summaries = opportunity_summaries(customers)
    details = {o["id"]: o for o in opportunities}
    opps = opportunities_frame(details, summaries, dict.fromkeys(details, fetched), day, "run-1")
    return customers, opps, jobs_frame(opps, day, "run-1")
