"""What the branches' own clocks cost in SmartMoving calls: the night's cycles, per-branch windows vs Toronto's.

    .venv/bin/python bench/midnight_window.py

Replays one night of the 2-hour schedule for LGM (20:00 to 06:00 in Toronto) twice, each on a fresh
database against the same simulated world (185 customers a day, churn 0.03, no rate limit):

- ``branch clocks``: ``run_sync`` at each tick, as the schedule now does: the union of the branches'
  today and tomorrow (three dates at 00:00 and 02:00, while Vancouver is still on the previous day);
- ``tenant clock``: the same ticks pulling Toronto's today and tomorrow only (the old window).

Prints the calls of each cycle and the night's totals; the difference is what the third date costs.
Writes bench/results/midnight_window.json.
"""

from __future__ import annotations

import datetime as dt
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

CUSTOMERS_PER_DAY = 185
TICKS_LOCAL = [20, 22, 24, 26, 28, 30]  # hours after midnight on the first evening's date, Toronto time


def _night(branch_clocks: bool, evening: dt.date) -> list[dict[str, Any]]:
    tenant = lgm_tenant()
    start = dt.datetime.combine(evening, dt.time(), tenant.tz)
    rows = []
    tag = "branch" if branch_clocks else "tenant"
    with (
        fresh_database(f"midnight_{tag}"),
        simulator_process(CUSTOMERS_PER_DAY, rate_limit=None) as sim,
        smartmoving_env(tenant, sim.base_url, sim.api_key, "off"),
    ):
        sim.generate([evening + dt.timedelta(days=n) for n in range(3)])
        for hours in TICKS_LOCAL:
            now = start + dt.timedelta(hours=hours)
            if branch_clocks:
                timed = timed_sync(tenant, now=now.astimezone(dt.UTC))
            else:
                today = now.date()
                timed = timed_sync(tenant, dates=[today, today + dt.timedelta(days=1)])
            report = timed.report
            rows.append(
                {
                    "clock": "branch clocks" if branch_clocks else "tenant clock",
                    "tick": now.strftime("%a %H:%M"),
                    "dates": [d.isoformat() for d in report.dates],
                    "api_calls": report.total_api_calls,
                    "journeys_runs": len(report.branches),
                    "ok": report.ok,
                    "wall_s": timed.wall_s,
                }
            )
    return rows


def main() -> int:
    quiet_dagster_console(RESULTS_DIR / "midnight_window.log")
    # A past night: Dagster's partitions end at the real tomorrow, so a replayed future night could not
    # address its day after tomorrow.
    evening = dt.date.today() - dt.timedelta(days=2)
    results = _night(True, evening) + _night(False, evening)
    print(
        table(
            ["clock", "tick (Toronto)", "dates", "API calls", "journeys runs", "wall s", "status"],
            [
                [
                    r["clock"],
                    r["tick"],
                    f"{r['dates'][0]}..{r['dates'][-1]} ({len(r['dates'])})",
                    r["api_calls"],
                    r["journeys_runs"],
                    r["wall_s"],
                    "ok" if r["ok"] else "FAILED",
                ]
                for r in results
            ],
        )
    )
    totals = {c: sum(r["api_calls"] for r in results if r["clock"] == c) for c in ("branch clocks", "tenant clock")}
    print(f"night's calls: branch clocks {totals['branch clocks']}, tenant clock {totals['tenant clock']}")
    path = write_result("midnight_window", {"cycles": results, "totals": totals})
    print(f"written: {path}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
