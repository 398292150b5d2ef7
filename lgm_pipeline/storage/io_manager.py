"""``PostgresIOManager``: assets <-> tenant tables, one partition per transaction.

Asset keys are ``[<tenant key>, ..., <asset name>]``; the tenant picks the schema and the asset
name picks the table (:data:`tables.ASSET_TABLES`). Daily partition keys ("YYYY-MM-DD") map to
``service_date``; multi-partition keys with dimensions ``date`` and ``branch`` map to
``(service_date, location_id)``; unpartitioned assets own the whole table.

The tenants are bound in code (``tenants``, a resource dependency: no run config, no file read here).
"""

# No ``from __future__ import annotations``: Dagster reads ``ResourceDependency`` from the evaluated annotation.
import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from lgm_pipeline.naming import ALSO_REWRITES_METADATA, BRANCH_ROWS, BY_PARTITION_METADATA, parse_journey_partition_key
from lgm_pipeline.storage.reads import BranchRows, read_frame
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.storage.scope import PartitionScope
from lgm_pipeline.storage.tables import ASSET_TABLES
from lgm_pipeline.storage.write import ApiCalls, CheckCounts, PulledRecords, write_frame
from lgm_pipeline.tenants.config import Tenant


def _tenant_and_table(asset_key: dg.AssetKey, tenants: Mapping[str, Tenant]) -> tuple[Tenant, sa.Table, str]:
    path = asset_key.path
    name = path[-1]
    if len(path) < 2:
        raise dg.DagsterInvariantViolationError(
            f"asset {asset_key.to_user_string()}: key must start with the tenant key"
        )
    if name not in ASSET_TABLES:
        raise dg.DagsterInvariantViolationError(
            f"asset {asset_key.to_user_string()}: PostgresIOManager stores only {sorted(ASSET_TABLES)}"
        )
    tenant = tenants.get(path[0])
    if not isinstance(tenant, Tenant):
        raise dg.DagsterInvariantViolationError(
            f"asset {asset_key.to_user_string()}: no tenant {path[0]!r} bound to PostgresIOManager ({sorted(tenants)})"
        )
    return tenant, ASSET_TABLES[name], name


def partition_scope(key: str, partitions_def: dg.PartitionsDefinition | None) -> PartitionScope:
    """The rows a partition key owns: a daily key, or a (date, branch) multi-partition key."""
    if isinstance(key, dg.MultiPartitionKey) or isinstance(partitions_def, dg.MultiPartitionsDefinition):
        service_date, location_id = parse_journey_partition_key(key)
        return PartitionScope(key=str(key), service_date=service_date, location_id=location_id)
    return PartitionScope(key=str(key), service_date=dt.date.fromisoformat(key))


def output_scopes(
    keys: Sequence[str], partitions_def: dg.PartitionsDefinition | None, output_metadata: Mapping[str, Any]
) -> list[PartitionScope]:
    """The partitions an output writes, plus the dates it declares it also rewrites, in date order."""
    scopes = {str(k): partition_scope(k, partitions_def) for k in keys}
    for day in _plain(output_metadata.get(ALSO_REWRITES_METADATA)) or ():
        if isinstance(partitions_def, dg.MultiPartitionsDefinition):
            raise dg.DagsterInvariantViolationError(f"{ALSO_REWRITES_METADATA} applies to daily partitions only")
        scopes.setdefault(str(day), partition_scope(str(day), partitions_def))
    return sorted(scopes.values(), key=lambda s: (s.service_date or dt.date.min, s.location_id or ""))


def api_calls_of(output_metadata: Mapping[str, Any]) -> ApiCalls | None:
    """The SmartMoving calls an asset reported in its output metadata (``api_calls``, by endpoint)."""
    total = _plain(output_metadata.get("api_calls"))
    if total is None:
        return None
    by_endpoint = _plain(output_metadata.get("api_calls_by_endpoint"))
    return ApiCalls(int(total), None if by_endpoint is None else {str(k): int(v) for k, v in by_endpoint.items()})


#: ``DataFrame.attrs`` key of a raw pull's frame: its :class:`PulledRecords` (served, unreadable rows),
#: written in the frame's transaction. (Metadata would show the payloads in the UI; attrs travel with
#: the frame to the IO manager and no further.)
PULLED_ATTR = "lgm/pulled"


def with_pulled_records(frame: pd.DataFrame, pulled: PulledRecords) -> pd.DataFrame:
    frame.attrs[PULLED_ATTR] = pulled
    return frame


def pulled_records_of(frame: pd.DataFrame) -> PulledRecords | None:
    pulled = frame.attrs.get(PULLED_ATTR)
    return pulled if isinstance(pulled, PulledRecords) else None


def check_counts_of(output_metadata: Mapping[str, Any]) -> dict[str, CheckCounts] | None:
    """Each partition's failed checks, by partition key, from an asset's ``by_partition`` output metadata."""
    by_partition = _plain(output_metadata.get(BY_PARTITION_METADATA))
    if by_partition is None:
        return None
    return {
        str(key): CheckCounts(int(counts.get("checks_warned") or 0), int(counts.get("checks_failed") or 0))
        for key, counts in by_partition.items()
    }


def _plain(value: Any) -> Any:
    """A metadata entry's value: ``dg.Output`` normalizes entries to ``MetadataValue``s, tests may not."""
    return value.value if isinstance(value, dg.MetadataValue) else value


@functools.cache
def column_schema(table: sa.Table) -> dg.TableSchema:
    """``table``'s columns as the Dagster UI lists them: PostgreSQL type, nullability, primary key."""
    dialect = postgresql.dialect()
    key = [c.name for c in table.primary_key.columns]
    columns = [
        dg.TableColumn(
            c.name,
            c.type.compile(dialect=dialect).lower(),
            description=c.comment,
            constraints=dg.TableColumnConstraints(
                nullable=c.nullable is not False, unique=key == [c.name] or bool(c.unique)
            ),
        )
        for c in table.columns
    ]
    constraints = dg.TableConstraints(other=[f"primary key ({', '.join(key)})"] if key else [])
    return dg.TableSchema(columns=columns, constraints=constraints)


#: The assets whose tables the company's CRM reads: their definitions carry the columns, shown before any run.
READ_BY_THE_CRM = frozenset({"journeys", "leads"})


def table_metadata(tenant: Tenant, asset: str, *, definition: bool = False) -> dict[str, dg.MetadataValue]:
    """Where an asset's rows live and their columns, for every materialization. For a ``definition``, the
    columns of the tables the CRM reads only: every workspace reload (each minute) serializes the definitions'
    metadata, and the raw tables' columns were a sixth of it (docs/performance.md, section 12); theirs show
    from their first materialization on."""
    table = ASSET_TABLES[asset]
    metadata = {"dagster/table_name": dg.MetadataValue.text(f"{tenant.schema}.{table.name}")}
    if not definition or asset in READ_BY_THE_CRM:
        metadata["dagster/column_schema"] = dg.MetadataValue.table_schema(column_schema(table))
    return metadata


class PostgresIOManager(dg.ConfigurableIOManager):
    """Stores the SmartMoving raw assets and ``journeys`` in the tenant's PostgreSQL schema.

    ``tenants`` (tenant key -> :class:`Tenant`) is a nested resource dependency bound in code from the tenants the
    definitions were built from: the asset key's first part picks one. Build it with :meth:`for_tenants`.
    """

    postgres: PostgresResource
    tenants: dg.ResourceDependency[Mapping[str, Tenant]]

    @classmethod
    def for_tenants(cls, postgres: PostgresResource, tenants: Iterable[Tenant]) -> "PostgresIOManager":
        return cls(postgres=postgres, tenants={t.key: t for t in tenants})

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise dg.DagsterInvariantViolationError(
                f"asset {context.asset_key.to_user_string()}: expected a pandas DataFrame, got {type(obj).__name__}"
            )
        tenant, table, name = _tenant_and_table(context.asset_key, self.tenants)
        # A single-run range (the window, the catch-up) writes each of its dates in one transaction.
        scope = (
            output_scopes(context.asset_partition_keys, context.asset_partitions_def, context.output_metadata)
            if context.has_asset_partitions
            else PartitionScope()
        )
        result = write_frame(
            self.postgres.ensure_tenant(tenant),
            tenant,
            table,
            obj,
            scope=scope,
            run_id=context.run_id,
            asset=name,
            api_calls=api_calls_of(context.output_metadata),
            check_counts=check_counts_of(context.output_metadata),
            pulled=pulled_records_of(obj),
        )
        context.add_output_metadata(
            {
                **self._row_counts(context, tenant, table, result.rows),
                **table_metadata(tenant, name),
                "inserted": result.inserted,
                "updated": result.updated,
                "deleted": result.deleted,
                "quarantined": result.quarantined,
            }
        )

    def _row_counts(
        self, context: dg.OutputContext, tenant: Tenant, table: sa.Table, written: int
    ) -> dict[str, dg.MetadataValue]:
        """Dagster's meaning: ``row_count`` is the whole table, ``partition_row_count`` what this partition wrote."""
        if not context.has_asset_partitions:
            return {"dagster/row_count": dg.MetadataValue.int(written)}
        return {
            "dagster/partition_row_count": dg.MetadataValue.int(written),
            "dagster/row_count": dg.MetadataValue.int(self.postgres.row_count(tenant, table)),
        }

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        tenant, table, _ = _tenant_and_table(context.asset_key, self.tenants)
        scopes = (
            [partition_scope(k, context.asset_partitions_def) for k in context.asset_partition_keys]
            if context.has_asset_partitions
            else None
        )
        return read_frame(self.postgres.ensure_tenant(tenant), tenant, table, scopes, _branch_rows(context, tenant))


def _branch_rows(context: dg.InputContext, tenant: Tenant) -> BranchRows | None:
    """The consumer's branch, when its input asks for branch rows only and it runs for one branch."""
    if not context.definition_metadata.get(BRANCH_ROWS) or not context.has_partition_key:
        return None
    try:
        _, location_id = parse_journey_partition_key(context.partition_key)
    except ValueError:
        return None  # not one branch: read everything, which is always correct
    others = sorted(name for name, b in tenant.branch_by_smartmoving_name().items() if b.location_id != location_id)
    return BranchRows(tuple(others))
