"""Pipeline throughput with the API out of the way: one full window (2 dates x 6 branches) per scale.

    /tmp/venv/bin/python bench/throughput.py [--scales 1 10 100] [--profile 100]

For each scale (x LGM's 185 customers a day) a fresh database and a simulator in its own process
(rate limit off, no latency, dates generated before the clock starts), then ``run_sync`` of the
window in a fresh child process, so peak RSS (getrusage ru_maxrss) is that run's own. Time is
split into the raw runs (API fetch + raw frames + raw writes; the fetch alone from the raw
assets' duration_s metadata) and the journeys runs (load raw, normalize, validate, merge).
``--profile N`` also profiles the N x run with pyinstrument (text written to bench/results/).
Writes bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS_DIR,
    fresh_database,
    lgm_tenant,
    peak_rss_mib,
    quiet_dagster_console,
    simulator_process,
    smartmoving_env,
    table,
    timed_sync,
    write_result,
)

LGM_CUSTOMERS_PER_DAY = 185


def _raw_jobs(tenant_schema: str) -> int:
    import sqlalchemy as sa

    from lgm_pipeline.storage.database import create_engine, database_url

    engine = create_engine(database_url())
    with engine.connect() as conn:
        count = conn.execute(sa.text(f'SELECT count(*) FROM "{tenant_schema}".raw_jobs')).scalar_one()
    engine.dispose()
    return int(count)


def _child(scale: int, base_url: str, api_key: str, url: str, profile: bool) -> dict[str, Any]:
    """One synced window, in a process of its own (spawned: nothing inherited but the arguments)."""
    import os

    os.environ["LGM_DATABASE_URL"] = url
    quiet_dagster_console(RESULTS_DIR / f"throughput_{scale}x.log")
    tenant = lgm_tenant()
    with smartmoving_env(tenant, base_url, api_key, "off"):
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.005)
            profiler.start()
        timed = timed_sync(tenant)
        if profiler is not None:
            profiler.stop()
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            (RESULTS_DIR / f"profile_{scale}x.txt").write_text(text)
    report = timed.report
    jobs = _raw_jobs(tenant.schema)
    non_api = timed.wall_s - timed.api_fetch_s
    return {
        "scale": scale,
        "customers_per_day": LGM_CUSTOMERS_PER_DAY * scale,
        "ok": report.ok,
        "errors": [b.error for b in report.branches if b.error] + list(report.raw_failures.values()),
        "jobs": jobs,
        "journeys_stored": sum(b.rows for b in report.branches),
        "quarantined_rows_written": sum(b.quarantined for b in report.branches),
        "api_calls": report.total_api_calls,
        "wall_s": timed.wall_s,
        "raw_runs_s": timed.raw_s,
        "api_fetch_s": timed.api_fetch_s,
        "journeys_runs_s": timed.journeys_s,
        "without_api_s": non_api,
        "rows_per_s_without_api": jobs / non_api if non_api else None,
        "s_per_1k_rows_without_api": non_api / jobs * 1000 if jobs else None,
        "peak_rss_mib": peak_rss_mib(),
        "runs": [r.__dict__ for r in timed.runs],
    }


def measure(scale: int, profile: bool) -> dict[str, Any]:
    tenant = lgm_tenant()
    with (
        fresh_database(f"throughput_{scale}x") as url,
        simulator_process(LGM_CUSTOMERS_PER_DAY * scale, rate_limit=None, churn=0.0) as sim,
    ):
        sim.generate(tenant.sync_window())
        # A fresh process per scale: its ru_maxrss is this run's peak, not the largest so far.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_child, scale, sim.base_url, sim.api_key, url, profile).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--profile", type=int, nargs="*", default=[], help="scales to profile (pyinstrument)")
    args = parser.parse_args(argv)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results = [measure(scale, scale in args.profile) for scale in args.scales]

    rows = [
        [
            f"{r['scale']}x",
            r["customers_per_day"],
            r["jobs"],
            r["api_calls"],
            r["wall_s"],
            r["api_fetch_s"],
            r["raw_runs_s"] - r["api_fetch_s"],
            r["journeys_runs_s"],
            r["without_api_s"],
            r["rows_per_s_without_api"],
            r["s_per_1k_rows_without_api"],
            r["peak_rss_mib"],
            "ok" if r["ok"] else "FAILED",
        ]
        for r in results
    ]
    headers = [
        "scale",
        "cust/day",
        "jobs",
        "API calls",
        "wall s",
        "API fetch s",
        "raw store s",
        "journeys s",
        "w/o API s",
        "rows/s w/o API",
        "s/1k rows",
        "peak RSS MiB",
        "status",
    ]
    print("Full window (2 dates x 6 branches), simulator limit off, no latency:")
    print(table(headers, rows))
    for r in results:
        if r["errors"]:
            print(f"{r['scale']}x errors: {r['errors'][:3]}")
    path = write_result("throughput", {"results": results})
    print(f"written {path}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
