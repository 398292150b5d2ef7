"""One simulated week of LGM syncs against the bundled simulator: what a dispatcher and a finance analyst see.

    LGM_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/domain_week.py [--days 7] [--start 2026-11-16] [--customers-per-day 185]

Run on purpose (not collected by pytest). One fresh database ``lgm_bench_<tag>`` on the server of
LGM_DATABASE_URL (else an embedded server under a temporary LGM_HOME), one ephemeral Dagster instance.

The simulator runs in its own process, from ``--simulator-python`` (default: this interpreter); give
both runs the same one, so two versions of the pipeline are measured against the same simulator code.
Time moves only when this script says so: the API never evolves the world by itself (the app's churn
is 0); ``POST /_admin/evolve`` (the world's churn, ``--churn``) and ``POST /_admin/close-day`` do.
The dates ``start - history_days .. last + 2`` are generated up front, in order, so the pipeline's
own requests never add records: both versions then see the identical world (compare ``world digest``).

Each simulated day d of the week:
  1. ``POST /_admin/evolve`` (``--evolve-steps`` steps), and ``POST /_admin/close-day`` for d - 1 when
     the simulator has that route;
  2. ``run_sync(defs, tenant, instance, dates=[d, d + 1])`` (the 2-hour cycle's window);
  3. when ``lgm_pipeline.assets.automation.catch_up_dates(tenant, today)`` exists, also
     ``run_sync(..., dates=catch_up_dates(tenant, d), run_config=catch_up_run_config(tenant))``.

After the week, with ``SET lgm.clock = '<last day> 12:00 <tenant timezone>'``, it reads schema
tenant_<key>: journeys by status, lead rows, the day views, money per branch against the same
opportunities counted once (raw_opportunities payloads), quarantine; and compares every journey's
SmartMoving status with the simulator's current one (rows "stale"). Each figure is given over all
service dates and over the week's (start .. last day + 1): a catch-up also fills the dates before it.
Figures whose columns or views do not exist in this version print "n/a". Writes
bench/results/domain_week.json (and the Dagster console log to bench/results/domain_week.log).

Statistics: when a raw table gets a service date it was not analyzed with, the script ANALYZEs the
tenant's tables (a stand-in for autovacuum, off on some servers and always behind a compressed day);
``--no-analyze`` leaves that to the pipeline, whose new-date reads then take tens of seconds per branch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib
import inspect
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import sqlalchemy as sa
from _common import (
    RESULTS_DIR,
    free_port,
    fresh_database,
    lgm_tenant,
    quiet_dagster_console,
    smartmoving_env,
    table,
    write_result,
)

import lgm_pipeline
from lgm_pipeline.tenants import Tenant

DEFAULT_SIMULATOR_PYTHON = Path(sys.executable)  # another version's venv: --simulator-python
LEAD_STATUSES = (0, 1, 3)  # NewLead, LeadInProgress, Opportunity
BOOKED_STATUS = 4
NA = "n/a"
DASH = "-"

# Runs in the simulator's interpreter. -I keeps the working directory off sys.path, so the simulator is
# the code installed in that interpreter's venv, not a lgm_pipeline package that happens to sit in cwd.
_SIMULATOR_CODE = """
import dataclasses, hashlib, json, pathlib, sys
import uvicorn
import lgm_pipeline
from lgm_pipeline.simulator import SimulatorConfig, World, create_app

port, customers_per_day, seed, churn, info = sys.argv[1:6]
config = SimulatorConfig(
    seed=int(seed), customers_per_day=int(customers_per_day), rate_limit_per_minute=None, churn=float(churn)
)
world = World(config)
# The API's own churn is 0: a customers Page=1 request never evolves the world, only /_admin/evolve does.
app = create_app(world, dataclasses.replace(config, churn=0.0))
package = pathlib.Path(lgm_pipeline.__file__).parent
digest = hashlib.sha256()
for source in sorted((package / "simulator").glob("*.py")):
    digest.update(source.name.encode() + b"\\0" + source.read_bytes())
pathlib.Path(info).write_text(json.dumps({
    "package": str(package), "source_sha256": digest.hexdigest()[:16], "close_day": hasattr(World, "close_day"),
}))
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False, lifespan="off")
"""


# --- the simulator -------------------------------------------------------------------------


@dataclass
class Simulator:
    base_url: str
    admin_url: str
    api_key: str
    info: dict[str, Any]
    http: httpx.Client
    close_day_route: bool | None = None  # None: not tried yet

    def evolve(self, steps: int) -> int:
        response = self.http.post(f"{self.admin_url}/evolve", json={"steps": steps})
        response.raise_for_status()
        return len(response.json().get("mutations") or [])

    def close_day(self, day: dt.date) -> int | None:
        """Changes made by closing ``day``; None when this simulator has no close-day route."""
        if self.close_day_route is False:
            return None
        response = self.http.post(f"{self.admin_url}/close-day", json={"date": day.isoformat()})
        if response.status_code in (404, 405) and self.close_day_route is None:
            self.close_day_route = False
            return None
        response.raise_for_status()
        self.close_day_route = True
        return len(response.json().get("changes") or [])

    def opportunity_ids(self, day: dt.date) -> list[str]:
        response = self.http.get(f"{self.admin_url}/opportunities", params={"date": day.isoformat()}, timeout=600)
        response.raise_for_status()
        return list(response.json())

    def world_digest(self, first: dt.date, last: dt.date) -> tuple[int, str]:
        """(opportunities listed on the dates, digest of the ids per date): equal digests, equal worlds."""
        digest = hashlib.sha256()
        count = 0
        for day in _dates(first, last):
            ids = sorted(self.opportunity_ids(day))
            count += len(ids)
            digest.update(f"{day}:{','.join(ids)};".encode())
        return count, digest.hexdigest()[:16]

    def statuses(self, opportunity_ids: list[str]) -> dict[str, int | None]:
        """SmartMoving's current status of each opportunity (None: gone or unreadable)."""
        found: dict[str, int | None] = {}
        headers = {"x-api-key": self.api_key}
        for opp_id in opportunity_ids:
            response = self.http.get(f"{self.base_url}/api/opportunities/{opp_id}", headers=headers)
            status = response.json().get("status") if response.status_code == 200 else None
            found[opp_id] = status if isinstance(status, int) and not isinstance(status, bool) else None
        return found


@contextmanager
def simulator(python: Path, customers_per_day: int, seed: int, churn: float) -> Iterator[Simulator]:
    from lgm_pipeline.simulator import DEMO_API_KEY

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="lgm_domain_week_sim_"))
    info_path = workdir / "info.json"
    log = open(workdir / "simulator.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(python),
            "-I",
            "-c",
            _SIMULATOR_CODE,
            str(port),
            str(customers_per_day),
            str(seed),
            str(churn),
            str(info_path),
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(timeout=120)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get(f"{base}/_admin/stats", timeout=1).status_code == 200 and info_path.exists():
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (workdir / "simulator.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"simulator ({python}) did not start:\n{tail}")
            time.sleep(0.1)
        info = json.loads(info_path.read_text())
        yield Simulator(f"{base}/v1", f"{base}/_admin", DEMO_API_KEY, info, http)
    finally:
        http.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _dates(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


# --- the week ------------------------------------------------------------------------------


def _catch_up(tenant: Tenant) -> tuple[Callable[[Tenant, dt.date], Any] | None, dict | None]:
    """``catch_up_dates`` and the catch-up's run config (``catch_up_run_config(tenant)``) of this version, if any."""
    automation = importlib.import_module("lgm_pipeline.assets.automation")
    run_config = getattr(automation, "catch_up_run_config", None)
    return getattr(automation, "catch_up_dates", None), run_config(tenant) if run_config else None


def _report_summary(report: Any) -> dict[str, Any]:
    branches = list(getattr(report, "branches", []) or [])
    raw_failures = getattr(report, "raw_failures", {}) or {}
    return {
        "ok": bool(getattr(report, "ok", False)),
        "api_calls": int(getattr(report, "total_api_calls", 0) or 0),
        "api_calls_by_endpoint": dict(sorted((getattr(report, "api_calls", {}) or {}).items())),
        "rows": sum(int(getattr(b, "rows", 0) or 0) for b in branches),
        "quarantined": sum(int(getattr(b, "quarantined", 0) or 0) for b in branches),
        "failed_branches": [
            f"{getattr(b, 'service_date', '?')} {getattr(b, 'location_id', '?')}: {getattr(b, 'error', '')}"
            for b in branches
            if not getattr(b, "success", True)
        ],
        "raw_failures": {str(k): str(v) for k, v in raw_failures.items()},
        "duration_s": round(float(getattr(report, "duration_s", 0.0) or 0.0), 1),
    }


class Statistics:
    """ANALYZE the tenant's tables as soon as a raw table holds a service date they have not been analyzed with.

    A stand-in for autovacuum, which in production analyzes between pulls (hours apart) but here is
    either off or a minute behind a day compressed into seconds. Without it a new date's rows are
    estimated at 1 and the branch-scoped raw reads turn into nested loops of tens of seconds each.
    Called as run_sync's progress callback: after each raw pull, before the journeys runs read it.
    """

    RAW_TABLES = ("raw_customers", "raw_opportunities", "raw_jobs")

    def __init__(self, url: str, schema: str, enabled: bool) -> None:
        from lgm_pipeline.storage.database import create_engine

        self.enabled = enabled
        self.schema = schema
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.known: set[dt.date] = set()
        self.analyzed = 0

    def __call__(self, message: str = "") -> None:
        if not self.enabled:
            return
        try:
            with self.engine.connect() as conn:
                tables = [
                    t
                    for (t,) in conn.execute(
                        sa.text(
                            "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = :s AND table_type = 'BASE TABLE'"
                        ),
                        {"s": self.schema},
                    )
                ]
                raw = [t for t in self.RAW_TABLES if t in tables]
                if not raw:
                    return
                union = " UNION ".join(f'SELECT DISTINCT service_date FROM "{self.schema}"."{t}"' for t in raw)
                dates = {d for (d,) in conn.execute(sa.text(union)) if d is not None}
                if dates <= self.known:
                    return
                for table_name in [*raw, *(t for t in ("journeys", "journeys_quarantine") if t in tables)]:
                    conn.execute(sa.text(f'ANALYZE "{self.schema}"."{table_name}"'))
                self.known |= dates
                self.analyzed += 1
        except sa.exc.DBAPIError:
            return  # a schema mid-migration: the next call tries again

    def autovacuum(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW autovacuum")).scalar())

    def dispose(self) -> None:
        self.engine.dispose()


def run_week(
    args: argparse.Namespace,
    tenant: Tenant,
    sim: Simulator,
    generated: tuple[dt.date, dt.date],
    statistics: Statistics,
) -> dict:
    import dagster as dg

    from lgm_pipeline.definitions import build_definitions
    from lgm_pipeline.sync import run_sync

    catch_up_dates, catch_up_config = _catch_up(tenant)
    defs = build_definitions()  # after the env is set: resources read the URL, key and rate budget
    instance = dg.DagsterInstance.ephemeral()
    days: list[dict[str, Any]] = []
    outside: set[dt.date] = set()
    progress = {"progress": statistics} if "progress" in inspect.signature(run_sync).parameters else {}
    try:
        for n in range(args.days):
            day = args.start + dt.timedelta(days=n)
            started = time.perf_counter()
            mutations = sim.evolve(args.evolve_steps) if args.evolve_steps else 0
            closed = sim.close_day(day - dt.timedelta(days=1))
            window = [day, day + dt.timedelta(days=1)]
            report = run_sync(defs, tenant, instance, dates=window, **progress)
            entry: dict[str, Any] = {
                "day": day.isoformat(),
                "evolve_mutations": mutations,
                "close_day_changes": closed,
                "window": _report_summary(report),
                "catch_up_dates": None,
                "catch_up": None,
            }
            if catch_up_dates is not None:
                dates = sorted(catch_up_dates(tenant, day))
                entry["catch_up_dates"] = [d.isoformat() for d in dates]
                outside |= {d for d in dates if not generated[0] <= d <= generated[1]}
                if dates:
                    catch_up = run_sync(defs, tenant, instance, dates=dates, run_config=catch_up_config, **progress)
                    entry["catch_up"] = _report_summary(catch_up)
            entry["wall_s"] = round(time.perf_counter() - started, 1)
            days.append(entry)
            print(_day_line(entry), flush=True)
    finally:
        instance.dispose()
    return {
        "days": days,
        "catch_up_defined": catch_up_dates is not None,
        "catch_up_run_config": catch_up_config,
        "dates_outside_pregenerated": sorted(d.isoformat() for d in outside),
    }


def _day_line(entry: dict[str, Any]) -> str:
    window, catch_up = entry["window"], entry["catch_up"]
    text = (
        f"{entry['day']}: evolve {entry['evolve_mutations']}, close-day {_cell(entry['close_day_changes'])}, "
        f"window {window['api_calls']} calls {window['rows']} rows {'ok' if window['ok'] else 'FAILED'}"
    )
    if catch_up is not None:
        text += (
            f", catch-up {catch_up['api_calls']} calls {catch_up['rows']} rows {'ok' if catch_up['ok'] else 'FAILED'}"
        )
    return f"{text}, {entry['wall_s']} s"


# --- the figures ---------------------------------------------------------------------------


class Database:
    """Read-only queries in AUTOCOMMIT on one session with ``lgm.clock`` set; a failing query gives None."""

    def __init__(self, conn: sa.Connection, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.errors: dict[str, str] = {}

    def relation_exists(self, name: str) -> bool:
        return self.scalar("exists", "SELECT to_regclass(:r) IS NOT NULL", r=f'"{self.schema}"."{name}"') is True

    def columns(self, name: str) -> set[str]:
        rows = self.rows(
            "columns",
            "SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = :t",
            s=self.schema,
            t=name,
        )
        return {r[0] for r in rows or []}

    def q(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    def rows(self, label: str, sql: str, **params: Any) -> list[sa.Row] | None:
        try:
            return list(self.conn.execute(sa.text(sql), params))
        except sa.exc.DBAPIError as exc:
            self.errors[label] = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            return None

    def scalar(self, label: str, sql: str, **params: Any) -> Any:
        rows = self.rows(label, sql, **params)
        return rows[0][0] if rows else None


def _num(value: Any) -> Any:
    if value is None:
        return NA
    if isinstance(value, Decimal):
        return float(value)
    return value


def figures(db: Database, tenant: Tenant, week: tuple[dt.date, dt.date], last_day: dt.date, sim: Simulator) -> dict:
    """Every figure twice: over all service dates, and over the week's dates (start .. last day + 1)."""
    jcols = db.columns("journeys")
    params = {"lo": week[0], "hi": week[1], "today": last_day}
    scopes = {"all": "TRUE", "week": "service_date BETWEEN :lo AND :hi"}
    result: dict[str, dict[str, Any]] = {}

    def both(label: str, sql: str, needs: set[str] = frozenset(), relation: str = "journeys") -> None:
        """``sql`` with ``{scope}`` (a WHERE condition) and ``{rel}``; n/a when a needed column is missing."""
        if not db.relation_exists(relation) or not needs <= (jcols if relation == "journeys" else db.columns(relation)):
            result[label] = {"all": NA, "week": NA}
            return
        result[label] = {
            scope: _num(db.scalar(f"{label} ({scope})", sql.format(scope=cond, rel=db.q(relation)), **params))
            for scope, cond in scopes.items()
        }

    both("journeys rows", "SELECT count(*) FROM {rel} WHERE {scope}")
    statuses: dict[str, dict[str, Any]] = {}
    if "status" in jcols:
        for scope, cond in scopes.items():
            sql = f"SELECT status, count(*) FROM {db.q('journeys')} WHERE {cond} GROUP BY status"
            for status, count in db.rows(f"by status ({scope})", sql, **params) or []:
                statuses.setdefault(str(status), {"all": 0, "week": 0})[scope] = count
    result["by status"] = dict(sorted(statuses.items(), key=lambda kv: -kv[1]["all"]))
    leads = ", ".join(str(s) for s in LEAD_STATUSES)
    both(
        "lead-status rows (0, 1, 3)",
        f"SELECT count(*) FROM {{rel}} WHERE {{scope}} AND smartmoving_status IN ({leads})",
        {"smartmoving_status"},
    )
    both("past-date rows (before last day)", "SELECT count(*) FROM {rel} WHERE {scope} AND service_date < :today")
    both(
        "past-date rows still Booked (4)",
        f"SELECT count(*) FROM {{rel}} WHERE {{scope}} AND service_date < :today "
        f"AND smartmoving_status = {BOOKED_STATUS}",
        {"smartmoving_status"},
    )
    both("journeys_active rows", "SELECT count(*) FROM {rel} WHERE {scope}", relation="journeys_active")
    both(
        "journeys_active rows dated before last day",
        "SELECT count(*) FROM {rel} WHERE {scope} AND service_date < :today",
        relation="journeys_active",
    )
    both("journeys_today rows", "SELECT count(*) FROM {rel} WHERE {scope}", relation="journeys_today")
    both("journeys_tomorrow rows", "SELECT count(*) FROM {rel} WHERE {scope}", relation="journeys_tomorrow")
    both("journeys_cancelled rows", "SELECT count(*) FROM {rel} WHERE {scope}", relation="journeys_cancelled")
    if db.relation_exists("unscheduled_jobs"):
        result["unscheduled_jobs rows"] = {
            "all": _num(db.scalar("unscheduled_jobs", f"SELECT count(*) FROM {db.q('unscheduled_jobs')}")),
            "week": DASH,
        }

    # Money: the rows' own sum, against the same opportunities counted once.
    both("sum estimated_cost", "SELECT coalesce(sum(estimated_cost), 0) FROM {rel} WHERE {scope}", {"estimated_cost"})
    both("sum actual_cost", "SELECT coalesce(sum(actual_cost), 0) FROM {rel} WHERE {scope}", {"actual_cost"})
    by_branch: dict[str, dict[str, Any]] = {}
    if {"estimated_cost", "location_id"} <= jcols:
        for scope, cond in scopes.items():
            sql = (
                f"SELECT location_id, coalesce(sum(estimated_cost), 0) FROM {db.q('journeys')} "
                f"WHERE {cond} GROUP BY location_id"
            )
            for location_id, total in db.rows(f"cost by branch ({scope})", sql, **params) or []:
                by_branch.setdefault(str(location_id), {"all": 0.0, "week": 0.0})[scope] = _num(total)
    order = [b.location_id for b in tenant.branches]
    ranked = sorted(by_branch.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    result["estimated_cost by branch"] = dict(ranked)

    opp_id = _opportunity_id_expression(jcols)
    raw_ok = db.relation_exists("raw_opportunities") and {"opportunity_id", "payload", "fetched_at"} <= db.columns(
        "raw_opportunities"
    )
    if opp_id and raw_ok:
        amount = (
            "CASE jsonb_typeof(o.payload -> 'estimatedTotal' -> '{key}') WHEN 'number' "
            "THEN (o.payload -> 'estimatedTotal' ->> '{key}')::numeric END"
        )
        for scope, cond in scopes.items():
            sql = (
                f"WITH ids AS (SELECT DISTINCT {opp_id} AS id FROM {db.q('journeys')} WHERE {cond}), "
                f"latest AS (SELECT DISTINCT ON (r.opportunity_id) r.opportunity_id, r.payload "
                f"FROM {db.q('raw_opportunities')} r JOIN ids ON ids.id = r.opportunity_id "
                f"ORDER BY r.opportunity_id, r.fetched_at DESC, r.service_date DESC) "
                f"SELECT count(*), coalesce(sum({amount.format(key='subtotal')}), 0), "
                f"coalesce(sum({amount.format(key='finalTotal')}), 0) FROM latest o"
            )
            row = (db.rows(f"distinct opportunities ({scope})", sql, **params) or [(None, None, None)])[0]
            for label, value in zip(
                ("opportunities with a journey", "sum opp. subtotal (once each)", "sum opp. finalTotal (once each)"),
                row,
                strict=True,
            ):
                result.setdefault(label, {})[scope] = _num(value)
    else:
        for label in (
            "opportunities with a journey",
            "sum opp. subtotal (once each)",
            "sum opp. finalTotal (once each)",
        ):
            result[label] = {"all": NA, "week": NA}

    # Staleness: the stored SmartMoving status against the simulator's status now.
    if opp_id and "smartmoving_status" in jcols:
        sql = f"SELECT {opp_id} AS id, smartmoving_status, service_date BETWEEN :lo AND :hi FROM {db.q('journeys')}"
        rows = db.rows("stale", sql, **params)
        if rows is None:
            result["rows whose status differs from SmartMoving now"] = {"all": NA, "week": NA}
        else:
            now = sim.statuses(sorted({r[0] for r in rows if r[0]}))
            stale = [(r[2], now.get(r[0]) != r[1]) for r in rows]
            result["rows whose status differs from SmartMoving now"] = {
                "all": sum(1 for _, s in stale if s),
                "week": sum(1 for w, s in stale if w and s),
            }
    else:
        result["rows whose status differs from SmartMoving now"] = {"all": NA, "week": NA}

    qcols = db.columns("journeys_quarantine")
    if db.relation_exists("journeys_quarantine"):
        week_sql = (
            f"SELECT count(*) FROM {db.q('journeys_quarantine')} WHERE service_date BETWEEN :lo AND :hi"
            if "service_date" in qcols
            else None
        )
        result["quarantine rows"] = {
            "all": _num(db.scalar("quarantine (all)", f"SELECT count(*) FROM {db.q('journeys_quarantine')}")),
            "week": _num(db.scalar("quarantine (week)", week_sql, **params)) if week_sql else NA,
        }
    else:
        result["quarantine rows"] = {"all": NA, "week": NA}
    dates = db.rows("dates", f"SELECT min(service_date), max(service_date) FROM {db.q('journeys')}")
    result["journeys service dates"] = {
        "all": f"{dates[0][0]}..{dates[0][1]}" if dates and dates[0][0] else NA,
        "week": f"{week[0]}..{week[1]}",
    }
    return result


def _opportunity_id_expression(columns: set[str]) -> str | None:
    """SQL for a journey's SmartMoving opportunity id, from whichever columns this version has."""
    parts = []
    if "opportunity_id" in columns:
        parts.append("opportunity_id::text")
    if "smartmoving_opportunity_id" in columns:
        parts.append("smartmoving_opportunity_id::text")
    if "external_ids" in columns:
        parts.append("external_ids ->> 'smartmoving_opportunity_id'")
    if "raw_payload" in columns:
        parts.append("raw_payload -> 'opportunity' ->> 'id'")
    return f"coalesce({', '.join(parts)})" if parts else None


# --- output --------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    return NA if value is None else value


def figures_table(result: dict[str, Any], week: tuple[dt.date, dt.date]) -> str:
    rows: list[list[Any]] = []
    for label, value in result.items():
        if label == "by status":
            rows += [[f"  status {status}", v["all"], v["week"]] for status, v in value.items()]
        elif label == "estimated_cost by branch":
            rows += [[f"  estimated_cost {branch}", v["all"], v["week"]] for branch, v in value.items()]
        else:
            rows.append([label, _cell(value.get("all")), _cell(value.get("week"))])
    return table(["figure", "all service dates", f"{week[0]}..{week[1]}"], rows)


def days_table(days: list[dict[str, Any]]) -> str:
    rows = []
    for d in days:
        window, catch_up = d["window"], d["catch_up"]
        ok = window["ok"] and (catch_up is None or catch_up["ok"])
        rows.append(
            [
                d["day"],
                d["evolve_mutations"],
                _cell(d["close_day_changes"]),
                window["api_calls"],
                window["rows"],
                len(d["catch_up_dates"]) if d["catch_up_dates"] is not None else NA,
                catch_up["api_calls"] if catch_up else NA,
                catch_up["rows"] if catch_up else NA,
                d["wall_s"],
                "ok" if ok else "FAILED",
            ]
        )
    total = [
        "total",
        sum(d["evolve_mutations"] for d in days),
        sum(d["close_day_changes"] or 0 for d in days) if any(d["close_day_changes"] is not None for d in days) else NA,
        sum(d["window"]["api_calls"] for d in days),
        DASH,
        DASH,
        sum(d["catch_up"]["api_calls"] for d in days if d["catch_up"]) if any(d["catch_up"] for d in days) else NA,
        DASH,
        round(sum(d["wall_s"] for d in days), 1),
        "",
    ]
    headers = ["day", "evolved", "closed", "API calls", "rows", "catch-up dates", "c-u calls", "c-u rows", "s", ""]
    return table(headers, [*rows, total])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 11, 16))
    parser.add_argument("--customers-per-day", type=int, default=185)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--churn", type=float, default=0.01, help="share of opportunities one evolve step mutates")
    parser.add_argument("--evolve-steps", type=int, default=3, help="evolve steps per simulated day")
    parser.add_argument("--history-days", type=int, default=14, help="days before --start generated up front")
    parser.add_argument(
        "--simulator-python",
        type=Path,
        default=DEFAULT_SIMULATOR_PYTHON,
        help="interpreter whose lgm_pipeline serves the simulator (the same for runs to compare)",
    )
    parser.add_argument("--label", default=None, help="name of this run in the output (default: the code's path)")
    parser.add_argument("--tag", default="domain_week", help="database lgm_bench_<tag>")
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="do not ANALYZE when a new service date lands (leave statistics to the pipeline and autovacuum)",
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")

    code = str(Path(lgm_pipeline.__file__).resolve().parent.parent)
    label = args.label or code
    quiet_dagster_console(RESULTS_DIR / "domain_week.log")
    tenant = lgm_tenant()
    last_day = args.start + dt.timedelta(days=args.days - 1)
    week = (args.start, last_day + dt.timedelta(days=1))
    generated = (args.start - dt.timedelta(days=args.history_days), last_day + dt.timedelta(days=2))
    clock = f"{last_day.isoformat()} 12:00 {tenant.timezone}"
    started = time.perf_counter()
    print(f"domain week [{label}]: {args.start}..{last_day}, {args.customers_per_day} customers/day", flush=True)

    with (
        fresh_database(args.tag, keep=args.keep_db) as url,
        simulator(args.simulator_python, args.customers_per_day, args.seed, args.churn) as sim,
        smartmoving_env(tenant, sim.base_url, sim.api_key, "off"),
    ):
        world_before = sim.world_digest(*generated)  # generates the dates, in order
        print(
            f"simulator {sim.info['package']} (sources {sim.info['source_sha256']}), "
            f"{world_before[0]} opportunities on {generated[0]}..{generated[1]}, world digest {world_before[1]}",
            flush=True,
        )
        statistics = Statistics(url, tenant.schema, enabled=not args.no_analyze)
        autovacuum = statistics.autovacuum()
        try:
            week_result = run_week(args, tenant, sim, generated, statistics)
        finally:
            statistics.dispose()
        world_after = sim.world_digest(*generated)
        from lgm_pipeline.storage.database import create_engine

        engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT set_config('lgm.clock', :c, false)"), {"c": clock})
                db = Database(conn, tenant.schema)
                result = figures(db, tenant, week, last_day, sim)
                errors = db.errors
        finally:
            engine.dispose()

    print(days_table(week_result["days"]))
    print(f"figures at lgm.clock = '{clock}', schema {tenant.schema}:")
    print(figures_table(result, week))
    notes = [
        f"code {code}; simulator sources {sim.info['source_sha256']}; world digest before {world_before[1]}, "
        f"after {world_after[1]} ({world_after[0]} opportunities)",
        f"close-day route: {'yes' if sim.close_day_route else 'no'}; "
        f"catch_up_dates: {'yes' if week_result['catch_up_defined'] else 'no'}; "
        f"bench ANALYZE runs (new dates): {statistics.analyzed if statistics.enabled else 'off'} "
        f"(server autovacuum {autovacuum}); "
        f"{time.perf_counter() - started:.0f} s",
    ]
    if week_result["dates_outside_pregenerated"]:
        notes.append(
            f"WARNING: catch-up dates outside the generated range {generated[0]}..{generated[1]}: "
            f"{week_result['dates_outside_pregenerated']} (the world is no longer comparable; raise --history-days)"
        )
    if errors:
        notes.append(f"queries that failed (n/a): {errors}")
    print("\n".join(notes))
    failed = [d for d in week_result["days"] if not d["window"]["ok"] or (d["catch_up"] and not d["catch_up"]["ok"])]
    for d in failed:
        for part in ("window", "catch_up"):
            summary = d[part]
            if summary and not summary["ok"]:
                print(f"{d['day']} {part} FAILED: {summary['raw_failures']} {summary['failed_branches'][:3]}")
    path = write_result(
        "domain_week",
        {
            "label": label,
            "code": code,
            "config": {
                "days": args.days,
                "start": args.start.isoformat(),
                "customers_per_day": args.customers_per_day,
                "seed": args.seed,
                "churn": args.churn,
                "evolve_steps": args.evolve_steps,
                "history_days": args.history_days,
                "generated": [generated[0].isoformat(), generated[1].isoformat()],
                "clock": clock,
                "simulator_python": str(args.simulator_python),
                "bench_analyze": not args.no_analyze,
                "bench_analyze_runs": statistics.analyzed,
                "server_autovacuum": autovacuum,
            },
            "simulator": {
                **sim.info,
                "close_day_route": sim.close_day_route,
                "world_before": list(world_before),
                "world_after": list(world_after),
            },
            **week_result,
            "figures": result,
            "query_errors": errors,
        },
    )
    print(f"written {path}", file=sys.__stdout__)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
