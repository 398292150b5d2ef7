"""A cold single-tenant ``lgm sync`` against a minimal dlt ``rest_api`` pipeline, same dates, same server.

    .venv/bin/pip install -e ".[bench]"
    LGM_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/dlt_baseline.py [--repeat 3]

One simulator process (185 customers a day, no rate limit, churn 0, the window's dates generated up
front) serves both sides. Each round, on fresh databases of the same PostgreSQL server:

- lgm: ``run_sync`` of the LGM window (``timed_sync``), LGM_SMARTMOVING_RATE_LIMIT=off.
- dlt: ``GET /api/customers`` for the window's date range with the client's filters and paging
  (PageSize 500, Page until the envelope's last page), then ``GET /api/opportunities/{id}`` for
  every listed opportunity (a child ``rest_api`` resource resolved from the list), loaded by dlt's
  ``postgres`` destination with its default write disposition. Details run on 4 threads, as many as
  the lgm client's ``max_concurrency``.

Wall and CPU time of each side (CPU: this process and its reaped children, plus the PostgreSQL
server's processes read from /proc when they are visible), the requests the simulator served, and
the rows landed. The table shows the medians of the rounds and the ratio lgm/dlt. dlt is a
bench-only extra: nothing outside bench/ imports it. Writes bench/results/dlt_baseline.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa
from _common import (
    RESULTS_DIR,
    SimulatorProcess,
    _server_url,
    fresh_database,
    lgm_tenant,
    quiet_dagster_console,
    simulator_process,
    smartmoving_env,
    table,
    timed_sync,
    write_result,
)
from sqlalchemy.engine import make_url

from lgm_pipeline.smartmoving.client import service_date_param

CUSTOMERS_PER_DAY = 185
PAGE_SIZE = 500  # SmartMovingResource.page_size
DETAIL_THREADS = 4  # SmartMovingResource.max_concurrency
DLT_DATASET = "smartmoving"
T = TypeVar("T")


# --- CPU -----------------------------------------------------------------------------------


def _client_cpu_s() -> float:
    # RUSAGE_CHILDREN only counts reaped children: the simulator, still running, stays out of it.
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the fields start after its last ")".
    return text[text.rindex(")") + 2 :].split()


def _postmaster_pid(server_url: str) -> int | None:
    """The PostgreSQL server's main process, when it runs in this machine's process namespace."""
    engine = sa.create_engine(server_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            backend = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    finally:
        engine.dispose()
    fields = _proc_stat(backend)
    return int(fields[1]) if fields else None  # field 4, ppid: a backend's parent is the postmaster


def _server_cpu_s(postmaster: int | None) -> float | None:
    """CPU of the server: its live processes plus what its exited backends left in the postmaster's cutime."""
    if postmaster is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    main = _proc_stat(postmaster)
    if main is None:
        return None
    # utime, stime, cutime, cstime are fields 14-17 (indices 11-14 once pid and comm are cut off).
    total = sum(int(v) for v in main[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == postmaster:
            continue
        fields = _proc_stat(int(entry.name))
        if fields and fields[1] == str(postmaster):
            total += int(fields[11]) + int(fields[12])
    return total / ticks


@dataclass
class Measured:
    tool: str
    wall_s: float
    cpu_s: float
    server_cpu_s: float | None
    requests: dict[str, int]
    rows: dict[str, int]
    detail: dict[str, Any] = field(default_factory=dict)


def measure(postmaster: int | None, work: Callable[[], T]) -> tuple[T, float, float, float | None]:
    """(result, wall s, client CPU s, server CPU s) of ``work``."""
    cpu0, server0, wall0 = _client_cpu_s(), _server_cpu_s(postmaster), time.perf_counter()
    result = work()
    wall, cpu, server1 = time.perf_counter() - wall0, _client_cpu_s() - cpu0, _server_cpu_s(postmaster)
    return result, wall, cpu, None if server0 is None or server1 is None else server1 - server0


# Each side's own bookkeeping (load ids, schema versions, migrations, sync history), not data landed.
BOOKKEEPING_PREFIXES = ("_dlt_", "schema_migrations", "sync_runs")


def table_rows(url: str) -> dict[str, int]:
    """Exact row counts of every user table in the database, bookkeeping tables left out."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.NullPool)
    counts: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text(
                    "SELECT schemaname, tablename FROM pg_tables "
                    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
                )
            ).all()
            for schema, name in tables:
                if name.startswith(BOOKKEEPING_PREFIXES):
                    continue
                counts[f"{schema}.{name}"] = int(
                    conn.execute(sa.text(f'SELECT count(*) FROM "{schema}"."{name}"')).scalar_one()
                )
    finally:
        engine.dispose()
    return counts


def phases(runs: list[Any], wall_s: float) -> dict[str, float]:
    """lgm's wall split by the Dagster runs it launched, from their RUN_START..RUN_SUCCESS.

    By job rather than by TimedSync.raw_s: that one looks for a progress line `lgm sync` no longer prints.
    """
    split = {"raw_runs_s": 0.0, "journeys_runs_s": 0.0, "leads_runs_s": 0.0, "other_runs_s": 0.0}
    for run in runs:
        kind = next((k for k in ("refresh", "journeys", "leads") if run.job.endswith(k)), "other")
        split[{"refresh": "raw_runs_s"}.get(kind, f"{kind}_runs_s")] += run.wall_s
    # Between and around the runs: launching them, reading their results, the sync's own queries.
    split["between_runs_s"] = wall_s - sum(split.values())
    return split


# --- the two sides -------------------------------------------------------------------------


def run_lgm(sim: SimulatorProcess, postmaster: int | None, round_no: int) -> Measured:
    tenant = lgm_tenant()
    with (
        fresh_database(f"dlt_baseline_lgm_{round_no}") as url,
        smartmoving_env(tenant, sim.base_url, sim.api_key, "off"),
    ):
        sim.reset_stats()
        timed, outer_wall, cpu, server_cpu = measure(postmaster, lambda: timed_sync(tenant))
        requests = sim.stats()
        rows = table_rows(url)
    report = timed.report
    if not report.ok:
        raise RuntimeError(f"lgm sync failed in round {round_no}: {report}")
    return Measured(
        "lgm sync",
        timed.wall_s,
        cpu,
        server_cpu,
        requests,
        rows,
        {
            "outer_wall_s": outer_wall,  # timed_sync as a whole: building the definitions, reading the event log
            **phases(timed.runs, timed.wall_s),
            "api_fetch_s": timed.api_fetch_s,
            "api_calls_by_endpoint": dict(sorted(report.api_calls.items())),
            "runs": [
                {"job": r.job, "partition": r.partition, "wall_s": r.wall_s, "steps": r.steps} for r in timed.runs
            ],
        },
    )


def dlt_resources(sim: SimulatorProcess, first: Any, last: Any) -> list[Any]:
    from dlt.sources.rest_api import rest_api_resources

    client = {"base_url": f"{sim.base_url}/api/", "headers": {"x-api-key": sim.api_key}}
    customers = rest_api_resources(
        {
            "client": client,
            "resources": [
                {
                    "name": "customers",
                    "endpoint": {
                        "path": "customers",
                        "params": {
                            "PageSize": PAGE_SIZE,
                            "FromServiceDate": service_date_param(first),
                            "ToServiceDate": service_date_param(last),
                            "IncludeOpportunityInfo": "true",
                        },
                        "paginator": {
                            "type": "page_number",
                            "page_param": "Page",
                            "base_page": 1,
                            "total_path": "totalPages",
                        },
                        "data_selector": "pageResults",
                    },
                }
            ],
        }
    )[0]

    # resolve binds one value per parent row, and a customer row holds a list of opportunities: this
    # step only fans the list out (not loaded), so the details' parent is still the one customers call.
    import dlt

    @dlt.transformer(data_from=customers, selected=False)
    def listed_opportunities(page: list[dict[str, Any]]) -> Any:
        yield [{"id": o["id"]} for customer in page for o in customer.get("opportunities") or []]

    details = rest_api_resources(
        {
            "client": client,
            "resources": [
                listed_opportunities,
                {
                    "name": "opportunities",
                    "parallelized": True,
                    "endpoint": {
                        "path": "opportunities/{id}",
                        "params": {"id": {"type": "resolve", "resource": "listed_opportunities", "field": "id"}},
                        "paginator": "single_page",
                    },
                },
            ],
        }
    )
    return [customers, *(r for r in details if r.name == "opportunities")]


def run_dlt(sim: SimulatorProcess, postmaster: int | None, round_no: int, dates: list[Any]) -> Measured:
    import dlt

    with fresh_database(f"dlt_baseline_dlt_{round_no}") as url, tempfile.TemporaryDirectory() as pipelines_dir:
        sim.reset_stats()

        credentials = make_url(url)
        if credentials.password is None:
            # dlt insists on a password; a trust-auth server ignores whatever is sent.
            credentials = credentials.set(password="unused")

        def work() -> Any:
            pipeline = dlt.pipeline(
                pipeline_name="smartmoving_baseline",
                pipelines_dir=pipelines_dir,  # no local state from an earlier round
                destination=dlt.destinations.postgres(credentials=credentials.render_as_string(hide_password=False)),
                dataset_name=DLT_DATASET,
            )
            return pipeline.run(dlt_resources(sim, dates[0], dates[-1]))

        info, wall, cpu, server_cpu = measure(postmaster, work)
        requests = sim.stats()
        rows = table_rows(url)
    info.raise_on_failed_jobs()
    return Measured("dlt rest_api", wall, cpu, server_cpu, requests, rows)


# --- report --------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(rounds: list[Measured]) -> dict[str, Any]:
    return {
        "tool": rounds[0].tool,
        "wall_s": _median([r.wall_s for r in rounds]),
        "cpu_s": _median([r.cpu_s for r in rounds]),
        "server_cpu_s": _median([r.server_cpu_s for r in rounds]),
        "requests": _median([r.requests.get("total", 0) for r in rounds]),
        "rows": _median([sum(r.rows.values()) for r in rounds]),
        "rounds": [r.__dict__ for r in rounds],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds, each on fresh databases (default 3)")
    args = parser.parse_args(argv)
    quiet_dagster_console(RESULTS_DIR / "dlt_baseline.log")
    # dlt reports usage to its vendor by default: a benchmark makes no calls outside the machine.
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("EXTRACT__WORKERS", str(DETAIL_THREADS))
    # Both sides' imports stay out of the timings: a round measures the work, not loading the libraries.
    import dlt

    import lgm_pipeline.definitions  # noqa: F401

    postmaster = _postmaster_pid(_server_url())
    tenant = lgm_tenant()
    dates = tenant.sync_window()
    lgm_rounds: list[Measured] = []
    dlt_rounds: list[Measured] = []
    with simulator_process(CUSTOMERS_PER_DAY, rate_limit=None, churn=0.0) as sim:
        opportunities = sim.generate(dates)
        for round_no in range(1, args.repeat + 1):
            # lgm first in the first round: it also pays Dagster's first-use costs, as a cold `lgm sync` would.
            lgm_rounds.append(run_lgm(sim, postmaster, round_no))
            dlt_rounds.append(run_dlt(sim, postmaster, round_no, dates))
            print(
                f"round {round_no}: lgm {lgm_rounds[-1].wall_s:.2f} s, dlt {dlt_rounds[-1].wall_s:.2f} s",
                file=sys.__stdout__,
            )

    lgm, base = summarize(lgm_rounds), summarize(dlt_rounds)
    headers = ["tool", "wall s", "CPU s", "PostgreSQL CPU s", "API requests", "rows landed"]
    rows = [
        [
            s["tool"],
            s["wall_s"],
            s["cpu_s"],
            "-" if s["server_cpu_s"] is None else s["server_cpu_s"],
            int(s["requests"]),
            int(s["rows"]),
        ]
        for s in (lgm, base)
    ]
    ratios = {"wall": lgm["wall_s"] / base["wall_s"], "cpu": lgm["cpu_s"] / base["cpu_s"]}
    if lgm["server_cpu_s"] and base["server_cpu_s"]:
        ratios["postgres_cpu"] = lgm["server_cpu_s"] / base["server_cpu_s"]
    split = {
        key: _median([r.detail[key] for r in lgm_rounds])
        for key in ("raw_runs_s", "api_fetch_s", "journeys_runs_s", "leads_runs_s", "other_runs_s", "between_runs_s")
    }
    print(
        f"Cold cycle, dates {dates[0]}..{dates[-1]} ({opportunities} opportunities), "
        f"{CUSTOMERS_PER_DAY} customers/day, limit off, median of {args.repeat}:",
        file=sys.__stdout__,
    )
    print(table(headers, rows), file=sys.__stdout__)
    print(
        "lgm/dlt: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()),
        file=sys.__stdout__,
    )
    print("lgm wall by phase (medians): " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()), file=sys.__stdout__)
    path = write_result(
        "dlt_baseline",
        {
            "dates": [d.isoformat() for d in dates],
            "customers_per_day": CUSTOMERS_PER_DAY,
            "opportunities_generated": opportunities,
            "repeat": args.repeat,
            "dlt_version": dlt.__version__,
            "load_average": os.getloadavg(),
            "lgm": lgm,
            "dlt": base,
            "ratio_lgm_over_dlt": ratios,
            "lgm_phases_s": split,
        },
    )
    print(f"written {path}", file=sys.__stdout__)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
