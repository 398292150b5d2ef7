"""Wall time of ``lgm sync`` for the window against the sum of its Dagster steps.

    /tmp/venv/bin/python bench/dagster_overhead.py [--repeat 2]

Runs the real command (``lgm sync``: a new process, the built-in simulator, Dagster's instance
storage in PostgreSQL) on a fresh database and LGM_HOME, then reads that instance's event log:
each run's RUN_START..RUN_SUCCESS and each step's STEP_START..STEP_SUCCESS. What is not inside a
step is Dagster's (and the process's) overhead: start-up (imports, migrations, simulator), per-run
set-up and tear-down (execute_in_process, event writes), and the gaps between runs. The first
repeat is cold (every detail fetched); later ones are warm. Writes bench/results/dagster_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, fresh_database, run_timings, table, write_result

LGM = Path(sys.executable).with_name("lgm")


def _instance_runs(url: str, dagster_home: Path) -> list[Any]:
    import dagster as dg

    from lgm_pipeline.settings import DAGSTER_STORAGE_URL_ENV
    from lgm_pipeline.storage.database import dagster_storage_url

    os.environ[DAGSTER_STORAGE_URL_ENV] = dagster_storage_url(url)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        return run_timings(instance)
    finally:
        instance.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="lgm sync runs on the same database (1st is cold)")
    args = parser.parse_args(argv)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    with fresh_database("dagster_overhead") as url, tempfile.TemporaryDirectory(prefix="lgm_bench_home_") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTMOVING_", "DAGSTER_HOME"))}
        env.update({"LGM_DATABASE_URL": url, "LGM_HOME": home})
        env.pop("LGM_SMARTMOVING_RATE_LIMIT", None)  # the built-in simulator: no limit on either side
        dagster_home = Path(home) / "dagster"
        seen = 0
        for index in range(args.repeat):
            log = RESULTS_DIR / f"dagster_overhead_{index + 1}.log"
            started = time.time()
            with log.open("w") as out:
                code = subprocess.run([str(LGM), "sync"], env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            finished = time.time()
            runs = _instance_runs(url, dagster_home)[seen:]
            seen += len(runs)
            steps = sum(sum(r.steps.values()) for r in runs)
            in_runs = sum(r.wall_s for r in runs)
            results.append(
                {
                    "cycle": "cold" if index == 0 else "warm",
                    "exit_code": code,
                    "wall_s": finished - started,
                    "runs": len(runs),
                    "steps": sum(len(r.steps) for r in runs),
                    "sum_steps_s": steps,
                    "sum_runs_s": in_runs,
                    "per_run_overhead_s": (in_runs - steps) / len(runs) if runs else None,
                    "outside_runs_s": finished - started - in_runs,
                    "overhead_share": 1 - steps / (finished - started),
                    "run_timings": [r.__dict__ for r in runs],
                }
            )

    headers = [
        "cycle",
        "lgm sync wall s",
        "runs",
        "steps",
        "sum of steps s",
        "sum of runs s",
        "run overhead s/run",
        "outside runs s",
        "not in a step",
    ]
    rows = [
        [
            r["cycle"],
            r["wall_s"],
            r["runs"],
            r["steps"],
            r["sum_steps_s"],
            r["sum_runs_s"],
            r["per_run_overhead_s"],
            r["outside_runs_s"],
            f"{r['overhead_share']:.0%}",
        ]
        for r in results
    ]
    print("`lgm sync` of the window (2 dates x 6 branches, built-in simulator, Dagster storage in PostgreSQL):")
    print(table(headers, rows))
    print("outside runs = process start-up (imports, migrations, simulator), gaps between runs, exit")
    path = write_result("dagster_overhead", {"results": results})
    print(f"written {path}")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
