"""Housekeeping assets: retention of raw payloads and sync history (never journeys)."""

import dagster as dg

from lgm_pipeline.naming import OWNERS
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant


class RetentionConfig(dg.Config):
    keep_days: int = 30
    """Raw payloads of service dates, and sync_runs rows, older than this many days are deleted."""


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
