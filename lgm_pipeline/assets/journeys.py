"""Normalized truck journeys of one tenant, partitioned by service date x branch, with their checks."""

import datetime as dt
import time
from typing import Any

import dagster as dg
import pandas as pd

from lgm_pipeline.assets.automation import journeys_automation_condition
from lgm_pipeline.assets.freshness import JOURNEYS_FRESHNESS_POLICY
from lgm_pipeline.assets.metadata import preview
from lgm_pipeline.assets.partitions import TenantPartitions
from lgm_pipeline.naming import BRANCH_ROWS, IO_MANAGER_KEY, OWNERS, parse_journey_partition_key
from lgm_pipeline.quality.rules import RuleResult, Severity, rules_for, validate_journeys
from lgm_pipeline.storage.io_manager import table_metadata
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.journeys import is_journey, normalize_journeys

UNIQUE_IDS_CHECK = "journey_ids_unique"
DATE_IN_PARTITION_CHECK = "service_date_in_partition"


class JourneysConfig(dg.Config):
    max_quarantine_share: float = 0.05
    """A blocking rule's check fails with ERROR when it quarantines more than this share of the rows."""


def _check_specs(tenant: Tenant, asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(
            rule.name,
            asset=asset_key,
            description=f"[{rule.severity.value}] {rule.description}",
        )
        for rule in rules_for(tenant)
    ]
    specs.append(dg.AssetCheckSpec(UNIQUE_IDS_CHECK, asset=asset_key, description="Journey ids are unique."))
    specs.append(
        dg.AssetCheckSpec(
            DATE_IN_PARTITION_CHECK,
            asset=asset_key,
            description="Every journey's service date is the partition's date.",
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


def _structural_checks(frame: pd.DataFrame, service_date: dt.date, partition: str) -> list[dg.AssetCheckResult]:
    duplicates = frame["id"][frame["id"].duplicated()].unique().tolist()
    outside = frame.loc[frame["service_date"] != service_date, "job_number"].tolist()
    return [
        dg.AssetCheckResult(
            check_name=UNIQUE_IDS_CHECK,
            passed=not duplicates,
            metadata={
                "partition": partition,
                "duplicate_ids": len(duplicates),
                "examples": dg.MetadataValue.json(duplicates[:5]),
            },
        ),
        dg.AssetCheckResult(
            check_name=DATE_IN_PARTITION_CHECK,
            passed=not outside,
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
        normalized = normalized[
            (normalized["location_id"] == location_id) | normalized["location_id"].isna()
        ].reset_index(drop=True)
        # Leads and jobs never booked are sales' business, not a truck's: they are neither journeys
        # nor checked as such; once a journey exists, every later status (a cancellation) updates it.
        work = is_journey(normalized, postgres.existing_journey_ids(tenant, normalized["id"]))
        not_booked = int((~work).sum())
        normalized = normalized[work].reset_index(drop=True)
        outcome = validate_journeys(normalized, tenant)
        frame = outcome.frame
        quarantined = frame["quarantine_reasons"].notna()
        stored = frame[~quarantined]
        # Checks are per asset, not per partition (partitioned checks are preview in 1.13): each result
        # names its partition.
        partition = f"{service_date.isoformat()} / {location_id}"
        # Before the Output: the IO manager refuses a frame these fail, and the UI should still show which.
        yield from _structural_checks(frame, service_date, partition)
        yield dg.Output(
            frame,
            metadata={
                "journeys": dg.MetadataValue.int(int((~quarantined).sum())),
                "quarantined": dg.MetadataValue.int(int(quarantined.sum())),
                "flagged": dg.MetadataValue.int(int(stored["dq_flags"].map(bool).sum())),
                "not_booked_skipped": dg.MetadataValue.int(not_booked),
                "branch": location_id,
                "service_date": service_date.isoformat(),
                "rows_by_stage": dg.MetadataValue.json(stored["status"].value_counts().to_dict()),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                "preview": preview(stored, ["job_number", "status", "job_type_name", "estimated_cost", "currency"]),
            },
        )
        for result in outcome.results:
            yield rule_check(result, result.rows_checked, config.max_quarantine_share, partition)

    return journeys
