"""Helpers shared by the benchmark scripts: a fresh database, a simulator, a timed sync, results.

Benchmarks run on purpose (never in the test suite). Each one builds its own database on the
server of ``LGM_DATABASE_URL`` (or an embedded server under a temporary ``LGM_HOME``), so a
developer's data is never touched and every figure starts from the same state.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from lgm_pipeline.settings import DATABASE_URL_ENV, HOME_ENV, RATE_LIMIT_OVERRIDE_ENV
from lgm_pipeline.tenants import Tenant, load_tenants

RESULTS_DIR = Path(__file__).with_name("results")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """``bench/results/<name>.json`` (gitignored), stamped with the time and the machine."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {"measured_at": dt.datetime.now(dt.UTC).isoformat(), "machine": machine(), **payload}
    path.write_text(json.dumps(document, indent=2, default=str))
    return path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def lgm_tenant() -> Tenant:
    return next(t for t in load_tenants() if t.key == "lgm")


def quiet_dagster_console(log_file: Path) -> None:
    """Send this process's stderr (Dagster's per-event DEBUG console log) to ``log_file``.

    execute_in_process logs every event to stderr; at 100x that is thousands of lines around the
    one table a benchmark prints. The log stays available for when a run fails.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_file, "w")  # noqa: SIM115 - lives as long as the process
    sys.stderr.flush()
    os.dup2(handle.fileno(), 2)


# --- database ------------------------------------------------------------------------------


def _server_url() -> str:
    """The server to create benchmark databases on: ``LGM_DATABASE_URL``'s, else an embedded one."""
    if os.environ.get(DATABASE_URL_ENV):
        return os.environ[DATABASE_URL_ENV]
    # A temporary LGM_HOME: the embedded server's data never mixes with ./.lgm.
    os.environ.setdefault(HOME_ENV, tempfile.mkdtemp(prefix="lgm_bench_home_"))
    from lgm_pipeline.storage.database import embedded_database_url

    return embedded_database_url()


def migrate_tenants_of(url: str) -> None:
    """Migrate the configured tenants into ``url``: runs only check the schema (the CLI migrates at start-up)."""
    from lgm_pipeline.storage.resources import PostgresDatabase, PostgresResource
    from lgm_pipeline.tenants import load_tenants

    postgres = PostgresResource(database=PostgresDatabase(url=url))
    for tenant in load_tenants():
        postgres.migrate(tenant)


@contextmanager
def fresh_database(tag: str, keep: bool = False) -> Iterator[str]:
    """A new database ``lgm_bench_<tag>`` (and its ``_dagster`` sibling), the configured tenants migrated into it,
    exported as LGM_DATABASE_URL."""
    from lgm_pipeline.storage.database import create_engine, shared_engine

    server = _server_url()
    name = f"lgm_bench_{tag}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)

    def drop() -> None:
        with admin.connect() as conn:
            for database in (name, f"{name}_dagster"):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    drop()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    previous = os.environ.get(DATABASE_URL_ENV)
    os.environ[DATABASE_URL_ENV] = url
    try:
        migrate_tenants_of(url)
        yield url
    finally:
        shared_engine.cache_clear()
        if previous is None:
            os.environ.pop(DATABASE_URL_ENV, None)
        else:
            os.environ[DATABASE_URL_ENV] = previous
        if not keep:
            drop()
        admin.dispose()


# --- simulator -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SimulatorProcess:
    """A simulator in its own process: its CPU and memory are not the pipeline's."""

    base_url: str
    admin_url: str
    api_key: str  # tenant 1's
    process: subprocess.Popen[bytes]
    api_keys: list[str] = field(default_factory=list)  # tenant i's is api_keys[i - 1]

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.admin_url}/stats", timeout=30).json()

    def reset_stats(self) -> None:
        httpx.post(f"{self.admin_url}/stats/reset", timeout=30)

    def generate(self, days: list[dt.date], tenant: int = 1) -> int:
        """Generate the dates up front: generation is the simulator's cost, not the pipeline's."""
        return sum(
            len(
                httpx.get(
                    f"{self.admin_url}/opportunities", params={"date": d.isoformat(), "tenant": tenant}, timeout=600
                ).json()
            )
            for d in days
        )


@contextmanager
def simulator_process(
    customers_per_day: int, rate_limit: int | None, churn: float = 0.03, latency_ms: int = 0, tenants: int = 1
) -> Iterator[SimulatorProcess]:
    """What ``lgm simulator --tenants N`` serves; ``rate_limit`` None is ``--rate-limit 0`` (off)."""
    from lgm_pipeline.simulator import SimulatorConfig

    port = free_port()
    code = (
        "from lgm_pipeline.simulator import FaultConfig, SimulatorConfig, serve_forever\n"
        f"serve_forever(SimulatorConfig(customers_per_day={customers_per_day}, "
        f"rate_limit_per_minute={rate_limit!r}, churn={churn!r}, faults=FaultConfig(latency_ms={latency_ms}), "
        f"tenants={tenants}), port={port})\n"
    )
    keys = SimulatorConfig(tenants=tenants).api_keys()
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    sim = SimulatorProcess(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/_admin", keys[0], process, keys)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{sim.admin_url}/stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("simulator process did not start") from None
                time.sleep(0.1)
        yield sim
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def smartmoving_env(tenant: Tenant, base_url: str, api_key: str, rate_limit: str | None) -> Iterator[None]:
    """Point the tenant at ``base_url``; ``rate_limit`` None leaves LGM_SMARTMOVING_RATE_LIMIT unset."""
    names = (tenant.smartmoving.base_url_env, tenant.smartmoving.api_key_env, RATE_LIMIT_OVERRIDE_ENV)
    saved = {n: os.environ.get(n) for n in names}
    os.environ[tenant.smartmoving.base_url_env] = base_url
    os.environ[tenant.smartmoving.api_key_env] = api_key
    if rate_limit is None:
        os.environ.pop(RATE_LIMIT_OVERRIDE_ENV, None)
    else:
        os.environ[RATE_LIMIT_OVERRIDE_ENV] = rate_limit
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


# --- a timed sync --------------------------------------------------------------------------


@dataclass
class RunTiming:
    job: str
    partition: str | None
    wall_s: float  # RUN_START .. RUN_SUCCESS/FAILURE
    steps: dict[str, float] = field(default_factory=dict)  # step key -> STEP_START .. STEP_SUCCESS
    asset_duration_s: dict[str, float] = field(default_factory=dict)  # "duration_s" metadata per asset


def run_timings(instance: Any) -> list[RunTiming]:
    """Every run of ``instance`` with its step durations, from the event log."""
    import dagster as dg

    timings: list[RunTiming] = []
    for run in reversed(instance.get_runs()):
        starts: dict[str, float] = {}
        timing = RunTiming(run.job_name, run.tags.get("dagster/partition"), 0.0)
        run_start = run_end = None
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None:
                continue
            kind = event.event_type
            if kind == dg.DagsterEventType.RUN_START:
                run_start = entry.timestamp
            elif kind in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE):
                run_end = entry.timestamp
            elif kind == dg.DagsterEventType.STEP_START:
                starts[event.step_key] = entry.timestamp
            elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                timing.steps[event.step_key] = entry.timestamp - starts.get(event.step_key, entry.timestamp)
            elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
                materialization = event.step_materialization_data.materialization
                duration = materialization.metadata.get("duration_s")
                if duration is not None:
                    name = materialization.asset_key.path[-1]
                    timing.asset_duration_s[name] = float(duration.value)
        if run_start is not None and run_end is not None:
            timing.wall_s = run_end - run_start
        timings.append(timing)
    return timings


@dataclass
class TimedSync:
    report: Any  # lgm_pipeline.sync.SyncReport
    wall_s: float
    raw_s: float  # the raw jobs: API fetch + raw frames + raw writes
    journeys_s: float  # the journeys jobs: load raw, normalize, validate, merge
    api_fetch_s: float  # inside the raw assets: the API calls (+ frame building), from their metadata
    runs: list[RunTiming]


def timed_sync(
    tenant: Tenant, dates: list[dt.date] | None = None, run_config: dict | None = None, now: dt.datetime | None = None
) -> TimedSync:
    """``run_sync`` of the window (at ``now``) on an ephemeral instance, with its time split by phase."""
    import dagster as dg

    from lgm_pipeline.definitions import build_definitions
    from lgm_pipeline.sync import run_sync

    defs = build_definitions()  # after the env is set: the rate budget is read when resources are built
    marks: list[tuple[float, str]] = []
    instance = dg.DagsterInstance.ephemeral()
    try:
        started = time.perf_counter()
        report = run_sync(
            defs,
            tenant,
            instance,
            dates,
            progress=lambda m: marks.append((time.perf_counter(), m)),
            run_config=run_config,
            now=now,
        )
        wall = time.perf_counter() - started
        runs = run_timings(instance)
    finally:
        instance.dispose()
    # Progress marks: "pulling ..." before each raw run, its pull line ("...; N API calls, T s") after it.
    raw_s = 0.0
    pulling_at: float | None = None
    for at, message in marks:
        if "pulling" in message:
            pulling_at = at
        elif pulling_at is not None and ("API calls" in message or "FAILED" in message):
            raw_s += at - pulling_at
            pulling_at = None
    api_fetch_s = sum(
        r.asset_duration_s.get(name, 0.0)
        for r in runs
        for name in ("smartmoving_customers", "smartmoving_opportunities")
    )
    return TimedSync(report, wall, raw_s, wall - raw_s, api_fetch_s, runs)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, right-aligned numbers (also valid Markdown)."""
    cells = [[str(h) for h in headers]] + [[f"{v:,.2f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
