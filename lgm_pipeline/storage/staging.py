"""A DataFrame into a constraint-free temp table by COPY: the first step of every write strategy.

Values only travel as COPY data, never formatted into SQL; the frame is converted and sent
:data:`CHUNK_ROWS` rows at a time so that a large partition costs little memory beyond the frame.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine

from lgm_pipeline.storage.access import quote_ident
from lgm_pipeline.storage.scope import FrameError
from lgm_pipeline.storage.tables import date_column

#: Rows converted and sent to COPY at a time: bounds the extra memory beyond the frame itself.
CHUNK_ROWS = 10_000

#: Columns a frame may carry beyond its table's (e.g. the merge's quarantine reasons): staged, not stored.
ExtraColumns = Mapping[str, TypeEngine[Any]]

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


def copy_rows(
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


def staged_columns(table: sa.Table, extra: ExtraColumns) -> list[sa.Column[Any]]:
    """The stage's columns: the table's (without its constraints), then ``extra``."""
    return [sa.Column(c.name, c.type) for c in table.columns] + [sa.Column(n, t) for n, t in extra.items()]


def check_frame_columns(df: pd.DataFrame, table: sa.Table, constants: Mapping[str, Any], extra: ExtraColumns) -> None:
    expected = {c.name for c in staged_columns(table, extra)}
    missing = sorted(expected - set(df.columns) - set(constants))
    unknown = sorted(set(df.columns) - expected)
    if missing or unknown:
        raise FrameError(f"frame for {table.name}: missing columns {missing}, unknown columns {unknown}")


def stage_frame(
    conn: Connection,
    table: sa.Table,
    df: pd.DataFrame,
    constants: Mapping[str, Any],
    *,
    extra: ExtraColumns,
    index_id: bool = False,
) -> str:
    """COPY the frame into a temp table dropped at commit; returns its name.

    ``constants`` fill columns the frame lacks (every row the same value). ``index_id``: the caller
    probes the stage by ``id``; with the index a misestimate (e.g. a target table just loaded and not
    yet analyzed) costs index lookups instead of a quadratic nested loop.
    """
    columns = staged_columns(table, extra)
    stage = f"pg_temp.{quote_ident(conn, 'lgm_stage_' + table.name)}"
    column_ddl = ", ".join(f"{quote_ident(conn, c.name)} {c.type.compile(conn.dialect)}" for c in columns)
    conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} ({column_ddl}) ON COMMIT DROP")
    column_list = ", ".join(quote_ident(conn, c.name) for c in columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {stage} ({column_list}) FROM STDIN") as copy:
        for rows in copy_rows(df, columns, constants):
            for row in rows:
                copy.write_row(row)
    if index_id:
        conn.exec_driver_sql(f"CREATE INDEX ON {stage} (id)")
    # Temp tables are never auto-analyzed; without statistics the joins that follow plan blind. Only
    # the columns filtered and joined on: sampling the JSONB columns cost 0.5 s per 100k rows.
    keys = ["id", date_column(table), "location_id", *extra]
    analyzed = [quote_ident(conn, c) for c in keys if any(c == column.name for column in columns)]
    conn.exec_driver_sql(f"ANALYZE {stage} ({', '.join(analyzed)})" if analyzed else f"ANALYZE {stage}")
    return stage
