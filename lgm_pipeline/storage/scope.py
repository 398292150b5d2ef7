"""What one partition write owns: its slice of a table, the SQL selecting and locking it, its result.

Shared by every write strategy, so that replace and merge agree on which rows a partition is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lgm_pipeline.storage.access import quote_ident
from lgm_pipeline.tenants.config import Tenant


class FrameError(ValueError):
    """The DataFrame does not fit the table or the partition being written."""


@dataclass(frozen=True)
class PartitionScope:
    """The slice of a table one partition owns; ``None`` fields do not restrict."""

    key: str | None = None  # Dagster's partition key string, recorded for humans
    service_date: dt.date | None = None
    location_id: str | None = None


@dataclass(frozen=True)
class WriteResult:
    table: str
    rows: int
    inserted: int
    updated: int
    deleted: int
    quarantined: int


def qualified(conn: Connection, tenant: Tenant, table: sa.Table) -> str:
    return f"{quote_ident(conn, tenant.schema)}.{quote_ident(conn, table.name)}"


def scope_sql(
    scope: PartitionScope,
    alias: str,
    *,
    date: str = "service_date",
    null_location_included: bool = False,
    nulls_included: bool = False,
) -> str:
    """Predicate selecting the scope's rows (``:service_date``/``:location_id`` bound).

    ``date``: the table's partition date column (:func:`tables.date_column`).
    ``null_location_included``: rows of unknown branches belong to every branch of the date.
    ``nulls_included``: a NULL date or branch does not put a row outside the scope.
    """
    parts = ["TRUE"]
    for column, param, value in (
        (date, "service_date", scope.service_date),
        ("location_id", "location_id", scope.location_id),
    ):
        if value is None:
            continue
        test = f"{alias}.{column} = :{param}"
        if nulls_included or (null_location_included and column == "location_id"):
            test = f"({test} OR {alias}.{column} IS NULL)"
        parts.append(test)
    return " AND ".join(parts)


def in_scope(df: pd.DataFrame, scope: PartitionScope, *, date: str = "service_date") -> pd.Series:
    """Which rows of ``df`` the scope owns, as :func:`scope_sql` with ``null_location_included`` says."""
    mask = pd.Series(True, index=df.index)
    if scope.service_date is not None:
        mask &= pd.to_datetime(df[date]).dt.date == scope.service_date
    if scope.location_id is not None and "location_id" in df.columns:
        mask &= df["location_id"].isna() | (df["location_id"] == scope.location_id)
    return mask


def scope_params(scope: PartitionScope) -> dict[str, Any]:
    return {"service_date": scope.service_date, "location_id": scope.location_id}


def lock_partition(conn: Connection, tenant: Tenant, table: sa.Table, scope: PartitionScope) -> None:
    """Serialize writers of the scope until commit (an unrestricted scope: of the whole table)."""
    key = f"{tenant.schema}.{table.name}.{scope.service_date or '*'}.{scope.location_id or '*'}"
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


def count(conn: Connection, sql: str, params: Mapping[str, Any]) -> int:
    return int(conn.execute(sa.text(sql), dict(params)).scalar_one())
