"""Checks point at the right place: an unmapped SmartMoving branch is one date-level finding, a branch
partition's checks judge its own rows, severities mean WARN (quarantined, under the share) or ERROR.

Raw rows are written through the real IO manager into a real PostgreSQL; the raw assets' and the
journeys asset's own code then run with ``dg.materialize`` (no API: the raw assets' inputs are in the
database already, only ``smartmoving_jobs`` is recomputed from the stored opportunities).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from lgm_pipeline.assets.automation import partition_range_tags
from lgm_pipeline.assets.factory import tenant_assets
from lgm_pipeline.assets.journeys import BRANCH_VOLUME_CHECK, USUAL_VOLUME, volume_check
from lgm_pipeline.naming import IO_MANAGER_KEY, POSTGRES_RESOURCE_KEY, SMARTMOVING_RESOURCE_KEY, journey_partition_key
from lgm_pipeline.smartmoving.resource import SmartMovingAccount, SmartMovingResource
from lgm_pipeline.status import format_status, tenant_status
from lgm_pipeline.storage.io_manager import PostgresIOManager
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant
from lgm_pipeline_tests import payloads
from lgm_pipeline_tests.storage.conftest import Writer

DAY = dt.date(2026, 11, 10)
KELOWNA = "KELOWNA 🇨🇦 - Let's Get Moving"
CALGARY, TORONTO = "loc_lgm_calgary_001", "loc_lgm_toronto_001"


def _write_raw(writer: Writer, opportunities: list[dict[str, Any]]) -> None:
    customers, opps, jobs = payloads.raw_frames(DAY, opportunities)
    writer.raw("smartmoving_customers", customers, day=DAY)
    writer.raw("smartmoving_opportunities", opps, day=DAY)
    writer.raw("smartmoving_jobs", jobs, day=DAY)


def _day(unmapped: int, clean_per_branch: int = 4) -> list[dict[str, Any]]:
    mapped = [
        payloads.opportunity(DAY, branch=name)
        for name in (payloads.CALGARY, payloads.TORONTO)
        for _ in range(clean_per_branch)
    ]
    return mapped + [payloads.opportunity(DAY, branch=KELOWNA) for _ in range(unmapped)]


def _materialize(
    tenant: Tenant, postgres: PostgresResource, io_manager: PostgresIOManager, name: str, key: str | list[str]
) -> dg.ExecuteInProcessResult:
    """One partition (``key``), or the range from the first to the last of ``key`` in one run."""
    return dg.materialize(
        tenant_assets(tenant),
        partition_key=key if isinstance(key, str) else None,
        tags=None if isinstance(key, str) else partition_range_tags(key),
        selection=[tenant.names.asset_key(name)],
        resources={
            POSTGRES_RESOURCE_KEY: postgres,
            IO_MANAGER_KEY: io_manager,
            # required by the raw assets' definitions; none selected here calls the API
            SMARTMOVING_RESOURCE_KEY: SmartMovingResource.for_accounts(
                {tenant.key: SmartMovingAccount(base_url_env="UNUSED_URL", api_key_env="UNUSED_KEY")}
            ),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture
def run(tenant: Tenant, postgres: PostgresResource, io_manager: PostgresIOManager):
    return lambda name, key: _materialize(tenant, postgres, io_manager, name, key)


def test_an_unmapped_branch_is_one_date_level_warning_not_a_failure_of_every_branch(
    writer: Writer, run, tenant: Tenant, engine: sa.Engine
) -> None:
    _write_raw(writer, _day(unmapped=1, clean_per_branch=10))

    jobs = _checks(run("smartmoving_jobs", DAY.isoformat()))["branch_mapping"]
    assert not jobs.passed and jobs.severity == dg.AssetCheckSeverity.WARN  # 1 of 21 jobs: under 5 %
    assert "KELOWNA" in (jobs.description or "")
    assert jobs.metadata["by_date"].value == {DAY.isoformat(): {KELOWNA: 1}}

    partitions = {}
    for branch in (CALGARY, TORONTO):
        result = run("journeys", str(journey_partition_key(DAY.isoformat(), branch)))
        partitions[branch] = _checks(result)
    for checks in partitions.values():
        assert "branch_mapping" not in checks  # not the branch partitions' business
        assert all(e.passed for e in checks.values()), {n: e.metadata for n, e in checks.items() if not e.passed}
        assert checks["customer_contact"].metadata["rows_checked"].value == 10  # its own rows only

    with engine.connect() as conn:
        held = conn.execute(
            sa.text("SELECT count(*) FROM tenant_lgm.journeys_quarantine WHERE location_id IS NULL")
        ).scalar()
        runs = dict(
            conn.execute(
                sa.text(
                    "SELECT location_id, quarantined FROM tenant_lgm.sync_runs "
                    "WHERE asset = 'journeys' AND service_date = :d"
                ),
                {"d": DAY},
            ).all()
        )
    assert held == 1  # kept once, with its reasons, whatever partition wrote it last
    assert runs == {CALGARY: 0, TORONTO: 0}  # not counted 6 times over in the branches
    status = format_status(tenant_status(tenant))
    calgary = _status_line(status, CALGARY)
    assert " 0/0 " in calgary  # the checks warn/error column


def test_crossing_the_quarantine_share_turns_the_date_level_check_to_error(writer: Writer, run) -> None:
    _write_raw(writer, _day(unmapped=2, clean_per_branch=4))  # 2 of 10 booked jobs
    jobs = _checks(run("smartmoving_jobs", DAY.isoformat()))["branch_mapping"]
    assert not jobs.passed and jobs.severity == dg.AssetCheckSeverity.ERROR
    assert jobs.metadata["worst_date_share"].value == pytest.approx(0.2)


def test_a_clean_date_shows_every_check_green(writer: Writer, run, tenant: Tenant) -> None:
    _write_raw(writer, _day(unmapped=0))
    assert all(e.passed for e in _checks(run("smartmoving_jobs", DAY.isoformat())).values())
    result = run("journeys", str(journey_partition_key(DAY.isoformat(), CALGARY)))
    checks = _checks(result)
    assert set(checks) == {spec.name for spec in _journeys_check_specs(tenant)} - {"journeys_freshness"}
    assert all(e.passed for e in checks.values())
    [materialization] = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    [summary] = metadata["by_partition"].value.values()
    assert (summary["checks_warned"], summary["checks_failed"], summary["failed_checks"]) == (0, 0, [])


def test_a_quarantined_row_warns_in_its_own_partition_only_and_lgm_status_counts_it(
    writer: Writer, run, tenant: Tenant
) -> None:
    bad = payloads.opportunity(DAY, branch=payloads.CALGARY, status=99)  # a status nobody maps: quarantined
    _write_raw(writer, [*_day(unmapped=0, clean_per_branch=30), bad])
    calgary = _checks(run("journeys", str(journey_partition_key(DAY.isoformat(), CALGARY))))
    toronto = _checks(run("journeys", str(journey_partition_key(DAY.isoformat(), TORONTO))))
    assert not calgary["status_mapping"].passed and calgary["status_mapping"].severity == dg.AssetCheckSeverity.WARN
    assert all(e.passed for e in toronto.values())
    status = format_status(tenant_status(tenant))
    assert " 1/0 " in _status_line(status, CALGARY)
    assert " 0/0 " in _status_line(status, TORONTO)


def test_one_run_over_both_branches_keeps_each_partitions_findings_apart(writer: Writer, run, tenant: Tenant) -> None:
    bad = payloads.opportunity(DAY, branch=payloads.CALGARY, status=99)
    _write_raw(writer, [*_day(unmapped=0, clean_per_branch=30), bad])
    # west to east, Calgary to Toronto: Calgary, Edmonton, Winnipeg and Toronto in one run
    west_to_east = tenant.location_ids_west_to_east
    branches = west_to_east[west_to_east.index(CALGARY) : west_to_east.index(TORONTO) + 1]
    keys = [str(journey_partition_key(DAY.isoformat(), b)) for b in branches]
    result = run("journeys", keys)
    assert result.success
    assert len(keys) == 4
    assert sorted(m.materialization.partition for m in result.get_asset_materialization_events()) == sorted(keys)
    # one result per check for the run (Dagster's rule), failing where one partition failed, naming it
    status_mapping = _checks(result)["status_mapping"]
    assert not status_mapping.passed and status_mapping.severity == dg.AssetCheckSeverity.WARN
    assert list(status_mapping.metadata["failing_partitions"].value) == [f"{DAY} / {CALGARY}"]
    assert status_mapping.metadata["partitions_checked"].value == 4
    assert all(e.passed for name, e in _checks(result).items() if name != "status_mapping")
    # each partition's own record: lgm status counts the warning against Calgary only
    status = format_status(tenant_status(tenant))
    assert " 1/0 " in _status_line(status, CALGARY)
    assert " 0/0 " in _status_line(status, TORONTO)


def _status_line(status: str, branch: str) -> str:
    return next(line for line in status.splitlines() if DAY.isoformat() in line and branch in line)


def _journeys_check_specs(tenant: Tenant) -> list[dg.AssetCheckSpec]:
    [journeys] = [a for a in tenant_assets(tenant) if tenant.names.asset_key("journeys") in a.keys]
    return list(journeys.check_specs)


@pytest.mark.parametrize(
    ("journeys", "history", "passed"),
    [
        (0, [20, 22, 18, 25], False),  # a branch that usually has ~20 jobs shows none: ERROR
        (0, [2, 1, 3], True),  # a quiet branch
        (0, [30], True),  # one week is no pattern yet
        (0, [], True),  # a new tenant
        (3, [20, 22, 18], True),  # few, but not none: the rules' checks speak for the rows
        (0, [USUAL_VOLUME, USUAL_VOLUME], False),
    ],
)
def test_volume_check_is_an_error_only_for_an_empty_day_of_a_busy_branch(
    journeys: int, history: list[int], passed: bool
) -> None:
    result = volume_check(journeys, history, "2026-11-10 / loc_lgm_calgary_001")
    assert result.check_name == BRANCH_VOLUME_CHECK
    assert result.passed is passed
    assert result.severity == dg.AssetCheckSeverity.ERROR
