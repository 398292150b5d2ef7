"""Normalized truck journeys of one tenant, partitioned by service date x branch, with their checks."""

import datetime as dt
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from lgm_pipeline.assets.automation import journeys_automation_condition
from lgm_pipeline.assets.freshness import JOURNEYS_FRESHNESS_POLICY
from lgm_pipeline.assets.metadata import preview
from lgm_pipeline.assets.partitions import TenantPartitions
from lgm_pipeline.naming import (
    BRANCH_ROWS,
    BY_PARTITION_METADATA,
    IO_MANAGER_KEY,
    OWNERS,
    journey_partition_key,
    parse_journey_partition_key,
)
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


@dataclass(frozen=True)
class PartitionBuild:
    """One (date, branch) partition's rows and check results, as a single-partition run would make them."""

    key: str
    service_date: dt.date
    location_id: str
    #: The branch's validated rows (quarantined ones with their reasons); what the partition writes.
    own: pd.DataFrame
    stored: int
    quarantined: int
    flagged: int
    not_booked: int
    #: Jobs of unmapped branches on the date, which every branch partition of the date holds in quarantine.
    held: int
    structural: list[dg.AssetCheckResult]
    rules: list[dg.AssetCheckResult]

    @property
    def failing(self) -> list[dg.AssetCheckResult]:
        return [c for c in [*self.structural, *self.rules] if not c.passed]

    def summary(self) -> dict[str, Any]:
        """What ``lgm sync`` and the UI read of this partition from a run covering several."""
        failing = self.failing
        return {
            "journeys": self.stored,
            "quarantined": self.quarantined,
            "flagged": self.flagged,
            "checks_passed": len(self.structural) + len(self.rules) - len(failing),
            "checks_warned": sum(c.severity == dg.AssetCheckSeverity.WARN for c in failing),
            "checks_failed": sum(c.severity == dg.AssetCheckSeverity.ERROR for c in failing),
            "failed_checks": [c.check_name for c in failing],
        }


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, dg.MetadataValue) else value


def fold_checks(results: Sequence[dg.AssetCheckResult]) -> list[dg.AssetCheckResult]:
    """One result per check for a run covering several partitions (Dagster takes one per check and step).

    A check passes when it passed in every partition; it fails with the worst severity among its failing
    partitions, whose own metadata is kept under ``failing_partitions``. A single partition's results are
    returned unchanged.
    """
    by_name: dict[str, list[dg.AssetCheckResult]] = {}
    for result in results:
        by_name.setdefault(result.check_name, []).append(result)
    folded = []
    for name, group in by_name.items():
        if len(group) == 1:
            folded.append(group[0])
            continue
        failing = [r for r in group if not r.passed]
        errors = any(r.severity == dg.AssetCheckSeverity.ERROR for r in failing)
        severity = dg.AssetCheckSeverity.ERROR if errors or not failing else dg.AssetCheckSeverity.WARN
        details = {
            str(_plain(r.metadata["partition"])): {k: _plain(v) for k, v in r.metadata.items() if k != "partition"}
            for r in failing
        }
        described = [f"{_plain(r.metadata['partition'])}: {r.description}" for r in failing if r.description]
        folded.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=not failing,
                severity=severity,
                description="; ".join(described) or None,
                metadata={
                    "partitions_checked": len(group),
                    "partitions_failing": len(failing),
                    "failing_partitions": dg.MetadataValue.json(details),
                },
            )
        )
    return folded


def build_journeys_asset(tenant: Tenant, partitions: TenantPartitions) -> dg.AssetsDefinition:
    names = tenant.names
    asset_key = names.asset_key("journeys")
    # A one-branch rebuild loads only the raw rows its branch can use (plus unknown branches).
    branch_rows = {BRANCH_ROWS: True}
    raw = ("smartmoving_jobs", "smartmoving_customers", "smartmoving_opportunities")

    @dg.asset(
        key=asset_key,
        description=(
            f"{tenant.name}: truck journeys, one row per SmartMoving job, keyed by a stable id, for one service "
            "date and one branch. Rows failing a blocking rule go to journeys_quarantine with their reasons; "
            "warning rules are stored as dq_flags. Table journeys (+ journeys_quarantine, journey_audit). "
            "A run rebuilds one partition or a range of them (all branches of a date after a raw pull)."
        ),
        group_name=names.group("journeys"),
        partitions_def=partitions.journeys,
        # The automation's backfill and lgm sync rebuild a pulled date's branches in one run: each run pays
        # Dagster's set-up once, not once per branch.
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=IO_MANAGER_KEY,
        ins={name: dg.AssetIn(names.asset_key(name), metadata=branch_rows) for name in raw},
        # Read in the merge (storage/write.py): why a journey left its date goes into the delete's audit row.
        deps=[names.asset_key("smartmoving_job_departures")],
        check_specs=_check_specs(tenant, asset_key),
        kinds={"pandas", "postgres"},
        owners=OWNERS,
        tags=names.tags,
        metadata=table_metadata(tenant, "journeys", definition=True),
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
        # Validated by the partitions definition, whichever client sent them (JourneyPartitionsDefinition).
        keys = sorted((parse_journey_partition_key(k) for k in context.partition_keys), key=lambda p: (p[0], p[1]))
        synced_at = dt.datetime.now(dt.UTC)
        builds: list[PartitionBuild] = []
        strays: list[pd.DataFrame] = []
        for service_date in sorted({day for day, _ in keys}):
            # Each date normalized from its own raw rows, as a one-date run would (a multi-day move's
            # opportunity is in the raw tables of each of its dates).
            normalized = normalize_journeys(
                tenant,
                _of_date(smartmoving_customers, service_date),
                _of_date(smartmoving_opportunities, service_date),
                _of_date(smartmoving_jobs, service_date),
                synced_at=synced_at,
                run_id=context.run.run_id,
            )
            existing = postgres.existing_journey_ids(tenant, normalized["id"])
            # Jobs of SmartMoving branches the tenants file does not map belong to no branch: every branch
            # partition of the date holds them in quarantine identically (none deletes another's), and they
            # are checked once, per date, by smartmoving_jobs' branch_mapping check, not here.
            stray = normalized[normalized["location_id"].isna()].reset_index(drop=True)
            stray_work = is_journey(stray, existing)
            held = validate_journeys(stray[stray_work].reset_index(drop=True), tenant).frame
            strays.append(held)
            for location_id in [b for day, b in keys if day == service_date]:
                own = normalized[normalized["location_id"] == location_id].reset_index(drop=True)
                builds.append(
                    _build_partition(tenant, config, postgres, own, existing, held, service_date, location_id)
                )

        frames = [b.own for b in builds] + [h for h in strays if not h.empty]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        structural = fold_checks([c for b in builds for c in b.structural])
        rules = fold_checks([c for b in builds for c in b.rules])
        stored = frame[frame["quarantine_reasons"].isna() & frame["location_id"].notna()]
        single = builds[0] if len(builds) == 1 else None
        # Before the Output: the IO manager refuses a frame these fail, and the UI should still show which.
        yield from structural
        yield dg.Output(
            frame,
            metadata={
                "journeys": dg.MetadataValue.int(sum(b.stored for b in builds)),
                "quarantined": dg.MetadataValue.int(sum(b.quarantined for b in builds)),
                "flagged": dg.MetadataValue.int(sum(b.flagged for b in builds)),
                "not_booked_skipped": dg.MetadataValue.int(sum(b.not_booked for b in builds)),
                "unmapped_branch_jobs_held": dg.MetadataValue.int(sum(len(h) for h in strays)),
                BY_PARTITION_METADATA: dg.MetadataValue.json({b.key: b.summary() for b in builds}),
                **(
                    {"branch": single.location_id, "service_date": single.service_date.isoformat()}
                    if single
                    else {"partitions": dg.MetadataValue.int(len(builds))}
                ),
                "rows_by_stage": dg.MetadataValue.json(stored["status"].value_counts().to_dict()),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                "preview": preview(stored, ["job_number", "status", "job_type_name", "estimated_cost", "currency"]),
            },
        )
        yield from rules

    return journeys


def _of_date(frame: pd.DataFrame, service_date: dt.date) -> pd.DataFrame:
    if "service_date" not in frame.columns:
        return frame
    dates = pd.to_datetime(frame["service_date"]).dt.date
    return frame[dates == service_date].reset_index(drop=True)


def _build_partition(
    tenant: Tenant,
    config: JourneysConfig,
    postgres: PostgresResource,
    own: pd.DataFrame,
    existing: set[str],
    held: pd.DataFrame,
    service_date: dt.date,
    location_id: str,
) -> PartitionBuild:
    # Leads and jobs never booked are sales' business, not a truck's: they are neither journeys
    # nor checked as such; once a journey exists, every later status (a cancellation) updates it.
    own_work = is_journey(own, existing)
    outcome = validate_journeys(own[own_work].reset_index(drop=True), tenant)
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
    checked = outcome.frame if held.empty else pd.concat([outcome.frame, held], ignore_index=True)
    return PartitionBuild(
        key=str(journey_partition_key(service_date.isoformat(), location_id)),
        service_date=service_date,
        location_id=location_id,
        own=outcome.frame,
        stored=len(stored),
        quarantined=int(quarantined.sum()),
        flagged=int(stored["dq_flags"].map(bool).sum()),
        not_booked=int((~own_work).sum()),
        held=len(held),
        structural=_structural_checks(checked, service_date, partition),
        rules=rules,
    )
