"""SmartMoving calls and wall time of a cold and a warm 2-hour cycle for LGM, against the rate-limit floor.

    /tmp/venv/bin/python bench/api_cost.py [--skip-limited]

A cycle is ``run_sync`` of the window (today and tomorrow, 6 branches) on an ephemeral Dagster
instance. Cold: an empty database (every opportunity's details fetched). Warm: the next cycle on
the same database; the simulator's world has moved on (churn 0.03: each customers Page=1
request runs one evolution step), so changed opportunities are fetched again.

Two settings: the real limit (simulator throttles at 120/min, client budget 120 with
LGM_SMARTMOVING_RATE_LIMIT unset) and no limit (simulator None, LGM_SMARTMOVING_RATE_LIMIT=off).
The floor is calls / 120 per minute: no client can be faster at the real limit. The cold cycle
at the real limit takes about 4 minutes (some 425 calls); ``--skip-limited`` skips that setting.
Writes bench/results/api_cost.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS_DIR,
    fresh_database,
    lgm_tenant,
    quiet_dagster_console,
    simulator_process,
    smartmoving_env,
    table,
    timed_sync,
    write_result,
)

from lgm_pipeline.assets.metadata import cycles_per_day

LIMIT_PER_MINUTE = 120
CUSTOMERS_PER_DAY = 185
WARM_CALLS_TARGET = 60


def _cycles(limited: bool) -> list[dict[str, Any]]:
    tenant = lgm_tenant()
    label = f"limit {LIMIT_PER_MINUTE}/min" if limited else "limit off"
    results: list[dict[str, Any]] = []
    with (
        fresh_database("api_cost_limited" if limited else "api_cost_off"),
        simulator_process(CUSTOMERS_PER_DAY, rate_limit=LIMIT_PER_MINUTE if limited else None) as sim,
        smartmoving_env(tenant, sim.base_url, sim.api_key, None if limited else "off"),
    ):
        sim.generate(tenant.sync_window())  # the simulator's generation is not the pipeline's time
        for cycle in ("cold", "warm"):
            sim.reset_stats()
            timed = timed_sync(tenant)
            server = sim.stats()
            report = timed.report
            calls = report.total_api_calls
            floor = calls / LIMIT_PER_MINUTE * 60
            results.append(
                {
                    "setting": label,
                    "cycle": cycle,
                    "ok": report.ok,
                    "api_calls": calls,
                    "api_calls_by_endpoint": dict(sorted(report.api_calls.items())),
                    "server_requests": server.get("total"),
                    "server_429": server.get("rate_limited"),
                    "wall_s": timed.wall_s,
                    "raw_runs_s": timed.raw_s,
                    "journeys_runs_s": timed.journeys_s,
                    "floor_s": floor,
                    "wall_over_floor": timed.wall_s / floor if limited and floor else None,
                    "target_wall_s": 1.5 * floor + 10 if limited else None,
                    "projected_monthly_calls": calls * cycles_per_day() * 30,
                    "journeys": sum(b.rows for b in report.branches),
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-limited", action="store_true", help="only the unthrottled setting (quick)")
    args = parser.parse_args(argv)
    quiet_dagster_console(RESULTS_DIR / "api_cost.log")
    results: list[dict[str, Any]] = []
    if not args.skip_limited:
        results += _cycles(limited=True)
    results += _cycles(limited=False)

    headers = [
        "setting",
        "cycle",
        "API calls",
        "429s",
        "wall s",
        "floor s",
        "target s",
        "raw s",
        "journeys s",
        "monthly calls",
        "status",
    ]
    rows = [
        [
            r["setting"],
            r["cycle"],
            r["api_calls"],
            r["server_429"],
            r["wall_s"],
            r["floor_s"] if r["target_wall_s"] else "-",
            r["target_wall_s"] if r["target_wall_s"] else "-",
            r["raw_runs_s"],
            r["journeys_runs_s"],
            r["projected_monthly_calls"],
            "ok" if r["ok"] else "FAILED",
        ]
        for r in results
    ]
    print(f"LGM cycle (2 dates, 6 branches, {CUSTOMERS_PER_DAY} customers/day, churn 0.03):")
    print(table(headers, rows))
    print(
        f"floor = calls / {LIMIT_PER_MINUTE} per minute; target = 1.5 x floor + 10 s (warm, at the limit); "
        f"monthly = calls x {cycles_per_day()} cycles/day x 30; warm target <= {WARM_CALLS_TARGET} calls"
    )
    path = write_result("api_cost", {"results": results})
    print(f"written {path}", file=sys.__stdout__)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
