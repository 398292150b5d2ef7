"""Load benchmark: the IO manager's COPY + merge against naive per-row INSERTs.

Run on purpose, not in CI::

    python bench/load_benchmark.py --rows 10000 100000 1000000 --repeat 3

Both paths write the same generated ``journeys`` frame (one date/branch partition) into their
own fresh tenant schema of a new ``lgm_bench_load`` database on the server of ``LGM_DATABASE_URL`` (or
the embedded one); both times include the Python-side conversion (JSON encoding). COPY + merge
is the production path (staging, merge, audit rows, sync_runs). Two baselines do less work
(plain INSERTs, no merge, no audit), each in one transaction:

- ``per_row``: one INSERT executed per row, one round trip each: what a loader writing row by
  row does (the old system's storage step);
- ``per_row_commit``: the same, committing each row (autocommit), as a loader that saves
  record by record does;
- ``executemany``: psycopg 3's ``executemany`` of the same INSERT, which pipelines the
  statements (no wait per row): in effect a batch insert, shown for reference.

The baselines encode JSON with the production encoder, so the ratio measures the load path, not
the encoder. ``copy_floor`` is PostgreSQL's own floor on this machine: the rows, already in COPY
text form (rendered before the clock starts), sent straight into ``journeys`` with one text COPY:
no Python conversion, no staging, no merge, no audit; what this server needs at least to take
the rows in, short of binary COPY or WAL-skipping tricks.

The baselines run only up to ``--per-row-max`` rows (100k by default) because they get slow.
Each case runs in its own process so its peak RSS (``getrusage``) is its own; with ``--repeat``
the median run of each case is reported (and every run's seconds are in the JSON file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd
import sqlalchemy as sa
from _common import fresh_database, peak_rss_mib, write_result
from sqlalchemy.engine import Engine

from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.migrations import migrate
from lgm_pipeline.storage.scope import PartitionScope
from lgm_pipeline.storage.staging import to_json
from lgm_pipeline.storage.tables import journeys
from lgm_pipeline.storage.write import write_frame
from lgm_pipeline.tenants.config import Tenant, parse_tenants

SERVICE_DATE = dt.date(2026, 11, 25)
LOCATION = "loc_bench_001"
#: Method -> how the ratio line names it.
BASELINES = {
    "per_row": "per-row INSERT (one transaction)",
    "per_row_commit": "per-row INSERT with a commit each",
    "executemany": "pipelined executemany",
}
SCOPE = PartitionScope(key=f"{LOCATION}|{SERVICE_DATE}", service_date=SERVICE_DATE, location_id=LOCATION)


def _tenant(key: str) -> Tenant:
    document = {
        "tenants": [
            {
                "key": key,
                "client_id": f"clm_{key}",
                "name": "Benchmark Movers",
                "timezone": "America/Toronto",
                "first_service_date": "2026-01-01",
                "smartmoving": {"api_key_env": "BENCH_API_KEY", "base_url_env": "BENCH_BASE_URL"},
                "branches": [{"location_id": LOCATION, "name": "Bench", "smartmoving_branch_name": "BENCH"}],
            }
        ]
    }
    return parse_tenants(document)[0]


def _frame(rows: int) -> pd.DataFrame:
    """``rows`` realistic journeys, built column-wise (a list of row dicts would double the memory)."""
    fetched = dt.datetime(2026, 11, 25, 6, 0, tzinfo=dt.UTC)
    ids = [f"{i:08d}" for i in range(rows)]
    columns: dict[str, Any] = {
        "id": [f"jrn_{i}" for i in ids],
        "client_id": "clm_bench",
        "location_id": LOCATION,
        "service_date": SERVICE_DATE,
        "status": ["BOOKED" if n % 7 else "COMPLETED" for n in range(rows)],
        "smartmoving_status": [4 if n % 7 else 10 for n in range(rows)],
        "smartmoving_status_name": "Booked",
        "job_number": [f"J-{i}" for i in ids],
        "quote_number": [f"Q-{i}" for i in ids],
        "job_type": 1,
        "job_type_name": "Moving",
        "needs_truck": True,
        "opportunity_type": "Local",
        "title": "2 bedroom apartment",
        "customer_name": [f"Customer {i} O'Brien" for i in ids],
        "customer_phone": "+14035550100",
        "customer_phone_type": "Mobile",
        "customer_email": [f"c{i}@example.com" for i in ids],
        "pickup_address": "123 Main St SW, Calgary, AB",
        "dropoff_address": "45 Elbow Dr, Calgary, AB",
        "stop_addresses": [[] for _ in range(rows)],
        "addresses": [
            [{"type": "origin", "line1": f"{n} Main St SW"}, {"type": "destination", "line1": "45 Elbow Dr"}]
            for n in range(rows)
        ],
        "estimated_cost": [1000 + (n % 500) + 0.5 for n in range(rows)],
        "actual_cost": None,
        "opportunity_subtotal": [1000 + (n % 500) + 0.5 for n in range(rows)],
        "opportunity_tax": 50.0,
        "opportunity_total": [1050 + (n % 500) + 0.5 for n in range(rows)],
        "currency": "CAD",
        "move_size": "2 Bedroom",
        "volume": 600,
        "weight": 4200,
        "sales_assignee": "Priya Shah",
        "confirmed": True,
        "booked": True,
        "branch_name": "BENCH",
        "external_ids": [{"smartmoving_job_id": i, "smartmoving_opportunity_id": f"opp_{i}"} for i in ids],
        "smartmoving_job_id": ids,
        "raw_payload": [
            {"id": i, "jobNumber": f"J-{i}", "notes": "Piano on the 2nd floor, elevator booked 9-11", "crew": 3}
            for i in ids
        ],
        "dq_flags": [[] for _ in range(rows)],
        "source_fetched_at": fetched,
        "synced_at": fetched,
        "run_id": "bench",
        "quarantine_reasons": None,
    }
    return pd.DataFrame(columns)


def _copy_merge(url: str, df: pd.DataFrame) -> dict[str, Any]:
    tenant = _tenant("bench_copy")
    engine = create_engine(url)
    migrate(engine, tenant)
    started = time.perf_counter()
    result = write_frame(engine, tenant, journeys, df, scope=SCOPE, run_id="bench-1", asset="journeys")
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    rerun = write_frame(engine, tenant, journeys, df, scope=SCOPE, run_id="bench-2", asset="journeys")
    rerun_seconds = time.perf_counter() - started
    engine.dispose()
    assert result.inserted == len(df) and rerun.updated == 0
    return {"seconds": seconds, "rerun_unchanged_seconds": rerun_seconds}


def _per_row(url: str, df: pd.DataFrame) -> dict[str, Any]:
    return _plain_inserts(url, df, pipelined=False)


def _per_row_commit(url: str, df: pd.DataFrame) -> dict[str, Any]:
    return _plain_inserts(url, df, pipelined=False, autocommit=True)


def _executemany(url: str, df: pd.DataFrame) -> dict[str, Any]:
    return _plain_inserts(url, df, pipelined=True)


def _copy_floor(url: str, df: pd.DataFrame) -> dict[str, Any]:
    tenant = _tenant("bench_row")
    engine = create_engine(url)
    migrate(engine, tenant)
    target = f'"{tenant.schema}"."journeys"'
    write_frame(engine, tenant, journeys, df, scope=SCOPE, run_id="render", asset="journeys")
    rendered = io.BytesIO()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {target} TO STDOUT") as copy:
            for block in copy:
                rendered.write(block)
        conn.exec_driver_sql(f'TRUNCATE {target}, "{tenant.schema}"."journey_audit"')
    _checkpoint(engine)  # the render above left dirty buffers the timed COPY must not pay for
    started = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {target} FROM STDIN") as copy:
            copy.write(rendered.getbuffer())
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds}


def _plain_inserts(url: str, df: pd.DataFrame, *, pipelined: bool, autocommit: bool = False) -> dict[str, Any]:
    tenant = _tenant("bench_row")
    engine = create_engine(url, **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}))
    migrate(engine, tenant)
    names = [c.name for c in journeys.columns]
    json_columns = {"addresses", "external_ids", "raw_payload", "dq_flags"}
    column_list = ", ".join(f'"{n}"' for n in names)
    statement = f'INSERT INTO "{tenant.schema}"."journeys" ({column_list}) VALUES ({", ".join(["%s"] * len(names))})'
    started = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        rows = (
            tuple(to_json(v) if n in json_columns else v for n, v in zip(names, row, strict=True))
            for row in df[names].itertuples(index=False, name=None)
        )
        if pipelined:
            cursor.executemany(statement, rows)
        else:
            for row in rows:
                cursor.execute(statement, row)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds}


def _case(method: str, rows: int, url: str) -> dict[str, Any]:
    df = _frame(rows)
    frame_rss = peak_rss_mib()
    timing = {
        "copy_merge": _copy_merge,
        "per_row": _per_row,
        "per_row_commit": _per_row_commit,
        "executemany": _executemany,
        "copy_floor": _copy_floor,
    }[method](url, df)
    return {
        "method": method,
        "rows": rows,
        **timing,
        "rows_per_second": rows / timing["seconds"],
        "peak_rss_mb_after_frame": frame_rss,
        "peak_rss_mb": peak_rss_mib(),
    }


def _reset(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for key in ("bench_copy", "bench_row"):
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "tenant_{key}" CASCADE')
    _checkpoint(engine)
    engine.dispose()


def _checkpoint(engine: Engine) -> None:
    """Flush dirty buffers, so the next timed case does not pay for the previous one's.

    Without it, whichever case ran after a heavy one paid for its checkpoint (COPY+merge measured
    2.5 s alone, 4.5 s right after the per-row cases). Needs superuser or pg_checkpoint.
    """
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CHECKPOINT")
    except sa.exc.ProgrammingError:
        print("CHECKPOINT not permitted for this user: cases may pay for each other's writes", file=sys.stderr)


def _measure(url: str, sizes: list[int], per_row_max: int, repeat: int) -> tuple[list[dict[str, Any]], list[int]]:
    """Every case at every size, ``repeat`` times each: the median runs and the sizes per-row skipped."""
    spawn = multiprocessing.get_context("spawn")
    results: list[dict[str, Any]] = []
    skipped: list[int] = []
    for rows in sizes:
        methods = ["copy_merge", "copy_floor"]
        methods += ["per_row", "per_row_commit", "executemany"] if rows <= per_row_max else []
        if rows > per_row_max:
            skipped.append(rows)
        for method in methods:
            runs = []
            for _ in range(repeat):
                _reset(url)
                with spawn.Pool(1) as pool:
                    runs.append(pool.apply(_case, (method, rows, url)))
            # The median run: on a shared 2-core machine single runs vary by a third or more.
            median = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
            results.append({**median, "seconds_of_each_run": [r["seconds"] for r in runs]})
    _reset(url)
    return results, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000], help="frame sizes (max 1,000,000)")
    parser.add_argument("--per-row-max", type=int, default=100_000, help="largest size run per-row too")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the median is reported")
    args = parser.parse_args(argv)
    if any(not 0 < n <= 1_000_000 for n in args.rows):
        parser.error("--rows must be between 1 and 1,000,000")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    with fresh_database("load") as url:
        results, skipped = _measure(url, args.rows, args.per_row_max, args.repeat)

    print(f"{'rows':>9} {'method':<15} {'seconds':>8} {'rows/s':>10} {'RSS frame MB':>13} {'peak RSS MB':>12}")
    for r in results:
        print(
            f"{r['rows']:>9,} {r['method']:<15} {r['seconds']:>8.2f} {r['rows_per_second']:>10,.0f} "
            f"{r['peak_rss_mb_after_frame']:>13,.0f} {r['peak_rss_mb']:>12,.0f}"
        )
    # Each baseline's time over COPY+merge's: how many times faster the production path is.
    ratios: dict[str, dict[str, float]] = {}
    for rows in args.rows:
        by_method = {r["method"]: r for r in results if r["rows"] == rows}
        merge = by_method["copy_merge"]["seconds"]
        ratios[str(rows)] = {m: by_method[m]["seconds"] / merge for m in BASELINES if m in by_method}
        for method, ratio in ratios[str(rows)].items():
            print(f"{rows:>9,} rows: COPY+merge is {ratio:.1f}x faster than {BASELINES[method]}")
        floor = by_method["copy_floor"]["seconds"]
        print(f"{rows:>9,} rows: COPY+merge takes {merge / floor:.1f}x the floor's time (a bare COPY of rendered rows)")
        if "per_row" in by_method:
            ceiling = by_method["per_row"]["seconds"] / floor
            print(f"{rows:>9,} rows: the floor itself is {ceiling:.1f}x faster than per-row (one transaction)")
        rerun = by_method["copy_merge"]["rerun_unchanged_seconds"]
        print(f"{rows:>9,} rows: unchanged rerun (merge finds nothing to do) {rerun:.2f}s")
    if skipped:
        print(f"per-row INSERT not run for {skipped} rows (> --per-row-max {args.per_row_max:,})")
    print(
        "COPY+merge includes staging, merge, one audit row per insert and the sync_runs row; "
        "the baselines are plain INSERTs only."
    )

    path = write_result(
        "load",
        {"results": results, "baseline_seconds_over_copy_merge": ratios, "per_row_skipped_for_rows": skipped},
    )
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
