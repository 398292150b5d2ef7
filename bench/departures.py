"""What telling why a journey left costs: detail calls for opportunities the list dropped, per 2-hour cycle.

    /tmp/venv/bin/python bench/departures.py [--cycles 12]

One cold window sync, then ``--cycles`` warm ones (a day of 2-hour cycles) on the same database,
against a simulator at LGM volume whose world moves on between cycles (churn 0.03: each customers
Page=1 request runs one evolution step, which reschedules a job by a day, cancels, books...). Per
warm cycle: all opportunity detail calls, those spent only to explain departures
(``departure_details_fetched`` of the opportunities step), and the journeys that left with each
reason. Writes bench/results/departures.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dagster as dg
import sqlalchemy as sa
from _common import fresh_database, lgm_tenant, simulator_process, smartmoving_env, table, write_result

from lgm_pipeline.assets.metadata import cycles_per_day
from lgm_pipeline.definitions import build_definitions
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.sync import run_sync

CUSTOMERS_PER_DAY = 185  # as bench/api_cost.py: LGM's volume


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=cycles_per_day(), help="warm cycles after the cold one")
    args = parser.parse_args(argv)
    tenant = lgm_tenant()
    rows: list[dict[str, Any]] = []
    with (
        fresh_database("departures") as url,
        simulator_process(CUSTOMERS_PER_DAY, rate_limit=None) as sim,
        smartmoving_env(tenant, sim.base_url, sim.api_key, "off"),
    ):
        sim.generate(tenant.sync_window())
        defs = build_definitions()
        instance = dg.DagsterInstance.ephemeral()
        engine = create_engine(url)
        opportunities_key = dg.AssetKey([tenant.key, "smartmoving_opportunities"])
        seen_audit = 0
        try:
            for cycle in range(args.cycles + 1):
                report = run_sync(defs, tenant, instance)
                event = instance.get_latest_materialization_event(opportunities_key)
                metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
                with engine.connect() as conn:
                    audit = conn.execute(
                        sa.text(
                            f"SELECT audit_id, coalesce(reason, 'unexplained') FROM {tenant.schema}.journey_audit "
                            "WHERE action = 'delete' AND audit_id > :seen ORDER BY audit_id"
                        ),
                        {"seen": seen_audit},
                    ).all()
                seen_audit = max([seen_audit, *(a[0] for a in audit)])
                left: dict[str, int] = {}
                for _, reason in audit:
                    left[reason] = left.get(reason, 0) + 1
                detail_calls = metadata.get("departure_details_fetched")
                rows.append(
                    {
                        "cycle": "cold" if cycle == 0 else f"warm {cycle}",
                        "ok": report.ok,
                        "api_calls": report.total_api_calls,
                        "opportunity_calls": report.api_calls.get("opportunity", 0),
                        "departure_calls": detail_calls.value if detail_calls is not None else None,
                        "journeys_left": left,
                    }
                )
                print(rows[-1], flush=True)
        finally:
            instance.dispose()
            engine.dispose()
    warm = rows[1:]
    departure_calls = sum(r["departure_calls"] or 0 for r in warm)
    summary = {
        "warm_cycles": len(warm),
        "warm_api_calls": sum(r["api_calls"] for r in warm),
        "warm_departure_calls": departure_calls,
        "departure_calls_per_cycle": departure_calls / len(warm) if warm else 0,
        "projected_departure_calls_per_month": departure_calls / len(warm) * cycles_per_day() * 30 if warm else 0,
    }
    print(
        table(
            ["cycle", "API calls", "details", "of which departures", "journeys left (reason)"],
            [
                [r["cycle"], r["api_calls"], r["opportunity_calls"], r["departure_calls"], r["journeys_left"]]
                for r in rows
            ],
        )
    )
    print(summary)
    write_result("departures", {"cycles": rows, "summary": summary})
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
