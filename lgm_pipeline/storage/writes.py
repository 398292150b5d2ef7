"""Partition writes and reads: COPY into a staging table, then set-based SQL in one transaction.

Every write is one transaction: stage the frame (COPY, streamed in chunks), take an advisory
lock on the partition, then replace (raw tables) or merge (``journeys``), write the audit trail
and the ``sync_runs`` row. A failure or a killed connection anywhere leaves the previous rows.
Identifiers come from :mod:`tables` and the validated tenant config and are quoted; values only
travel as COPY data or bound parameters.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.domain.mappings import JOURNEY_CREATING_STAGES
from lgm_pipeline.storage.access import quote_ident, quote_literal
from lgm_pipeline.storage.tables import (
    date_column,
    journey_audit,
    journeys,
    journeys_quarantine,
    lead_audit,
    leads,
    leads_quarantine,
    raw_customers,
    raw_jobs,
    raw_opportunities,
    sync_runs,
    tenant_options,
)
from lgm_pipeline.tenants.config import Tenant

#: Rows converted and sent to COPY at a time: bounds the extra memory beyond the frame itself.
CHUNK_ROWS = 10_000

#: Extra column of the ``journeys`` frame: None for valid rows, a non-empty list of
#: ``{rule, column, check, value}`` dicts for rows that go to ``journeys_quarantine``.
QUARANTINE_REASONS = "quarantine_reasons"

#: A raw write inserting more rows than this share of what the table's statistics count
#: analyzes the table itself (autovacuum would, but a minute or more later).
STALE_STATISTICS_SHARE = 0.2

#: Columns not compared when deciding whether a journey changed: they move on every sync.
VOLATILE_JOURNEY_COLUMNS = frozenset({"id", "synced_at", "run_id", "source_fetched_at"})

#: Left out of audit before/after images (still listed in changed_columns): the source payload
#: is kept in ``raw_jobs`` and would multiply the audit table's size for no extra information.
AUDIT_IMAGE_EXCLUDED = frozenset({"raw_payload"})


class FrameError(ValueError):
    """The DataFrame does not fit the table or the partition being written."""


@dataclass(frozen=True)
class PartitionScope:
    """The slice of a table one partition owns; ``None`` fields do not restrict."""

    key: str | None = None  # Dagster's partition key string, recorded for humans
    service_date: dt.date | None = None
    location_id: str | None = None


@dataclass(frozen=True)
class BranchRows:
    """Narrows a raw read to the rows one branch partition can use (``read_frame(branch=...)``).

    Left out: rows tied to an opportunity whose SmartMoving branch name is another configured
    branch's. Everything else stays, notably rows of unknown or missing branches, which every
    branch partition of the date quarantines. It is a superset of the branch's rows (names are
    compared after ``btrim``, which trims less than Python's ``strip``), so the consumer still
    filters after normalizing. Why: each of a date's branch partitions read and normalized the
    whole date's payloads, i.e. all of them once per branch.
    """

    other_branch_names: tuple[str, ...]


@dataclass(frozen=True)
class WriteResult:
    table: str
    rows: int
    inserted: int
    updated: int
    deleted: int
    quarantined: int


@dataclass(frozen=True)
class MergeSpec:
    """A table merged by ``id`` with an audit trail and a quarantine, rather than replaced."""

    table: sa.Table
    quarantine: sa.Table
    audit: sa.Table
    audit_key: str  # the audit table's column naming the merged row
    #: Stage values that may insert a row; any other row only updates one that exists (None: all).
    insertable: Mapping[str, frozenset[str]] | None = None


MERGED: dict[str, MergeSpec] = {
    journeys.name: MergeSpec(
        journeys,
        journeys_quarantine,
        journey_audit,
        "journey_id",
        # Only booked work becomes a journey: a lead or a job first seen cancelled never does.
        {"status": frozenset(str(s) for s in JOURNEY_CREATING_STAGES)},
    ),
    leads.name: MergeSpec(leads, leads_quarantine, lead_audit, "lead_id"),
}


# --- DataFrame -> COPY rows ----------------------------------------------------------------


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_stdlib_to_json = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _json_default(value: Any) -> Any:
    """What orjson cannot encode itself, as the standard encoder would write it.

    Float subclasses (numpy.float64) stay numbers, as ``json`` writes them; anything else, e.g.
    datetimes or Decimals, is its text form, which is what the API sent.
    """
    return float(value) if isinstance(value, float) else str(value)


def to_json(value: Any) -> str:
    """``value`` as JSON text for a JSONB column (COPY data or a bound parameter).

    orjson first: JSON encoding was the largest share of staging a frame (about half of it with
    the standard library). Integers beyond 64 bits, which orjson refuses and JSONB accepts,
    fall back to the standard encoder. NaN and infinities become null: JSONB rejects them, and
    ``json.loads`` (hence an API response) accepts them.
    """
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return _stdlib_to_json(_non_finite_as_null(value))


def _non_finite_as_null(value: Any) -> Any:
    """``value`` with NaN and infinities as None, as orjson writes them (JSONB has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _non_finite_as_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_non_finite_as_null(v) for v in value]
    return value


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _json_texts(values: list[Any]) -> list[str]:
    """Each value's JSON text: one orjson pass, per-value fallback only if orjson refuses one."""
    dumps = orjson.dumps
    try:
        return [dumps(v, default=_json_default, option=_ORJSON_OPTIONS).decode() for v in values]
    except orjson.JSONEncodeError:
        return [to_json(v) for v in values]


def _timestamp_texts(series: pd.Series) -> list[str]:
    """ISO 8601 UTC text of a tz-aware column, straight from numpy (Timestamp objects are slow)."""
    utc = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    return np.datetime_as_string(utc, unit="us", timezone="UTC").tolist()


def _present_values(column: sa.Column[Any], series: pd.Series) -> list[Any]:
    """The (non-null) values of ``series`` in the form COPY's text format takes for ``column``."""
    if isinstance(column.type, JSONB):
        return _json_texts(series.tolist())
    if isinstance(column.type, sa.DateTime) and column.type.timezone and isinstance(series.dtype, pd.DatetimeTZDtype):
        return _timestamp_texts(series)
    if isinstance(column.type, sa.Date):
        return [_to_date(v) for v in series.tolist()]
    # Integers held in a float column (NaN forces float64) would be sent as "3.0".
    if isinstance(column.type, sa.Integer) and not pd.api.types.is_integer_dtype(series.dtype):
        return [int(v) for v in series.tolist()]
    if isinstance(column.type, sa.Boolean) and not pd.api.types.is_bool_dtype(series.dtype):
        return [bool(v) for v in series.tolist()]
    return series.tolist()


def _column_values(column: sa.Column[Any], series: pd.Series) -> list[Any]:
    """The column as Python values for COPY; NaN, None, pd.NA and NaT become NULL."""
    nulls = series.isna().to_numpy()  # element-wise: a list or dict cell is not null
    if not nulls.any():
        return _present_values(column, series)
    present = iter(_present_values(column, series[~nulls]))
    return [None if null else next(present) for null in nulls]


def _copy_rows(
    df: pd.DataFrame, columns: Sequence[sa.Column[Any]], constants: Mapping[str, Any]
) -> Iterator[list[tuple[Any, ...]]]:
    """The frame as COPY rows, CHUNK_ROWS at a time (only one chunk is converted at once)."""
    for start in range(0, len(df), CHUNK_ROWS):
        chunk = df.iloc[start : start + CHUNK_ROWS]
        lists = [
            [constants[c.name]] * len(chunk) if c.name in constants else _column_values(c, chunk[c.name])
            for c in columns
        ]
        yield list(zip(*lists, strict=True))


# --- staging -----------------------------------------------------------------------------


def _stage_columns(table: sa.Table) -> list[sa.Column[Any]]:
    columns = [sa.Column(c.name, c.type) for c in table.columns]
    if table.name in MERGED:
        columns.append(sa.Column(QUARANTINE_REASONS, JSONB))
    return columns


def _check_frame_columns(df: pd.DataFrame, table: sa.Table, constants: Mapping[str, Any]) -> None:
    expected = {c.name for c in _stage_columns(table)}
    missing = sorted(expected - set(df.columns) - set(constants))
    unknown = sorted(set(df.columns) - expected)
    if missing or unknown:
        raise FrameError(f"frame for {table.name}: missing columns {missing}, unknown columns {unknown}")


def _stage(conn: Connection, table: sa.Table, df: pd.DataFrame, constants: Mapping[str, Any]) -> str:
    """COPY the frame into a constraint-free temp table dropped at commit; returns its name."""
    columns = _stage_columns(table)
    stage = f"pg_temp.{quote_ident(conn, 'lgm_stage_' + table.name)}"
    column_ddl = ", ".join(f"{quote_ident(conn, c.name)} {c.type.compile(conn.dialect)}" for c in columns)
    conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} ({column_ddl}) ON COMMIT DROP")
    column_list = ", ".join(quote_ident(conn, c.name) for c in columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {stage} ({column_list}) FROM STDIN") as copy:
        for rows in _copy_rows(df, columns, constants):
            for row in rows:
                copy.write_row(row)
    # The merge probes the stage by id; with the index a misestimate (e.g. a target table just
    # loaded and not yet analyzed) costs index lookups instead of a quadratic nested loop.
    if table.name in MERGED:
        conn.exec_driver_sql(f"CREATE INDEX ON {stage} (id)")
    # Temp tables are never auto-analyzed; without statistics the merge joins plan blind. Only the
    # columns the merge filters and joins on: sampling the JSONB columns cost 0.5 s per 100k rows.
    keys = ["id", date_column(table), "location_id"] + ([QUARANTINE_REASONS] if table.name in MERGED else [])
    analyzed = [quote_ident(conn, c) for c in keys if any(c == column.name for column in columns)]
    conn.exec_driver_sql(f"ANALYZE {stage} ({', '.join(analyzed)})" if analyzed else f"ANALYZE {stage}")
    return stage


# --- shared SQL pieces -------------------------------------------------------------------


def _qualified(conn: Connection, tenant: Tenant, table: sa.Table) -> str:
    return f"{quote_ident(conn, tenant.schema)}.{quote_ident(conn, table.name)}"


def _scope_sql(
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


def _scope_params(scope: PartitionScope) -> dict[str, Any]:
    return {"service_date": scope.service_date, "location_id": scope.location_id}


def _lock_partition(conn: Connection, tenant: Tenant, table: sa.Table, scope: PartitionScope) -> None:
    key = f"{tenant.schema}.{table.name}.{scope.service_date or '*'}.{scope.location_id or '*'}"
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


def _count(conn: Connection, sql: str, params: Mapping[str, Any]) -> int:
    return int(conn.execute(sa.text(sql), dict(params)).scalar_one())


def _record_sync_run(
    conn: Connection,
    tenant: Tenant,
    *,
    asset: str,
    scope: PartitionScope,
    run_id: str,
    started_at: dt.datetime,
    result: WriteResult,
    attrs: Mapping[str, Any],
) -> None:
    conn.execution_options(**tenant_options(tenant)).execute(
        sync_runs.insert().values(
            asset=asset,
            partition_key=scope.key,
            service_date=scope.service_date,
            location_id=scope.location_id,
            run_id=run_id,
            started_at=started_at,
            finished_at=sa.func.clock_timestamp(),
            rows_written=result.rows,
            inserted=result.inserted,
            updated=result.updated,
            deleted=result.deleted,
            quarantined=result.quarantined,
            api_calls=attrs.get("api_calls"),
            api_calls_by_endpoint=attrs.get("api_calls_by_endpoint"),
            status="success",
        )
    )


# --- raw tables: replace the partition ---------------------------------------------------


def _delete_scope(conn: Connection, target: str, scope: PartitionScope, date: str) -> int:
    return conn.execute(
        sa.text(f"DELETE FROM {target} t WHERE {_scope_sql(scope, 't', date=date)}"), _scope_params(scope)
    ).rowcount


def _insert_from_stage(conn: Connection, target: str, stage: str, table: sa.Table, scope: PartitionScope) -> int:
    columns = ", ".join(quote_ident(conn, c.name) for c in table.columns)
    where = _scope_sql(scope, "s", date=date_column(table))
    return conn.execute(
        sa.text(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage} s WHERE {where}"),
        _scope_params(scope),
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
) -> list[WriteResult]:
    """Replace each scope's rows by the staged rows of that scope; a staged row in none is an error."""
    dates = [scope.service_date for scope in scopes]
    date = date_column(table)
    if None not in dates:
        outside = _count(conn, f"SELECT count(*) FROM {stage} s WHERE NOT (s.{date} = ANY(:dates))", {"dates": dates})
        if outside:
            keys = ", ".join(str(scope.key) for scope in scopes)
            raise FrameError(f"{outside} row(s) of the {table.name} frame lie outside partition(s) {keys}")
    target = _qualified(conn, tenant, table)
    results = []
    total_inserted = 0
    new_date = False
    for scope in sorted(scopes, key=lambda s: str(s.service_date)):  # one lock order: no deadlock
        _lock_partition(conn, tenant, table, scope)
        deleted = _delete_scope(conn, target, scope, date)
        inserted = _insert_from_stage(conn, target, stage, table, scope)
        total_inserted += inserted
        new_date = new_date or (scope.service_date is not None and inserted > 0 and deleted == 0)
        rows = _count(
            conn, f"SELECT count(*) FROM {stage} s WHERE {_scope_sql(scope, 's', date=date)}", _scope_params(scope)
        )
        results.append(WriteResult(table.name, rows, inserted=inserted, updated=0, deleted=deleted, quarantined=0))
    _analyze_if_unknown(conn, target, table, total_inserted, new_date)
    return results


# --- journeys: merge by id, with audit and quarantine -----------------------------------


def _image(row_json: str, columns: str) -> str:
    """The jsonb object of only ``columns`` (a text[] expression) taken from ``row_json``."""
    return f"(SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each({row_json}) e WHERE e.key = ANY({columns}))"


def _merge(
    conn: Connection, tenant: Tenant, spec: MergeSpec, stage: str, scope: PartitionScope, rows: int, run_id: str
) -> WriteResult:
    q = lambda name: quote_ident(conn, name)  # noqa: E731
    target = _qualified(conn, tenant, spec.table)
    quarantine = _qualified(conn, tenant, spec.quarantine)
    audit = _qualified(conn, tenant, spec.audit)
    date = date_column(spec.table)
    params = {**_scope_params(scope), "run_id": run_id, "partition_key": scope.key}

    problems = conn.execute(
        sa.text(
            f"""
            SELECT
              count(*) FILTER (WHERE s.{q(QUARANTINE_REASONS)} IS NULL AND NOT ({_scope_sql(scope, "s", date=date)})),
              count(*) FILTER (WHERE s.{q(QUARANTINE_REASONS)} IS NOT NULL
                               AND (jsonb_typeof(s.{q(QUARANTINE_REASONS)}) <> 'array'
                                    OR jsonb_array_length(s.{q(QUARANTINE_REASONS)}) = 0)),
              count(*) FILTER (WHERE s.{q(QUARANTINE_REASONS)} IS NOT NULL
                               AND NOT ({_scope_sql(scope, "s", date=date, nulls_included=True)}))
            FROM {stage} s
            """
        ),
        params,
    ).one()
    if any(problems):
        raise FrameError(
            f"{spec.table.name} frame for partition {scope.key}: {problems[0]} valid row(s) outside the partition, "
            f"{problems[1]} quarantine_reasons not a non-empty list, "
            f"{problems[2]} quarantined row(s) of another date or branch"
        )

    # One journeys writer per tenant at a time, not per partition: a merge also moves rows of other
    # partitions (a job rescheduled or re-branched), and a concurrent merge of the partition the row
    # left could otherwise delete it after this one moved it. Merges take well under a second.
    _lock_partition(conn, tenant, spec.table, PartitionScope())
    valid = f"s.{q(QUARANTINE_REASONS)} IS NULL"
    audit_columns = f"{q(spec.audit_key)}, action, changed_columns, before, after, run_id, partition_key"
    excluded_from_image = "ARRAY[" + ", ".join(f"'{c}'" for c in sorted(AUDIT_IMAGE_EXCLUDED)) + "]"

    # Rows of this partition no longer in it (deleted or moved elsewhere in SmartMoving), and
    # ids quarantined now wherever they were: out of journeys, each with an audit row.
    deleted = conn.execute(
        sa.text(
            f"""
            WITH gone AS (
              DELETE FROM {target} j
              WHERE j.id IN (
                -- A UNION, not an OR: each side plans as a (spillable) join; an OR of the two
                -- turns the anti-join into a per-row subplan, quadratic on large partitions.
                SELECT p.id FROM {target} p
                WHERE {_scope_sql(scope, "p", date=date)}
                  AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.id = p.id AND {valid})
                UNION ALL
                SELECT s.id FROM {stage} s WHERE NOT ({valid})
              )
              RETURNING j.*
            )
            INSERT INTO {audit} ({audit_columns})
            SELECT g.id, 'delete', '{{}}', to_jsonb(g) - {excluded_from_image}, NULL, :run_id, :partition_key
            FROM gone g
            """
        ),
        params,
    ).rowcount

    columns = [c.name for c in spec.table.columns]
    compared = [c for c in columns if c not in VOLATILE_JOURNEY_COLUMNS]
    column_list = ", ".join(q(c) for c in columns)

    differs = "({}) IS DISTINCT FROM ({})".format(
        ", ".join(f"j.{q(c)}" for c in compared), ", ".join(f"s.{q(c)}" for c in compared)
    )
    changed_ids = f"pg_temp.{q('lgm_changed_' + spec.table.name)}"

    changed = "array_remove(ARRAY[{}], NULL)".format(
        ", ".join(f"CASE WHEN j.{q(c)} IS DISTINCT FROM old.{q(c)} THEN '{c}' END" for c in compared)
    )
    # Existing ids whose content changed, wherever they are: a job rescheduled into this
    # partition moves here. Unchanged rows and stale rebuilds (older source_fetched_at) are not
    # touched at all. Found first, in one join: an unchanged rebuild (the usual two-hourly case)
    # stops here instead of joining three ways.
    pending = conn.exec_driver_sql(
        f"""
        CREATE TEMP TABLE {changed_ids} ON COMMIT DROP AS
        SELECT s.id FROM {stage} s JOIN {target} j ON j.id = s.id
        WHERE {valid} AND {differs} AND s.source_fetched_at >= j.source_fetched_at
        """
    ).rowcount
    updated = 0
    if pending:
        conn.exec_driver_sql(f"ANALYZE {changed_ids}")
        # The self-join `old` reads the statement's snapshot, i.e. the values before the update,
        # so the audit gets exactly the changed columns' old and new values.
        updated = conn.execute(
            sa.text(
                f"""
                WITH changed AS (
                  UPDATE {target} j SET {", ".join(f"{q(c)} = s.{q(c)}" for c in columns if c != "id")}
                  FROM {changed_ids} c JOIN {stage} s ON s.id = c.id JOIN {target} old ON old.id = c.id
                  WHERE j.id = c.id
                  RETURNING j.id, {changed} AS columns,
                            to_jsonb(j) - {excluded_from_image} AS new_row,
                            to_jsonb(old) - {excluded_from_image} AS old_row
                )
                INSERT INTO {audit} ({audit_columns})
                SELECT id, 'update', columns, {_image("old_row", "columns")}, {_image("new_row", "columns")},
                       :run_id, :partition_key
                FROM changed
                """
            ),
            params,
        ).rowcount
    # New ids. No other journeys write can insert one meanwhile (tenant lock above); if one did,
    # the primary key fails the whole write rather than overwrite unaudited.
    # The insert's audit row carries no image (``after`` NULL): the inserted values are the
    # journey's row, its later updates' ``before`` images and, if deleted, the delete's full
    # ``before`` image. Not recoverable that way once a row is updated: its insert-time
    # bookkeeping columns (source_fetched_at, synced_at; the audit row's run and time stand for
    # them) and raw_payload (kept per fetch in raw_jobs). Building a jsonb image per inserted row
    # was the costliest part of a first load (about 2.7 s of 100k rows).
    # A row the spec does not let in (for journeys: a lead, a job first seen cancelled) only ever
    # updates a row that exists.
    insertable = "".join(
        f" AND s.{q(column)} IN ({', '.join(quote_literal(conn, v) for v in sorted(values))})"
        for column, values in (spec.insertable or {}).items()
    )
    inserted = conn.execute(
        sa.text(
            f"""
            WITH added AS (
              INSERT INTO {target} ({column_list})
              SELECT {column_list} FROM {stage} s
              WHERE {valid}{insertable}
                AND NOT EXISTS (SELECT 1 FROM {target} t WHERE t.id = s.id)
              RETURNING id
            )
            INSERT INTO {audit} ({audit_columns})
            SELECT a.id, 'insert', '{{}}', NULL, NULL, :run_id, :partition_key
            FROM added a
            """
        ),
        params,
    ).rowcount
    # An id valid now (in any partition) leaves quarantine; this partition's quarantine is
    # replaced by the frame's quarantined rows. Rows of unknown branches (location_id NULL)
    # belong to every branch partition of the date, which all write them identically.
    conn.execute(
        sa.text(f"DELETE FROM {quarantine} qr USING {stage} s WHERE s.id = qr.id AND {valid}"),
        params,
    )
    conn.execute(
        sa.text(
            f"""
            DELETE FROM {quarantine} qr
            WHERE {_scope_sql(scope, "qr", date=date, null_location_included=True)}
              AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.id = qr.id AND NOT ({valid}))
            """
        ),
        params,
    )
    special = {
        "reasons": f"s.{q(QUARANTINE_REASONS)}",
        "record": f"to_jsonb(s) - ARRAY['{QUARANTINE_REASONS}', 'raw_payload']",
        "first_seen_at": "now()",
        "last_seen_at": "now()",
        "client_id": "coalesce(s.client_id, :client_id)",
        date: f"coalesce(s.{q(date)}, CAST(:service_date AS date))",
    }
    held = [c.name for c in spec.quarantine.columns]
    values = ", ".join(special.get(c, f"s.{q(c)}") for c in held)
    updates = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in held if c not in ("id", "first_seen_at"))
    quarantined = conn.execute(
        sa.text(
            f"""
            INSERT INTO {quarantine} AS qr ({", ".join(q(c) for c in held)})
            SELECT {values} FROM {stage} s WHERE NOT ({valid})
            ON CONFLICT (id) DO UPDATE SET {updates}
            """
        ),
        {**params, "client_id": tenant.client_id},
    ).rowcount
    return WriteResult(
        spec.table.name, rows, inserted=inserted, updated=updated, deleted=deleted, quarantined=quarantined
    )


# --- entry points ------------------------------------------------------------------------


def write_frame(
    engine: Engine,
    tenant: Tenant,
    table: sa.Table,
    df: pd.DataFrame,
    *,
    scope: PartitionScope | Sequence[PartitionScope],
    run_id: str,
    asset: str,
) -> WriteResult:
    """Write ``df`` as partition(s) ``scope`` of ``table`` (replace, or merge for ``journeys``).

    Several scopes (the dates of a single-run range) are written in one transaction, each with its
    ``sync_runs`` row; the result adds them up. Every row gets ``run_id`` (the writing run is the
    one source of that fact, whatever the frame says); a single scope's ``service_date`` /
    ``location_id`` fill those columns when the frame lacks them; every other column of the table
    must be present. ``df.attrs`` may carry ``api_calls`` and ``api_calls_by_endpoint`` for the
    ``sync_runs`` row (of the first scope: the calls served the whole range).
    """
    scopes = [scope] if isinstance(scope, PartitionScope) else list(scope)
    if not scopes:
        raise FrameError(f"frame for {table.name}: no partition to write")
    spec = MERGED.get(table.name)
    if spec is not None and len(scopes) > 1 and any(scope.location_id is not None for scope in scopes):
        raise FrameError(f"{table.name} frame: one date x branch partition per write")
    constants: dict[str, Any] = {"run_id": run_id}
    only = scopes[0] if len(scopes) == 1 else PartitionScope()
    date = date_column(table)
    if only.service_date is not None and date in table.columns and date not in df.columns:
        constants[date] = only.service_date
    if only.location_id is not None and "location_id" in table.columns and "location_id" not in df.columns:
        constants["location_id"] = only.location_id
    _check_frame_columns(df, table, constants)
    if spec is not None and (df["id"].isna().any() or df["id"].duplicated().any()):
        raise FrameError(f"{table.name} frame: id must be present and unique")

    if spec is not None and len(scopes) > 1:
        outside = ~df[date].isin([scope.service_date for scope in scopes])
        if outside.any():
            raise FrameError(f"{int(outside.sum())} row(s) of the {table.name} frame lie outside the partitions")

    started_at = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        if spec is not None:
            # A merged table's range (leads of yesterday and today) merges date by date, all in this
            # transaction: each date's rows are staged and merged as a single-date write would be.
            results = []
            for scope in scopes:
                part = df if len(scopes) == 1 else df[df[date] == scope.service_date]
                stage = _stage(conn, table, part, constants)
                results.append(_merge(conn, tenant, spec, stage, scope, len(part), run_id))
                conn.exec_driver_sql(f"DROP TABLE {stage}, pg_temp.{quote_ident(conn, 'lgm_changed_' + table.name)}")
        else:
            stage = _stage(conn, table, df, constants)
            results = _replace_partitions(conn, tenant, table, stage, scopes)
        for index, (part, result) in enumerate(zip(scopes, results, strict=True)):
            _record_sync_run(
                conn,
                tenant,
                asset=asset,
                scope=part,
                run_id=run_id,
                started_at=started_at,
                result=result,
                attrs=df.attrs if index == 0 else {},
            )
    return WriteResult(
        table.name,
        rows=len(df),
        inserted=sum(r.inserted for r in results),
        updated=sum(r.updated for r in results),
        deleted=sum(r.deleted for r in results),
        quarantined=sum(r.quarantined for r in results),
    )


def _of_other_branch(opportunity: sa.FromClause, branch: BranchRows) -> sa.ColumnElement[bool]:
    name = sa.func.btrim(opportunity.c.payload["branch"]["name"].astext)
    # NULL (no branch, or not an object) is "not another branch's": the row stays.
    return sa.func.coalesce(name.in_(branch.other_branch_names), sa.false())


def _branch_condition(table: sa.Table, branch: BranchRows) -> sa.ColumnElement[bool]:
    """Rows of ``table`` not tied to another configured branch (see :class:`BranchRows`)."""
    opportunities = raw_opportunities.alias("o")
    if table is raw_opportunities:
        return sa.not_(_of_other_branch(table, branch))

    def job_kept(job: sa.FromClause) -> sa.ColumnElement[bool]:
        # A job whose opportunity is missing on that date stays: its branch is unknown.
        return ~sa.exists().where(
            opportunities.c.service_date == job.c.service_date,
            opportunities.c.opportunity_id == job.c.opportunity_id,
            _of_other_branch(opportunities, branch),
        )

    if table is raw_jobs:
        return job_kept(table)
    if table is raw_customers:
        # Customers are only looked up by the jobs' customer ids.
        jobs = raw_jobs.alias("j")
        return sa.exists().where(
            jobs.c.service_date == table.c.service_date, jobs.c.customer_id == table.c.customer_id, job_kept(jobs)
        )
    raise ValueError(f"branch-scoped reads are for the raw tables, not {table.name}")


def read_frame(
    engine: Engine,
    tenant: Tenant,
    table: sa.Table,
    scopes: Sequence[PartitionScope] | None,
    branch: BranchRows | None = None,
) -> pd.DataFrame:
    """Rows of the given partitions (``None``: the whole table), ordered by primary key.

    JSONB columns come back as Python objects, dates as ``datetime.date``; no rows gives an
    empty frame with the table's columns. ``branch`` narrows a raw table to one branch's rows.
    """
    stmt = sa.select(table).order_by(*table.primary_key.columns)
    if branch is not None:
        stmt = stmt.where(_branch_condition(table, branch))
    if scopes is not None:
        conditions = []
        for scope in scopes:
            parts = [sa.true()]
            if scope.service_date is not None:
                parts.append(table.c[date_column(table)] == scope.service_date)
            if scope.location_id is not None:
                parts.append(table.c.location_id == scope.location_id)
            conditions.append(sa.and_(*parts))
        stmt = stmt.where(sa.or_(sa.false(), *conditions))
    with engine.connect() as conn:
        result = conn.execution_options(**tenant_options(tenant)).execute(stmt)
        columns = list(result.keys())
        rows = result.all()
    return pd.DataFrame.from_records(rows, columns=columns)
