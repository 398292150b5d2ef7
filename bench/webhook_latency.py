"""Webhook latency through the daemon: a change in SmartMoving -> the journeys row updated, over N events.

    .venv/bin/python bench/webhook_latency.py --events 50 --out bench/results/webhook_latency.json

Issue 26 item 4. On a fresh database (``fresh_database``) the script:

1. starts the SmartMoving simulator in this process (185 customers a day, its 120 requests a minute, no
   churn: every change is the bench's) and ``lgm serve`` (code server, daemon, webserver and webhook
   receiver, separate processes) with a generated webhook token;
2. lets the refresh schedule tick once (``LGM_REFRESH_CRON`` at the next whole minute) and waits until
   every branch's today and tomorrow are on the board;
3. points the simulator's webhooks at the receiver and makes ``--events`` changes, one every
   ``--spacing-s``: alternately a job moved to the other day of its branch's window and a booking
   cancelled, each on another single-job opportunity;
4. measures, per change, the time from the change (the simulator posts its event at once) to the
   journeys row showing it (polled every 0.2 s), and counts the opportunity details calls the refresh
   runs made.

Ctrl-C stops every process started here and drops the databases.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, fresh_database, lgm_tenant, table, write_result
from multi_tenant import child_process, percentile, tick_cron

from lgm_pipeline.settings import REFRESH_CRON_ENV
from lgm_pipeline.simulator import SimulatorConfig, start_simulator
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.webhooks.receiver import webhook_url

POLL_S = 0.2
EVENT_TIMEOUT_S = 240.0
FIRST_CYCLE_TIMEOUT_S = 600.0


@dataclass
class Change:
    kind: str  # moved | cancelled
    job_id: str
    opportunity_id: str
    expected_date: dt.date | None
    made_at: float
    landed_at: float | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.landed_at is None else self.landed_at - self.made_at


def _journeys(engine: sa.Engine, schema: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT smartmoving_job_id, service_date, location_id, status, "
                f"external_ids ->> 'smartmoving_opportunity_id' AS opportunity_id FROM {schema}.journeys"
            )
        )
        return [dict(r._mapping) for r in rows]


def _window_filled(engine: sa.Engine, tenant: Any) -> bool:
    now = dt.datetime.now(dt.UTC)
    wanted = {(d, b.location_id) for b in tenant.branches for d in b.window(now)}
    with engine.connect() as conn:
        done = conn.execute(
            sa.text(
                f"SELECT DISTINCT service_date, location_id FROM {tenant.schema}.sync_runs "
                "WHERE asset = 'journeys' AND status = 'success'"
            )
        ).all()
    return wanted <= {tuple(r) for r in done}


def _landed(change: Change, rows: dict[str, dict[str, Any]]) -> bool:
    row = rows.get(change.job_id)
    if change.kind == "moved":
        return row is not None and row["service_date"] == change.expected_date
    return row is None or row["status"] == "CANCELLED"


def _victims(engine: sa.Engine, tenant: Any, count: int) -> list[dict[str, Any]]:
    rows = _journeys(engine, tenant.schema)
    per_opportunity: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        per_opportunity.setdefault(row["opportunity_id"], []).append(row)
    single = [jobs[0] for jobs in per_opportunity.values() if len(jobs) == 1 and jobs[0]["status"] == "BOOKED"]
    if len(single) < count:
        raise SystemExit(f"only {len(single)} single-job bookings on the board, {count} events asked")
    return single[:count]


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    tenant = lgm_tenant()
    token = secrets.token_urlsafe(32)
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database("webhook_latency"))
        sim = stack.enter_context(start_simulator(SimulatorConfig(churn=0.0, customers_per_day=185)))
        port, code_port, webhook_port = free_port(), free_port(), free_port()
        launched = dt.datetime.now(dt.UTC)
        tick = (launched + dt.timedelta(seconds=120)).replace(second=0, microsecond=0)
        env = {
            **os.environ,
            "LGM_HOME": str(work / "lgm_home"),
            tenant.smartmoving.base_url_env: sim.base_url,
            tenant.smartmoving.api_key_env: sim.api_key,
            tenant.smartmoving.webhook_token_env or "": token,
            REFRESH_CRON_ENV: tick_cron(tick, tenant.timezone),
        }
        command = [sys.executable, "-m", "lgm_pipeline.cli.main", "serve", "--port", str(port)]
        command += ["--code-port", str(code_port), "--webhook-port", str(webhook_port)]
        serve = stack.enter_context(child_process("serve", command, env, work))
        engine = create_engine(database_url)
        stack.callback(engine.dispose)
        print(f"lgm serve started; the refresh schedule ticks at {tick:%H:%M} UTC (logs: {work})", file=sys.stderr)
        deadline = time.monotonic() + FIRST_CYCLE_TIMEOUT_S
        while not _window_filled(engine, tenant):
            if serve.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the first cycle did not fill the window:\n{serve.log_tail()}")
            time.sleep(2)
        cycle_done = time.time()
        print("first cycle on the board; making changes", file=sys.stderr)

        sim.set_webhooks(webhook_url("127.0.0.1", webhook_port, tenant.key, token))
        sim.reset_stats()
        branches = {b.location_id: b for b in tenant.branches}
        changes: list[Change] = []
        for index, victim in enumerate(_victims(engine, tenant, args.events)):
            while changes and time.monotonic() < changes[-1].made_at + args.spacing_s:
                _poll(engine, tenant, changes)
                time.sleep(POLL_S)
            job_id, opportunity_id = victim["smartmoving_job_id"], victim["opportunity_id"]
            if index % 2 == 0:
                window = branches[victim["location_id"]].window()
                to_date = window[1] if victim["service_date"] == window[0] else window[0]
                sim.world.reschedule_job(job_id, to_date)
                changes.append(Change("moved", job_id, opportunity_id, to_date, time.monotonic()))
            else:
                sim.world.cancel_opportunity(opportunity_id)
                changes.append(Change("cancelled", job_id, opportunity_id, None, time.monotonic()))
        while any(c.landed_at is None for c in changes):
            if time.monotonic() > changes[-1].made_at + EVENT_TIMEOUT_S:
                break
            _poll(engine, tenant, changes)
            time.sleep(POLL_S)
        stats = sim.stats()
        # The URL holds the token: only the counters are kept.
        deliveries = {k: v for k, v in sim.webhook_stats().items() if k != "url"}
        with engine.connect() as conn:
            runs = conn.execute(
                sa.text(
                    f"SELECT count(DISTINCT run_id), count(*) FILTER (WHERE state = 'done') FROM {tenant.schema}"
                    ".webhook_events"
                )
            ).one()
    latencies = [c.latency_s for c in changes if c.latency_s is not None]
    return {
        "events": len(changes),
        "landed": len(latencies),
        "spacing_s": args.spacing_s,
        "tick_to_window_filled_s": round(cycle_done - tick.timestamp(), 1),
        "latency_s": {
            "p50": round(statistics.median(latencies), 1) if latencies else None,
            "p95": round(percentile(latencies, 0.95) or 0, 1) if latencies else None,
            "min": round(min(latencies), 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
        },
        "latency_by_kind_p50_s": {
            kind: round(statistics.median(v), 1)
            for kind in ("moved", "cancelled")
            if (v := [c.latency_s for c in changes if c.kind == kind and c.latency_s is not None])
        },
        "details_calls": stats.get("opportunity", 0),
        "calls_per_event": round(stats.get("opportunity", 0) / max(len(changes), 1), 2),
        "api_calls_total": stats.get("total", 0),
        "webhooks": deliveries,
        "refresh_runs": runs[0],
        "events_done": runs[1],
    }


def _poll(engine: sa.Engine, tenant: Any, changes: list[Change]) -> None:
    waiting = [c for c in changes if c.landed_at is None]
    if not waiting:
        return
    now = time.monotonic()
    rows = {r["smartmoving_job_id"]: r for r in _journeys(engine, tenant.schema)}
    for change in waiting:
        if _landed(change, rows):
            change.landed_at = now


def summary(result: dict[str, Any]) -> str:
    latency = result["latency_s"]
    return table(
        ["events", "landed", "p50 s", "p95 s", "max s", "details calls", "calls/event", "refresh runs"],
        [
            [
                result["events"],
                result["landed"],
                latency["p50"],
                latency["p95"],
                latency["max"],
                result["details_calls"],
                result["calls_per_event"],
                result["refresh_runs"],
            ]
        ],
    )


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--spacing-s", type=float, default=3.0, help="seconds between two changes (default 3)")
    parser.add_argument("--out", type=Path, help="also write the JSON here (default: bench/results/)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with tempfile.TemporaryDirectory(prefix="lgm_webhook_latency_") as folder:
        try:
            result = run(args, Path(folder))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    path = write_result("webhook_latency", result)
    if args.out:
        args.out.write_text(path.read_text())
    print(summary(result))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
