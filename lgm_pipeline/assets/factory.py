"""One tenant's Dagster definitions: adding a tenant to tenants.yaml adds its asset groups and nothing else."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from lgm_pipeline.assets.arrival_windows import build_arrival_windows_asset
from lgm_pipeline.assets.automation import build_daily_schedule, build_jobs, build_refresh_schedule, cycle_asset_keys
from lgm_pipeline.assets.freshness import build_freshness_check
from lgm_pipeline.assets.journeys import build_journeys_asset
from lgm_pipeline.assets.leads import build_leads_assets
from lgm_pipeline.assets.maintenance import build_retention_asset
from lgm_pipeline.assets.partitions import tenant_partitions
from lgm_pipeline.assets.raw import build_branches_asset, build_raw_assets
from lgm_pipeline.assets.webhooks import build_webhook_refresh_asset, takes_webhooks
from lgm_pipeline.settings import smartmoving_rate_limit
from lgm_pipeline.smartmoving.resource import SmartMovingAccount, SmartMovingResource
from lgm_pipeline.tenants import Tenant


def smartmoving_account(tenant: Tenant) -> SmartMovingAccount:
    """The tenant's API settings; the key and base URL are read from the environment at run time."""
    return SmartMovingAccount(
        base_url_env=tenant.smartmoving.base_url_env,
        api_key_env=tenant.smartmoving.api_key_env,
        rate_limit_per_minute=smartmoving_rate_limit(tenant.smartmoving.rate_limit_per_minute),
    )


def smartmoving_resource(tenants: Iterable[Tenant]) -> SmartMovingResource:
    """One resource with every tenant's account: assets reach theirs typed, by tenant key.

    Each tenant's credentials (its variables' names in tenants.yaml) are bound here, in code: run config can
    tune the knobs but not name another tenant's variables, another URL or any other variable.
    """
    return SmartMovingResource.for_accounts({t.key: smartmoving_account(t) for t in tenants})


def tenant_assets(tenant: Tenant) -> list[dg.AssetsDefinition]:
    partitions = tenant_partitions(tenant)
    return [
        *build_raw_assets(tenant, partitions),
        build_branches_asset(tenant),
        build_arrival_windows_asset(tenant, partitions),
        build_journeys_asset(tenant, partitions),
        *build_leads_assets(tenant, partitions),
        build_retention_asset(tenant),
        *([build_webhook_refresh_asset(tenant)] if takes_webhooks(tenant) else []),
    ]


def build_tenant_definitions(tenant: Tenant) -> dg.Definitions:
    """The tenant's assets, its two jobs and its two schedules: the 2-hour cycle and the daily work (staggered)."""
    smartmoving_job, journeys_job = build_jobs(tenant)
    assets = tenant_assets(tenant)
    cycle_keys = cycle_asset_keys(tenant, assets)
    return dg.Definitions(
        assets=assets,
        asset_checks=[build_freshness_check(tenant)],
        jobs=[smartmoving_job, journeys_job],
        schedules=[
            build_refresh_schedule(tenant, smartmoving_job, cycle_keys),
            build_daily_schedule(tenant, smartmoving_job, cycle_keys),
        ],
    )
