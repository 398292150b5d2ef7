"""Partition definitions of one tenant: service dates (tenant timezone) and branches."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from lgm_pipeline.naming import BRANCH_DIMENSION, DATE_DIMENSION
from lgm_pipeline.tenants import Tenant


@dataclass(frozen=True)
class TenantPartitions:
    service_date: dg.DailyPartitionsDefinition
    journeys: dg.MultiPartitionsDefinition


def tenant_partitions(tenant: Tenant) -> TenantPartitions:
    # end_offset=2: the last partition is tomorrow (a daily partition normally ends at yesterday),
    # so the 48-hour window (today + tomorrow) is always addressable.
    service_date = dg.DailyPartitionsDefinition(
        start_date=tenant.first_service_date.isoformat(), timezone=tenant.timezone, end_offset=2
    )
    branch = dg.StaticPartitionsDefinition(tenant.location_ids)
    return TenantPartitions(
        service_date=service_date,
        journeys=dg.MultiPartitionsDefinition({DATE_DIMENSION: service_date, BRANCH_DIMENSION: branch}),
    )
