"""Housekeeping assets: retention of raw payloads and sync history (never journeys)."""

import dagster as dg
import pydantic

from lgm_pipeline.naming import OWNERS
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant

#: Bounds of ``keep_days``: 0 or less would delete today's (or, negative, every) raw row; more than ten years
#: is a typo (a unit or an extra digit), not a retention policy.
KEEP_DAYS_MIN, KEEP_DAYS_MAX = 1, 3650


class RetentionConfig(dg.Config):
    keep_days: int = 30
    """Raw payloads of service dates, and sync_runs rows, older than this many days are deleted (1 to 3650)."""

    @pydantic.field_validator("keep_days")
    @classmethod
    def _bounded(cls, value: int) -> int:
        # Checked when the run's config is read, before the step deletes anything; no retry heals it.
        if not KEEP_DAYS_MIN <= value <= KEEP_DAYS_MAX:
            raise ValueError(
                f"history_retention.keep_days is {value}: it must be a whole number of days from {KEEP_DAYS_MIN} "
                f"to {KEEP_DAYS_MAX} (raw rows of service dates older than that are deleted)"
            )
        return value


def build_retention_asset(tenant: Tenant) -> dg.AssetsDefinition:
    @dg.asset(
        key=tenant.names.asset_key("history_retention"),
        group_name=tenant.names.group("maintenance"),
        description=(
            f"{tenant.name}: prunes raw_* rows of service dates older than keep_days and sync_runs history "
            "older than keep_days. Journeys, quarantine and audit are never touched."
        ),
        kinds={"postgres"},
        owners=OWNERS,
        tags=tenant.names.tags,
    )
    def history_retention(
        context: dg.AssetExecutionContext, config: RetentionConfig, postgres: PostgresResource
    ) -> dg.MaterializeResult:
        deleted = postgres.prune_history(tenant, keep_days=config.keep_days, today=tenant.today())
        context.log.info(f"retention ({config.keep_days} days) deleted {deleted}")
        return dg.MaterializeResult(metadata={"keep_days": config.keep_days, "deleted": dg.MetadataValue.json(deleted)})

    return history_retention
