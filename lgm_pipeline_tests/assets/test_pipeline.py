"""The pipeline end to end against the simulator: raw pull, journeys per branch, checks, reruns."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import sqlalchemy as sa

from lgm_pipeline.assets.factory import tenant_assets
from lgm_pipeline.domain.mappings import STATUS_MAPPING
from lgm_pipeline.naming import journey_partition_key
from lgm_pipeline.sync import run_sync
from lgm_pipeline.tenants import Tenant


def _journeys(db: sa.Engine, tenant: Tenant, where: str = "TRUE", **params: object) -> list[dict]:
    with db.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM {tenant.schema}.journeys WHERE {where}"), params)
        return [dict(r._mapping) for r in rows]


def test_full_window_fills_every_branch_and_date(defs, tenant, instance, db, window, simulator) -> None:
    report = run_sync(defs, tenant, instance)
    assert report.ok, report
    assert len(report.branches) == len(tenant.branches) * 2
    rows = _journeys(db, tenant)
    assert {r["service_date"] for r in rows} == set(window)
    assert {r["location_id"] for r in rows} == set(tenant.location_ids)
    assert sum(b.rows for b in report.branches) == len(rows)
    # every job the simulator lists for the window is either a journey or quarantined, never lost
    with db.connect() as conn:
        quarantined = conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys_quarantine")).scalar()
    booked_jobs = {
        j["id"]
        for day in window
        for oid in simulator.world.opportunity_ids_on(day)
        if STATUS_MAPPING[(detail := simulator.world.opportunity_detail(oid))["status"]].creates_journey
        for j in detail["jobs"]
        if j["jobDate"] is not None and dt.datetime.strptime(str(j["jobDate"]), "%Y%m%d").date() == day
    }
    assert len(rows) + quarantined == len(booked_jobs)
    # leads and never-booked work are not journeys
    assert {r["status"] for r in rows} <= {"BOOKED", "COMPLETED", "CLOSED"}
    # the list is pulled once for both dates, details at most once per opportunity: never per branch
    assert report.api_calls["customers"] == 1
    assert report.api_calls["opportunity"] <= len(
        {o for day in window for o in simulator.world.opportunity_ids_on(day)}
    )


def test_one_branch_rematerialization_touches_only_that_branch(defs, tenant, instance, db, window, simulator) -> None:
    today = window[0]
    assert run_sync(defs, tenant, instance, dates=[today]).ok
    before = {r["id"]: r for r in _journeys(db, tenant)}
    calgary, toronto = "loc_lgm_calgary_001", "loc_lgm_toronto_001"
    victim = next(r for r in before.values() if r["location_id"] == toronto)
    other = next(r for r in before.values() if r["location_id"] == calgary)
    opportunity_id = victim["external_ids"]["smartmoving_opportunity_id"]
    other_opportunity = other["external_ids"]["smartmoving_opportunity_id"]
    simulator.world.rename_customer(victim["external_ids"]["smartmoving_customer_id"], "Renamed Toronto")
    simulator.world.rename_customer(other["external_ids"]["smartmoving_customer_id"], "Renamed Calgary")

    raw = [a for a in tenant_assets(tenant) if all(k.path[-1].startswith("smartmoving_") for k in a.keys)]
    assert dg.materialize(
        raw,
        partition_key=today.isoformat(),
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {"lgm__smartmoving_opportunities": {"config": {"force_refresh": True}}}},
    ).success
    result = dg.materialize(
        tenant_assets(tenant),
        partition_key=journey_partition_key(today.isoformat(), toronto),
        instance=instance,
        resources=defs.resources,
        selection=[dg.AssetKey([tenant.key, "journeys"])],
    )
    assert result.success
    after = {r["id"]: r for r in _journeys(db, tenant)}
    assert after[victim["id"]]["customer_name"] == "Renamed Toronto"
    assert after[other["id"]]["customer_name"] == other["customer_name"]  # Calgary not rebuilt yet
    untouched = {k: v for k, v in before.items() if v["location_id"] != toronto}
    assert {k: after[k] for k in untouched} == untouched
    assert opportunity_id != other_opportunity


def test_rescheduled_job_ends_up_once_under_tomorrow(defs, tenant, instance, db, window, simulator) -> None:
    today, tomorrow = window
    assert run_sync(defs, tenant, instance).ok
    row = next(r for r in _journeys(db, tenant, "service_date = :d", d=today))
    simulator.world.reschedule_job(row["smartmoving_job_id"], tomorrow)
    assert run_sync(defs, tenant, instance).ok
    moved = _journeys(db, tenant, "smartmoving_job_id = :j", j=row["smartmoving_job_id"])
    assert len(moved) == 1 and moved[0]["service_date"] == tomorrow and moved[0]["id"] == row["id"]


def test_cancelled_job_leaves_the_active_set(defs, tenant, instance, db, window, simulator) -> None:
    assert run_sync(defs, tenant, instance).ok
    with db.connect() as conn:
        active = conn.execute(sa.text(f"SELECT id, external_ids FROM {tenant.schema}.journeys_active")).all()
    victim_id, external = active[0]
    simulator.world.cancel_opportunity(external["smartmoving_opportunity_id"])
    assert run_sync(defs, tenant, instance).ok
    with db.connect() as conn:
        still_active = conn.execute(sa.text(f"SELECT id FROM {tenant.schema}.journeys_active")).scalars().all()
        status = conn.execute(sa.text(f"SELECT status FROM {tenant.schema}.journeys WHERE id = :i"), {"i": victim_id})
        assert status.scalar() == "CANCELLED"
    assert victim_id not in still_active


def test_second_identical_cycle_reuses_details(defs, tenant, instance, db, simulator) -> None:
    cold = run_sync(defs, tenant, instance)
    warm = run_sync(defs, tenant, instance)
    assert cold.ok and warm.ok
    assert cold.api_calls["opportunity"] > 20
    assert warm.api_calls.get("opportunity", 0) == 0
    assert warm.api_calls["customers"] == 1
    # and the rerun changed nothing
    with db.connect() as conn:
        updates = conn.execute(
            sa.text(f"SELECT count(*) FROM {tenant.schema}.journey_audit WHERE action <> 'insert'")
        ).scalar()
    assert updates == 0


def test_changed_summary_refetches_only_that_opportunity(defs, tenant, instance, simulator, window) -> None:
    assert run_sync(defs, tenant, instance).ok
    opportunity_id = simulator.world.opportunity_ids_on(window[0])[0]
    simulator.world.cancel_opportunity(opportunity_id)
    warm = run_sync(defs, tenant, instance)
    assert warm.ok
    assert 1 <= warm.api_calls.get("opportunity", 0) <= 2  # listed on one or both dates


def test_rules_become_check_results(defs, tenant, instance, db, window, simulator) -> None:
    today = window[0]
    calgary = "CALGARY 🇨🇦 - Let's Get Moving"
    bad_status = simulator.world.add_booking(today, calgary, 4)
    bad_type = simulator.world.add_booking(today, calgary, 4)
    no_email = simulator.world.add_booking(today, calgary, 4)
    simulator.world.patch(bad_status["opportunity_id"], opportunity={"status": 99})
    simulator.world.patch(bad_type["opportunity_id"], job={"id": bad_type["job_ids"][0], "type": 77})
    simulator.world.patch(no_email["opportunity_id"], customer={"emailAddress": None})
    report = run_sync(defs, tenant, instance, dates=[today], location_ids=["loc_lgm_calgary_001"])
    assert report.ok
    [branch] = report.branches
    assert branch.quarantined >= 1
    with db.connect() as conn:
        reasons = dict(
            conn.execute(sa.text(f"SELECT smartmoving_job_id, reasons FROM {tenant.schema}.journeys_quarantine")).all()
        )
    # a job type SmartMoving added keeps the booked job on the board, with a warning
    assert bad_type["job_ids"][0] not in reasons
    [unknown_type] = _journeys(db, tenant, "smartmoving_job_id = :j", j=bad_type["job_ids"][0])
    assert unknown_type["job_type_name"] == "Unknown (77)"
    status_job = simulator.world.opportunity_detail(bad_status["opportunity_id"])["jobs"][0]["id"]
    assert {r["rule"] for r in reasons[status_job]} == {"status_mapping"}
    [flagged] = _journeys(db, tenant, "smartmoving_job_id = :j", j=no_email["job_ids"][0])
    assert [f["column"] for f in flagged["dq_flags"]] == ["customer_email"]

    assert {"status_mapping", "job_type_known", "customer_contact"} <= set(branch.failed_checks)
    assert "financials" not in branch.failed_checks


def test_contact_change_shows_next_cycle_without_refetching_details(defs, tenant, instance, db, simulator) -> None:
    assert run_sync(defs, tenant, instance).ok
    row = _journeys(db, tenant)[0]
    simulator.world.rename_customer(row["external_ids"]["smartmoving_customer_id"], "Siobhán Ní Bhriain")
    warm = run_sync(defs, tenant, instance)
    assert warm.ok and warm.api_calls.get("opportunity", 0) == 0
    [renamed] = _journeys(db, tenant, "id = :i", i=row["id"])
    assert renamed["customer_name"] == "Siobhán Ní Bhriain"
    with db.connect() as conn:
        audit = conn.execute(
            sa.text(
                f"SELECT changed_columns FROM {tenant.schema}.journey_audit WHERE journey_id = :i AND action = 'update'"
            ),
            {"i": row["id"]},
        ).scalar_one()
    assert "customer_name" in audit


def test_quarantine_share_over_the_limit_turns_the_check_red(defs, tenant, instance, window, simulator) -> None:
    today = window[0]
    bad = simulator.world.add_booking(today, "CALGARY 🇨🇦 - Let's Get Moving", 4)
    simulator.world.patch(bad["opportunity_id"], opportunity={"status": 99})
    assert run_sync(defs, tenant, instance, dates=[today], location_ids=["loc_lgm_calgary_001"]).ok
    key = journey_partition_key(today.isoformat(), "loc_lgm_calgary_001")

    def status_check(max_share: float) -> dg.AssetCheckEvaluation:
        result = dg.materialize(
            tenant_assets(tenant),
            partition_key=key,
            instance=instance,
            resources=defs.resources,
            selection=[dg.AssetKey([tenant.key, "journeys"])],
            run_config={"ops": {"lgm__journeys": {"config": {"max_quarantine_share": max_share}}}},
        )
        [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "status_mapping"]
        return evaluation

    tolerated, exceeded = status_check(0.5), status_check(0.0)
    assert not tolerated.passed and tolerated.severity == dg.AssetCheckSeverity.WARN
    assert not exceeded.passed and exceeded.severity == dg.AssetCheckSeverity.ERROR
    assert exceeded.metadata["partition"].value == f"{today.isoformat()} / loc_lgm_calgary_001"


def test_an_automation_that_cannot_be_evaluated_is_reported_after_the_pull(
    defs, tenant, instance, window, simulator, monkeypatch
) -> None:
    import lgm_pipeline.sync as sync

    def broken(**_: object) -> None:
        raise RuntimeError("could not reach the event log\nsecond line")

    monkeypatch.setattr(sync.dg, "evaluate_automation_conditions", broken)
    report = run_sync(defs, tenant, instance)
    assert report.pulls and all(p.success for p in report.pulls)  # the pull stands
    assert not report.branches and report.outcome == "failed"
    assert report.journeys_failure == "the journeys automation could not be evaluated: could not reach the event log"
    assert "journeys not rebuilt (the daemon's next tick does): FAILED" in sync.format_report(report)
