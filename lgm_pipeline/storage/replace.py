"""The replace strategy of the raw tables: a partition's rows are exactly what the last fetch returned.

Each scope's rows are deleted and the staged rows of that scope inserted, under the scope's lock,
in the caller's transaction: a failure anywhere leaves the previous rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from lgm_pipeline.storage.access import quote_ident
from lgm_pipeline.storage.scope import (
    FrameError,
    PartitionScope,
    WriteResult,
    count,
    lock_partition,
    qualified,
    scope_params,
    scope_sql,
)
from lgm_pipeline.storage.staging import ExtraColumns, stage_frame
from lgm_pipeline.storage.tables import date_column
from lgm_pipeline.tenants.config import Tenant

#: A raw write inserting more rows than this share of what the table's statistics count
#: analyzes the table itself (autovacuum would, but a minute or more later).
STALE_STATISTICS_SHARE = 0.2


class ReplacePartitions:
    """Delete each partition's rows and insert the frame's; several dates in one transaction."""

    extra_columns: ExtraColumns = MappingProxyType({})

    def check(self, table: sa.Table, df: pd.DataFrame, scopes: Sequence[PartitionScope]) -> None:
        """Nothing to check before staging: rows outside the scopes are found in SQL."""

    def write(
        self,
        conn: Connection,
        tenant: Tenant,
        table: sa.Table,
        df: pd.DataFrame,
        scopes: Sequence[PartitionScope],
        constants: Mapping[str, Any],
        run_id: str,
    ) -> dict[PartitionScope, WriteResult]:
        stage = stage_frame(conn, table, df, constants, extra=self.extra_columns)
        return _replace_partitions(conn, tenant, table, stage, scopes)


def _delete_scope(conn: Connection, target: str, scope: PartitionScope, date: str) -> int:
    return conn.execute(
        sa.text(f"DELETE FROM {target} t WHERE {scope_sql(scope, 't', date=date)}"), scope_params(scope)
    ).rowcount


def _insert_from_stage(conn: Connection, target: str, stage: str, table: sa.Table, scope: PartitionScope) -> int:
    columns = ", ".join(quote_ident(conn, c.name) for c in table.columns)
    where = scope_sql(scope, "s", date=date_column(table))
    return conn.execute(
        sa.text(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage} s WHERE {where}"),
        scope_params(scope),
    ).rowcount


def _analyze_if_unknown(conn: Connection, target: str, table: sa.Table, inserted: int, new_date: bool) -> None:
    """ANALYZE ``table`` when its statistics cannot describe what was just written.

    The journeys run reads raw rows seconds after they are written, joining the three raw tables;
    on tables autovacuum had not analyzed yet (a first load, a backfill) the planner chose nested
    loops that took minutes at 100x volume. Likewise for a service date written for the first
    time (a new day entering the window, once a day per table): the statistics place no row on it,
    and a week on, each branch's journeys read took 17-30 s instead of under one (simulated week,
    bench/domain_week.py). Only then: ANALYZE holds a lock that queues other writers of the table
    until commit. The non-JSONB columns only: the joins use those, and sampling payloads is the
    slow part.
    """
    known = conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": target})
    rows_known = known.scalar_one()
    if not new_date and rows_known >= 0 and inserted <= STALE_STATISTICS_SHARE * rows_known:
        return
    analyzed = ", ".join(quote_ident(conn, c.name) for c in table.columns if not isinstance(c.type, JSONB))
    conn.exec_driver_sql(f"ANALYZE {target} ({analyzed})")


def _replace_partitions(
    conn: Connection, tenant: Tenant, table: sa.Table, stage: str, scopes: Sequence[PartitionScope]
) -> dict[PartitionScope, WriteResult]:
    """Replace each scope's rows by the staged rows of that scope; a staged row in none is an error."""
    dates = [scope.service_date for scope in scopes]
    date = date_column(table)
    if None not in dates:
        outside = count(conn, f"SELECT count(*) FROM {stage} s WHERE NOT (s.{date} = ANY(:dates))", {"dates": dates})
        if outside:
            keys = ", ".join(str(scope.key) for scope in scopes)
            raise FrameError(f"{outside} row(s) of the {table.name} frame lie outside partition(s) {keys}")
    target = qualified(conn, tenant, table)
    results: dict[PartitionScope, WriteResult] = {}
    total_inserted = 0
    new_date = False
    for scope in sorted(scopes, key=lambda s: str(s.service_date)):  # one lock order: no deadlock
        lock_partition(conn, tenant, table, scope)
        deleted = _delete_scope(conn, target, scope, date)
        inserted = _insert_from_stage(conn, target, stage, table, scope)
        total_inserted += inserted
        new_date = new_date or (scope.service_date is not None and inserted > 0 and deleted == 0)
        rows = count(
            conn, f"SELECT count(*) FROM {stage} s WHERE {scope_sql(scope, 's', date=date)}", scope_params(scope)
        )
        results[scope] = WriteResult(table.name, rows, inserted=inserted, updated=0, deleted=deleted, quarantined=0)
    _analyze_if_unknown(conn, target, table, total_inserted, new_date)
    return results
