"""The one ``Definitions`` of the code location: every tenant's definitions plus the shared storage."""

from __future__ import annotations

import dagster as dg

from lgm_pipeline.assets.factory import build_tenant_definitions
from lgm_pipeline.storage.io_manager import PostgresIOManager
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import load_tenants


def build_definitions() -> dg.Definitions:
    postgres = PostgresResource()
    shared = dg.Definitions(
        resources={"postgres": postgres, "tenant_io_manager": PostgresIOManager(postgres=postgres)},
    )
    return dg.Definitions.merge(shared, *(build_tenant_definitions(t) for t in load_tenants()))


defs = build_definitions()
