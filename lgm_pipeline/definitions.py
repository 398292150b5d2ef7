"""The one ``Definitions`` of the code location: every tenant's definitions plus the shared storage.

``defs`` is the entry point Dagster loads (``-m lgm_pipeline.definitions``, ``dg``): a lazy
``@dg.definitions`` function, so importing this module reads no tenants file and builds nothing;
Dagster calls it when it loads the code location. Code and tests that want the object call
``build_definitions()`` (or ``defs()``)."""

from __future__ import annotations

import dagster as dg

from lgm_pipeline.assets.automation import build_automation_sensor
from lgm_pipeline.assets.dagster_history import build_dagster_history_definitions
from lgm_pipeline.assets.factory import build_tenant_definitions, smartmoving_resource
from lgm_pipeline.assets.freshness import FRESHNESS_CHECK, build_freshness_schedule
from lgm_pipeline.assets.webhooks import build_webhook_sensor
from lgm_pipeline.naming import IO_MANAGER_KEY, POSTGRES_RESOURCE_KEY, SMARTMOVING_RESOURCE_KEY
from lgm_pipeline.settings import DATABASE_URL_ENV, configured_database_url
from lgm_pipeline.storage.io_manager import PostgresIOManager
from lgm_pipeline.storage.resources import PostgresDatabase, PostgresResource
from lgm_pipeline.tenants import Tenant, load_tenants


def postgres_resource() -> PostgresResource:
    """The database at ``dg.EnvVar(LGM_DATABASE_URL)``: Dagster resolves it when a run starts, the UI shows its name.

    Unset where the definitions load (a run worker started without it), the URL is bound empty instead, so a run
    fails at its first query with one line naming the variable, not with Dagster's config error and its stack.
    The ``lgm`` commands export it (the embedded server's when none is configured) before anything loads."""
    if configured_database_url() is None:
        return PostgresResource(database=PostgresDatabase())
    return PostgresResource(database=PostgresDatabase(url=dg.EnvVar(DATABASE_URL_ENV)))


def build_definitions() -> dg.Definitions:
    tenants = load_tenants()
    postgres = postgres_resource()
    shared = dg.Definitions(
        # A run's steps depend on each other (customers -> opportunities -> jobs; one journeys step): the
        # multiprocess default would only add a Python process, with its imports, per step of every run.
        executor=dg.in_process_executor,
        resources={
            POSTGRES_RESOURCE_KEY: postgres,
            IO_MANAGER_KEY: PostgresIOManager.for_tenants(postgres, tenants),
            SMARTMOVING_RESOURCE_KEY: smartmoving_resource(tenants),
        },
    )
    per_tenant = [build_tenant_definitions(t) for t in tenants]
    return dg.Definitions.merge(
        shared, build_dagster_history_definitions(), *per_tenant, build_tenant_group_definitions(per_tenant, tenants)
    )


def build_tenant_group_definitions(per_tenant: list[dg.Definitions], tenants: list[Tenant]) -> dg.Definitions:
    """What the code location runs once for all its tenants (a tenant group): the automation and webhook sensors
    and the freshness checks' schedule. Per tenant they would cost a sensor tick or a run each, whatever its size."""
    checks = [c for d in per_tenant for c in d.asset_checks or () if c.check_key.name == FRESHNESS_CHECK]
    freshness_job, freshness_schedule = build_freshness_schedule(checks)
    webhooks = build_webhook_sensor(tenants, [j for d in per_tenant for j in d.jobs or ()])
    return dg.Definitions(
        jobs=[freshness_job],
        schedules=[freshness_schedule],
        sensors=[build_automation_sensor(tenants), *([webhooks] if webhooks else [])],
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
