"""A job leaving the pulled dates, end to end: the simulator changes it, two syncs, the audit and the view say why."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from lgm_pipeline.simulator import RunningSimulator
from lgm_pipeline.sync import run_sync
from lgm_pipeline.tenants import Tenant

LATER = 10  # days past today: beyond the window and the catch-up


def _one_job_booking(db: sa.Engine, tenant: Tenant, simulator: RunningSimulator, day: dt.date) -> dict:
    """A booked journey of ``day`` whose opportunity has no other job: moving it empties the opportunity's dates."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT * FROM {tenant.schema}.journeys WHERE service_date = :d AND status = 'BOOKED' ORDER BY id"
            ),
            {"d": day},
        ).mappings()
        for row in rows:
            opportunity = row["external_ids"]["smartmoving_opportunity_id"]
            if len(simulator.world.opportunity_detail(opportunity)["jobs"]) == 1:
                return {**row, "opportunity_id": opportunity}
    raise AssertionError(f"no single-job booking on {day}")


def _reschedule(simulator: RunningSimulator, row: dict, later: dt.date) -> None:
    simulator.world.reschedule_job(row["smartmoving_job_id"], later)


def _cancel(simulator: RunningSimulator, row: dict, later: dt.date) -> None:
    # Cancelled and taken off its date: the list no longer shows it; the details say cancelled.
    simulator.world.cancel_opportunity(row["opportunity_id"])
    simulator.world.reschedule_job(row["smartmoving_job_id"], later)


def _delete(simulator: RunningSimulator, row: dict, later: dt.date) -> None:
    simulator.world.delete_opportunity(row["opportunity_id"])


@pytest.mark.parametrize(
    ("change", "reason", "new_date_known"),
    [(_reschedule, "rescheduled", True), (_cancel, "cancelled", False), (_delete, "deleted", False)],
    ids=["rescheduled", "cancelled", "deleted"],
)
def test_a_job_leaving_the_window_is_audited_with_its_reason_and_listed_for_dispatch(
    defs,
    tenant: Tenant,
    instance,
    db: sa.Engine,
    window: list[dt.date],
    simulator: RunningSimulator,
    change: Callable[[RunningSimulator, dict, dt.date], None],
    reason: str,
    new_date_known: bool,
) -> None:
    today = window[0]
    later = today + dt.timedelta(days=LATER)
    assert run_sync(defs, tenant, instance).ok
    row = _one_job_booking(db, tenant, simulator, today)
    change(simulator, row, later)

    report = run_sync(defs, tenant, instance)
    assert report.ok, report
    # One detail call: the opportunity the list dropped (every other detail is reused from the cache).
    assert report.api_calls.get("opportunity", 0) == 1
    with db.connect() as conn:
        left = conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys WHERE id = :i"), {"i": row["id"]})
        assert left.scalar() == 0
        audit = conn.execute(
            sa.text(
                f"SELECT action, reason, new_service_date FROM {tenant.schema}.journey_audit "
                "WHERE journey_id = :i ORDER BY audit_id"
            ),
            {"i": row["id"]},
        ).all()
        assert [tuple(a) for a in audit] == [
            ("insert", None, None),
            ("delete", reason, later if new_date_known else None),
        ]
        # The view's "today" is each branch's: read it at noon of the tenant's today, as a dispatcher would.
        noon = dt.datetime.combine(today, dt.time(12), tzinfo=tenant.tz).isoformat()
        conn.execute(sa.text("SELECT set_config('lgm.clock', :t, false)"), {"t": noon})
        shown = conn.execute(
            sa.text(
                "SELECT job_number, customer_name, location_id, old_service_date, new_service_date, reason "
                f"FROM {tenant.schema}.journeys_moved_out WHERE journey_id = :i"
            ),
            {"i": row["id"]},
        ).all()
    assert [tuple(s) for s in shown] == [
        (
            row["job_number"],
            row["customer_name"],
            row["location_id"],
            today,
            later if new_date_known else None,
            reason,
        )
    ]

    # The next cycle costs nothing more: the journey is gone, so nothing is left to explain.
    again = run_sync(defs, tenant, instance)
    assert again.ok and again.api_calls.get("opportunity", 0) == 0
