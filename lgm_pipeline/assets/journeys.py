"""Normalized truck journeys of one tenant, partitioned by service date x branch, with their checks."""

import datetime as dt
import statistics
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd

from lgm_pipeline.assets.automation import journeys_automation_condition
from lgm_pipeline.assets.freshness import JOURNEYS_FRESHNESS_POLICY
from lgm_pipeline.assets.metadata import preview
from lgm_pipeline.assets.partitions import TenantPartitions
from lgm_pipeline.naming import BRANCH_ROWS, IO_MANAGER_KEY, OWNERS, parse_journey_partition_key
from lgm_pipeline.quality.rules import (
    DATE_LEVEL_RULES,
    MAX_QUARANTINE_SHARE,
    RuleResult,
    Severity,
    partition_rules_for,
    validate_journeys,
)
from lgm_pipeline.storage.io_manager import table_metadata
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.journeys import is_journey, normalize_journeys

UNIQUE_IDS_CHECK = "journey_ids_unique"
DATE_IN_PARTITION_CHECK = "service_date_in_partition"
BRANCH_VOLUME_CHECK = "branch_volume"
#: A branch with no journey on a day when the same weekday of the last weeks held at least this many
#: (median) is an ERROR: more likely a broken branch mapping or a pull gone wrong than a quiet day.
USUAL_VOLUME = 5
VOLUME_WEEKS = 4


class JourneysConfig(dg.Config):
    max_quarantine_share: float = MAX_QUARANTINE_SHARE
    """A blocking rule's check fails with ERROR when it quarantines more than this share of the rows."""


def _check_specs(tenant: Tenant, asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(
            rule.name,
            asset=asset_key,
            description=f"[{rule.severity.value}] {rule.description}",
        )
        for rule in partition_rules_for(tenant)
    ]
    specs.append(dg.AssetCheckSpec(UNIQUE_IDS_CHECK, asset=asset_key, description="Journey ids are unique."))
    specs.append(
        dg.AssetCheckSpec(
            DATE_IN_PARTITION_CHECK,
            asset=asset_key,
            description="Every journey's service date is the partition's date.",
        )
    )
    specs.append(
        dg.AssetCheckSpec(
            BRANCH_VOLUME_CHECK,
            asset=asset_key,
            description=(
                f"[error] The branch has journeys on the date, or its same weekday of the last {VOLUME_WEEKS} "
                f"weeks held fewer than {USUAL_VOLUME} (median)."
            ),
        )
    )
    return specs


def rule_check(result: RuleResult, total: int, max_share: float, partition: str) -> dg.AssetCheckResult:
    share = result.failing_rows / total if total else 0.0
    blocking = result.rule.severity is Severity.BLOCKING
    severity = dg.AssetCheckSeverity.ERROR if blocking and share > max_share else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=result.rule.name,
        passed=result.failing_rows == 0,
        severity=severity,
        metadata={
            "partition": partition,
            "severity": result.rule.severity.value,
            "failing_rows": result.failing_rows,
            "rows_checked": total,
            "failing_share": round(share, 4),
            "action": "quarantined" if blocking else "stored with dq_flags",
            "examples": dg.MetadataValue.json(result.examples),
        },
    )


def volume_check(journeys: int, history: Sequence[int], partition: str) -> dg.AssetCheckResult:
    """ERROR when the branch shows no journey on a day its same weekday usually has many.

    ``history``: the journeys of the same weekday in the previous weeks that have any (a week the
    pipeline did not run yet is no evidence of a quiet day).
    """
    usual = statistics.median(history) if len(history) >= 2 else None
    empty_day = journeys == 0 and usual is not None and usual >= USUAL_VOLUME
    return dg.AssetCheckResult(
        check_name=BRANCH_VOLUME_CHECK,
        passed=not empty_day,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"no journey, where the same weekday usually has {usual:g}: check the branch mapping and the raw pull"
            if empty_day
            else None
        ),
        metadata={
            "partition": partition,
            "journeys": journeys,
            "usual_same_weekday": dg.MetadataValue.float(float(usual)) if usual is not None else None,
            "weeks_compared": len(history),
        },
    )


def _structural_checks(frame: pd.DataFrame, service_date: dt.date, partition: str) -> list[dg.AssetCheckResult]:
    duplicates = frame["id"][frame["id"].duplicated()].unique().tolist()
    outside = frame.loc[frame["service_date"] != service_date, "job_number"].tolist()
    return [
        dg.AssetCheckResult(
            check_name=UNIQUE_IDS_CHECK,
            passed=not duplicates,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "partition": partition,
                "duplicate_ids": len(duplicates),
                "examples": dg.MetadataValue.json(duplicates[:5]),
            },
        ),
        dg.AssetCheckResult(
            check_name=DATE_IN_PARTITION_CHECK,
            passed=not outside,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "partition": partition,
                "rows_outside": len(outside),
                "examples": dg.MetadataValue.json(outside[:5]),
            },
        ),
    ]


def build_journeys_asset(tenant: Tenant, partitions: TenantPartitions) -> dg.AssetsDefinition:
    names = tenant.names
    asset_key = names.asset_key("journeys")
    # Each branch partition loads only the raw rows its branch can use (plus unknown branches).
    branch_rows = {BRANCH_ROWS: True}
    raw = ("smartmoving_jobs", "smartmoving_customers", "smartmoving_opportunities")

    @dg.asset(
        key=asset_key,
        description=(
            f"{tenant.name}: truck journeys, one row per SmartMoving job, keyed by a stable id, for one service "
            "date and one branch. Rows failing a blocking rule go to journeys_quarantine with their reasons; "
            "warning rules are stored as dq_flags. Table journeys (+ journeys_quarantine, journey_audit)."
        ),
        group_name=names.group("journeys"),
        partitions_def=partitions.journeys,
        io_manager_key=IO_MANAGER_KEY,
        ins={name: dg.AssetIn(names.asset_key(name), metadata=branch_rows) for name in raw},
        check_specs=_check_specs(tenant, asset_key),
        kinds={"pandas", "postgres"},
        owners=OWNERS,
        tags=names.tags,
        metadata=table_metadata(tenant, "journeys"),
        freshness_policy=JOURNEYS_FRESHNESS_POLICY,
        automation_condition=journeys_automation_condition(tenant),
    )
    def journeys(
        context: dg.AssetExecutionContext,
        config: JourneysConfig,
        postgres: PostgresResource,
        smartmoving_jobs: pd.DataFrame,
        smartmoving_customers: pd.DataFrame,
        smartmoving_opportunities: pd.DataFrame,
    ) -> Any:
        started = time.monotonic()
        # Validated by the partitions definition, whichever client sent it (JourneyPartitionsDefinition).
        service_date, location_id = parse_journey_partition_key(context.partition_key)

        normalized = normalize_journeys(
            tenant,
            smartmoving_customers,
            smartmoving_opportunities,
            smartmoving_jobs,
            synced_at=dt.datetime.now(dt.UTC),
            run_id=context.run.run_id,
        )
        own = normalized[normalized["location_id"] == location_id].reset_index(drop=True)
        # Jobs of SmartMoving branches the tenants file does not map belong to no branch: every branch
        # partition of the date holds them in quarantine identically (none deletes another's), and they
        # are checked once, per date, by smartmoving_jobs' branch_mapping check, not here.
        stray = normalized[normalized["location_id"].isna()].reset_index(drop=True)
        existing = postgres.existing_journey_ids(tenant, normalized["id"])
        # Leads and jobs never booked are sales' business, not a truck's: they are neither journeys
        # nor checked as such; once a journey exists, every later status (a cancellation) updates it.
        own_work, stray_work = is_journey(own, existing), is_journey(stray, existing)
        not_booked = int((~own_work).sum())
        outcome = validate_journeys(own[own_work].reset_index(drop=True), tenant)
        held = validate_journeys(stray[stray_work].reset_index(drop=True), tenant).frame
        frame = outcome.frame if held.empty else pd.concat([outcome.frame, held], ignore_index=True)
        quarantined = outcome.frame["quarantine_reasons"].notna()
        stored = outcome.frame[~quarantined]
        # Checks are per asset, not per partition (partitioned checks are preview in 1.13): each result
        # names its partition.
        partition = f"{service_date.isoformat()} / {location_id}"
        weeks = [service_date - dt.timedelta(weeks=n) for n in range(1, VOLUME_WEEKS + 1)]
        history = list(postgres.journey_counts(tenant, location_id, weeks).values())
        rules = [
            rule_check(result, result.rows_checked, config.max_quarantine_share, partition)
            for result in outcome.results
            if result.rule.name not in DATE_LEVEL_RULES
        ]
        rules.append(volume_check(len(stored), history, partition))
        structural = _structural_checks(frame, service_date, partition)
        failing = [c for c in [*structural, *rules] if not c.passed]
        # Before the Output: the IO manager refuses a frame these fail, and the UI should still show which.
        yield from structural
        yield dg.Output(
            frame,
            metadata={
                "journeys": dg.MetadataValue.int(len(stored)),
                "quarantined": dg.MetadataValue.int(int(quarantined.sum())),
                "flagged": dg.MetadataValue.int(int(stored["dq_flags"].map(bool).sum())),
                "not_booked_skipped": dg.MetadataValue.int(not_booked),
                "unmapped_branch_jobs_held": dg.MetadataValue.int(len(held)),
                "checks_warned": dg.MetadataValue.int(sum(c.severity == dg.AssetCheckSeverity.WARN for c in failing)),
                "checks_failed": dg.MetadataValue.int(sum(c.severity == dg.AssetCheckSeverity.ERROR for c in failing)),
                "branch": location_id,
                "service_date": service_date.isoformat(),
                "rows_by_stage": dg.MetadataValue.json(stored["status"].value_counts().to_dict()),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                "preview": preview(stored, ["job_number", "status", "job_type_name", "estimated_cost", "currency"]),
            },
        )
        yield from rules

    return journeys
