"""Leads end to end: ``lgm sync`` against the simulator fills ``leads`` and ``leads_recent`` answers."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import sqlalchemy as sa

from lgm_pipeline.assets.automation import raw_job_name
from lgm_pipeline.assets.leads import lead_pull_dates
from lgm_pipeline.simulator import RunningSimulator
from lgm_pipeline.sync import run_sync
from lgm_pipeline.tenants import Tenant
from lgm_pipeline_tests.assets.conftest import db, defs, instance, simulator, tenant, window  # noqa: F401

SQL = "Robert'); DROP TABLE leads;--"


def _count(db: sa.Engine, sql: str, **params: object) -> int:  # noqa: F811
    with db.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


def _leads_created_on(simulator: RunningSimulator, tenant: Tenant, dates: list[dt.date]) -> set[str]:  # noqa: F811
    """The simulator's leads created on ``dates`` in the tenant's time (the API files them by UTC date, so
    the UTC days around them are searched too)."""
    world = simulator.world
    around = [dates[0] - dt.timedelta(days=1), *dates, dates[-1] + dt.timedelta(days=1)]
    found: set[str] = set()
    for lead_id in {i for day in around for i in world.lead_ids_on(day)}:
        created = dt.datetime.fromisoformat(str(world.leads[lead_id]["createdAtUtc"]).replace("Z", "+00:00"))
        if created.astimezone(tenant.tz).date() in dates:
            found.add(lead_id)
    return found


def test_sync_fills_leads_and_the_recent_view(defs, tenant, instance, db, simulator) -> None:  # noqa: F811
    started = dt.datetime.now(dt.UTC)
    report = run_sync(defs, tenant, instance, location_ids=["loc_lgm_calgary_001"])
    assert report.ok, report
    # the leads ride in the window's raw run: one pull run, then one journeys run for the branch's two dates
    # (Dagster's single-run backfill groups a one-branch subset over its dates)
    runs = instance.get_runs(dg.RunsFilter(created_after=started))
    assert len(runs) == 2
    assert [r.job_name for r in runs].count(raw_job_name(tenant)) == 1
    dates = lead_pull_dates(tenant, report.dates)
    assert dates == [tenant.today() - dt.timedelta(days=1), tenant.today()]
    created_locally = _leads_created_on(simulator, tenant, dates)
    stored = _count(db, f"SELECT count(*) FROM {tenant.schema}.leads")
    held = _count(db, f"SELECT count(*) FROM {tenant.schema}.leads_quarantine")
    assert stored > 0 and report.leads == stored
    # nothing lost: every lead SmartMoving created yesterday or today (tenant time) is a row or held back
    assert stored + held == len(created_locally)
    assert report.api_calls["leads"] == 1  # one date-range query for both days
    recent = _count(db, f"SELECT count(*) FROM {tenant.schema}.leads_recent")
    assert 0 < recent <= stored
    # a second cycle with nothing new changes nothing
    again = run_sync(defs, tenant, instance, location_ids=["loc_lgm_calgary_001"])
    assert again.ok
    assert _count(db, f"SELECT count(*) FROM {tenant.schema}.lead_audit WHERE action <> 'insert'") == 0


def test_hostile_and_converted_leads(defs, tenant, instance, db, simulator) -> None:  # noqa: F811
    today = tenant.today()
    [first, second, third, fourth] = sorted(simulator.world.lead_ids_on(today))[:4]
    simulator.world.patch_lead(first, {"name": SQL})
    simulator.world.patch_lead(second, {"phoneNumber": None, "emailAddress": "   "})
    simulator.world.patch_lead(third, {"branch": {"name": "ATLANTIS 🌊 - Let's Get Moving"}, "moveDate": "soon"})
    assert run_sync(defs, tenant, instance, location_ids=["loc_lgm_calgary_001"]).ok
    with db.connect() as conn:
        rows = {
            r.smartmoving_lead_id: r
            for r in conn.execute(
                sa.text(f"SELECT * FROM {tenant.schema}.leads WHERE smartmoving_lead_id = ANY(:ids)"),
                {"ids": [first, second, third, fourth]},
            )
        }
        held = dict(
            conn.execute(sa.text(f"SELECT smartmoving_lead_id, reasons FROM {tenant.schema}.leads_quarantine")).all()
        )
    assert rows[first].name == SQL  # text is data
    assert second in held and held[second][0]["rule"] == "lead_contact"
    assert rows[third].location_id is None and rows[third].move_date is None
    assert "lead_branch_mapping" in {f["rule"] for f in rows[third].dq_flags}

    opportunity = simulator.world.convert_lead(fourth)
    assert run_sync(defs, tenant, instance, location_ids=["loc_lgm_calgary_001"]).ok
    with db.connect() as conn:
        status, converted = conn.execute(
            sa.text(
                f"SELECT status, converted_opportunity_id FROM {tenant.schema}.leads WHERE smartmoving_lead_id = :i"
            ),
            {"i": fourth},
        ).one()
        in_recent = conn.execute(
            sa.text(f"SELECT count(*) FROM {tenant.schema}.leads_recent WHERE smartmoving_lead_id = :i"), {"i": fourth}
        ).scalar()
    assert (status, converted, in_recent) == ("CONVERTED", opportunity, 0)


def test_leads_that_fail_leave_the_pull_and_journeys_done(defs, tenant, instance, db, monkeypatch) -> None:  # noqa: F811
    """The leads share the raw run: their failure is theirs alone, reported apart, and spends no later call."""
    from lgm_pipeline.smartmoving.client import SmartMovingClient
    from lgm_pipeline.smartmoving.errors import AuthorizationError

    def refused(self: SmartMovingClient, *args: object) -> list[dict]:
        raise AuthorizationError("SmartMoving answered 403 Forbidden for /api/leads")

    monkeypatch.setattr(SmartMovingClient, "list_leads", refused)
    report = run_sync(defs, tenant, instance, location_ids=["loc_lgm_calgary_001"])
    assert report.leads_failure and "403" in report.leads_failure
    assert not report.raw_failures and all(pull.success for pull in report.pulls)
    assert {b.service_date for b in report.branches if b.success} == set(report.dates)
    assert _count(db, f"SELECT count(*) FROM {tenant.schema}.journeys") > 0
    assert not report.ok  # the operator hears of it: exit code and a line of its own
