"""Property-based: any payload the API schema allows is normalized or quarantined, never raises.

The strategies follow the SmartMoving shapes (customers with opportunity summaries, opportunity
details with jobs) with every field optional or null and any JSON scalar where a field is typed
loosely in practice: arbitrary text, ints of any size, floats including nan and inf, odd dates.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lgm_pipeline.quality.rules import validate_journeys
from lgm_pipeline.tenants import Tenant, load_tenants
from lgm_pipeline.transform.journeys import normalize_journeys
from lgm_pipeline.transform.raw import customers_frame, jobs_frame, opportunities_frame, opportunity_summaries

DAY = dt.date(2026, 11, 25)
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
TENANT: Tenant = load_tenants()[0]

text = st.text(max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
)
odd_dates = st.one_of(
    st.just(20261125),  # the partition's date, so many jobs reach normalization
    st.integers(min_value=0, max_value=99_999_999),
    st.sampled_from([19000101, 99991231, 20261399, 20260230, -20261125]),
    st.none(),
    text,
    st.floats(allow_nan=True, allow_infinity=True),
)
ids = st.one_of(st.uuids().map(str), st.sampled_from(["a", "b", "c"]))  # small pool: collisions happen
branch_names = st.one_of(
    st.sampled_from([b.smartmoving_branch_name for b in TENANT.branches]), text, st.none(), st.integers()
)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict where each field may be absent."""
    return st.fixed_dictionaries({}, optional=fields)


job = st.builds(
    lambda jid, rest: {"id": jid, **rest},
    ids,
    optional(
        jobNumber=st.one_of(text, st.integers(), st.none()),
        jobDate=odd_dates,
        type=scalars,
        confirmed=scalars,
        jobAddresses=st.one_of(st.none(), st.lists(st.one_of(text, st.none(), st.integers()), max_size=3)),
        estimatedCharges=st.one_of(st.none(), st.lists(st.dictionaries(text, scalars, max_size=2), max_size=2)),
    ),
)
opportunity_customer = optional(name=scalars, phoneNumber=scalars, emailAddress=scalars)
opportunity_detail = optional(
    status=scalars,
    quoteNumber=scalars,
    serviceDate=odd_dates,
    branch=st.one_of(st.none(), optional(name=branch_names)),
    customer=st.one_of(st.none(), opportunity_customer),
    estimatedTotal=st.one_of(st.none(), optional(finalTotal=scalars)),
    moveSize=st.one_of(st.none(), text, optional(name=scalars)),
    jobs=st.lists(job, max_size=3),
)
summary = st.builds(
    lambda oid, rest: {"id": oid, **rest},
    st.one_of(ids, st.none()),
    optional(status=scalars, quoteNumber=scalars, jobs=st.lists(optional(id=ids, serviceDate=odd_dates), max_size=2)),
)
customer = st.builds(
    lambda cid, rest: {"id": cid, **rest},
    ids,
    optional(
        name=scalars,
        phoneNumber=scalars,
        emailAddress=scalars,
        address=scalars,
        opportunities=st.one_of(st.none(), st.lists(summary, max_size=3)),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(customers=st.lists(customer, max_size=6), details=st.lists(opportunity_detail, max_size=6))
def test_any_payload_is_normalized_or_quarantined(customers: list[dict], details: list[dict]) -> None:
    # The client guarantees ids are present and unique per customer (it refuses pages without).
    unique = list({c["id"]: c for c in customers}.values())
    frame = customers_frame(unique, DAY, NOW, "run")
    assert len(frame) == len(unique)
    summaries = opportunity_summaries(frame)
    assert set(summaries) <= {str(o["id"]) for c in unique for o in c.get("opportunities") or [] if o["id"] is not None}

    # Details for the listed opportunities (as the API would answer: one per listed id).
    fetched = {oid: {**detail, "id": oid} for oid, detail in zip(summaries, details, strict=False)}
    opportunities = opportunities_frame(fetched, summaries, dict.fromkeys(fetched, NOW), DAY, "run")
    assert len(opportunities) == len(fetched)
    jobs = jobs_frame(opportunities, DAY, "run")
    # Every job dated on the partition's day is one row (a job with the same id twice is two rows).
    assert len(jobs) <= sum(len(d.get("jobs") or []) for d in fetched.values())

    journeys = normalize_journeys(TENANT, frame, opportunities, jobs, synced_at=NOW, run_id="run")
    assert len(journeys) == len(jobs)
    outcome = validate_journeys(journeys, TENANT)
    assert len(outcome.frame) == len(journeys)  # nothing dropped: stored or quarantined
    reasons = outcome.frame["quarantine_reasons"]
    assert all(r is None or (isinstance(r, list) and r) for r in reasons)
    # A journey with no branch we know, or no CRM stage, is never stored as valid.
    valid = outcome.frame[reasons.isna()]
    assert valid["location_id"].isin(TENANT.location_ids).all()
    assert valid["status"].notna().all()


@settings(max_examples=200, deadline=None)
@given(value=scalars)
def test_money_is_a_storable_amount_none_or_named_unreadable(value: Any) -> None:
    from lgm_pipeline.smartmoving.shapes import UnreadableValue
    from lgm_pipeline.storage.tables import MAX_MONEY
    from lgm_pipeline.transform.journeys import read_amount

    try:
        amount = read_amount(value, "totalCost")
    except UnreadableValue as error:
        assert error.reason.startswith("totalCost: unreadable ")
        return
    assert amount is None or (
        isinstance(amount, Decimal)
        and amount.is_finite()
        and abs(amount) < MAX_MONEY
        and amount == amount.quantize(Decimal("0.01"))
    )
