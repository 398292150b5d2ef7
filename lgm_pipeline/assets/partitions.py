"""Partition definitions of one tenant: service dates (tenant timezone) and branches."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from lgm_pipeline.naming import BRANCH_DIMENSION, DATE_DIMENSION, JOURNEY_KEY_FORM, parse_journey_partition_key
from lgm_pipeline.tenants import Tenant


class JourneyPartitionsDefinition(dg.MultiPartitionsDefinition):
    """Service date x branch, where a key sent by any client (GraphQL, CLI, a tag) that is malformed or names
    no partition fails in words that give the expected form, not with Dagster's internal invariant.

    A run launched with only the ``dagster/partition`` tag hands Dagster the key as text; it is parsed here
    before any step reads its inputs.
    """

    def get_partition_key_from_str(self, partition_key_str: str) -> dg.MultiPartitionKey:
        try:
            parse_journey_partition_key(partition_key_str)
        except ValueError as error:
            raise dg.DagsterInvalidInvocationError(str(error)) from None
        return super().get_partition_key_from_str(partition_key_str)

    def get_partition_keys_in_range(self, partition_key_range: dg.PartitionKeyRange) -> list[dg.MultiPartitionKey]:
        for key in {partition_key_range.start, partition_key_range.end}:
            self.get_partition_key_from_str(str(key))
            if not self.has_partition_key(key):
                branches = ", ".join(self.get_partitions_def_for_dimension(BRANCH_DIMENSION).get_partition_keys())
                raise dg.DagsterInvalidInvocationError(
                    f"journeys partition {str(key)!r} does not exist: expected {JOURNEY_KEY_FORM}, "
                    f"a service date up to tomorrow and one of the branches {branches}"
                )
        return list(super().get_partition_keys_in_range(partition_key_range))


@dataclass(frozen=True)
class TenantPartitions:
    service_date: dg.DailyPartitionsDefinition
    journeys: JourneyPartitionsDefinition


def tenant_partitions(tenant: Tenant) -> TenantPartitions:
    # A daily partition normally ends at yesterday: end_offset 2 makes the last one tomorrow (tenant
    # time), 3 when a branch east of the tenant's clock can already be living the tenant's tomorrow,
    # so every branch's window (today + tomorrow) is always addressable.
    service_date = dg.DailyPartitionsDefinition(
        start_date=tenant.first_service_date.isoformat(),
        timezone=tenant.timezone,
        end_offset=1 + tenant.max_days_ahead(),
    )
    # West to east: around midnight, each date's branches to rebuild are neighbours, so one run takes them.
    branch = dg.StaticPartitionsDefinition(tenant.location_ids_west_to_east)
    return TenantPartitions(
        service_date=service_date,
        journeys=JourneyPartitionsDefinition({DATE_DIMENSION: service_date, BRANCH_DIMENSION: branch}),
    )
