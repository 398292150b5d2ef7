"""Calls and wall time to pull one full service date (customers + every opportunity detail).

Runs against the in-process simulator on loopback, first with SmartMoving's throttle (120/min)
and the client's rate budget on, then with both off. Prints the figures; asserts nothing.

    /tmp/venv/bin/python bench/pull_one_date.py [--date 2026-11-25] [--skip-limited]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time

from lgm_pipeline.simulator import SimulatorConfig, start_simulator
from lgm_pipeline.smartmoving.client import SmartMovingClient


def pull(rate_limit: int | None, day: dt.date) -> None:
    config = SimulatorConfig(rate_limit_per_minute=rate_limit, churn=0.0)
    with start_simulator(config) as sim:
        # Generate the date before the clock starts: generation cost is the simulator's, not ours.
        expected = len(sim.world.opportunity_ids_on(day))
        sim.reset_stats()
        with SmartMovingClient(sim.base_url, sim.api_key, rate_limit_per_minute=rate_limit) as client:
            started = time.perf_counter()
            customers = client.list_customers(day, day)
            ids = [o["id"] for c in customers for o in c.get("opportunities") or []]
            details = client.get_opportunities(ids)
            wall = time.perf_counter() - started
        server = sim.stats()
    label = f"limit {rate_limit}/min, client budget on" if rate_limit else "limit off, client budget off"
    print(f"{label}:")
    print(f"  customers {len(customers)}, opportunities {len(details)} (simulator has {expected})")
    print(f"  client calls {dict(client.calls)} = {sum(client.calls.values())}")
    print(f"  server: total {server['total']}, rate_limited (429) {server['rate_limited']}")
    print(f"  wall time {wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 25))
    parser.add_argument("--skip-limited", action="store_true", help="only the unthrottled run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.skip_limited:
        pull(120, args.date)
    pull(None, args.date)


if __name__ == "__main__":
    main()
