"""One 2-hour cycle for N simulated tenants through the daemon path: runs, wall time, CPU, memory, UI latency.

    .venv/bin/python bench/multi_tenant.py --tenants 3 --out bench/results/multi_tenant_3.json

Issue 17 item 4. On a fresh database (``fresh_database``) the script:

1. writes a tenants file of N copies of the packaged ``lgm`` tenant (6 branches each), tenant i with
   its own key variables, pointed at one simulator serving N tenants (``lgm simulator --tenants N``'s
   server; its rate limit and the client's, LGM_SMARTMOVING_RATE_LIMIT, both off);
2. starts the production topology as separate processes, each in its own session: a gRPC code
   server (``dagster api grpc``; it launches the run workers), ``dagster-daemon run`` and
   ``dagster-webserver``, on the packaged ``dagster.yaml`` (PostgreSQL storage, 4 concurrent runs);
3. sets LGM_REFRESH_CRON to one minute (``--lead-s`` after start) so the refresh schedule of every
   tenant ticks exactly once, then waits until each tenant's raw run (the leads ride in it) succeeded
   and every journeys partition the automation sensor owes that window is materialized;
4. writes JSON and prints a summary.

How it measures:

- ``runs_per_tenant_cycle``: runs carrying the tenant's tag launched since the tick by the cycle
  (the raw job, with the leads, and runs of ``journeys``); other scheduled runs (freshness checks every 30 min) are
  listed apart.
- ``cycle_wall_s``: the tick's scheduled time to the end of the cycle's last run.
- CPU: for each process tree we started, sum over its live processes of own + reaped children's
  CPU (psutil), at the tick and at the end. A run worker that has exited is in its code server's
  children time (Dagster joins it), so nothing is lost. PostgreSQL backends of the bench databases
  are sampled every ``SAMPLE_INTERVAL_S`` (their parent is the shared postmaster): a backend that
  exits between two samples loses at most that interval of CPU.
- ``peak_rss_mib``: per role, the largest single process and the largest sum over the cycle.
- GraphQL: the asset catalog's query (``assetsOrError`` paged, as the UI's AssetCatalogTableQuery,
  with the latest materialization and partition stats the catalog shows) every
  ``--graphql-interval-s`` during the cycle; p50/p95 of the response time.
- ``dagster_storage_growth_mib``: total size (with indexes and TOAST) of the Dagster database's
  tables at the tick and at the end.

Ctrl-C (or SIGTERM) stops every process started here and drops the databases.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psutil
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, free_port, fresh_database, machine, simulator_process, table

from lgm_pipeline.settings import (
    AUTOMATION_INTERVAL_ENV,
    RATE_LIMIT_OVERRIDE_ENV,
    REFRESH_CRON_ENV,
    TENANTS_FILE_ENV,
    automation_interval_s,
)
from lgm_pipeline.tenants.config import DEFAULT_TENANTS_FILE

SAMPLE_INTERVAL_S = 0.5
CUSTOMERS_PER_DAY = 185
LOCATION_NAME = "lgm_pipeline"
MIB = 1024 * 1024

#: What the catalog shows of each asset (latest materialization, partition counts), on both pages.
CATALOG_ROW_FRAGMENT = """
fragment CatalogRow on AssetNode {
  groupName
  isPartitioned
  isObservable
  isExecutable
  computeKind
  description
  repository { id name location { id name } }
  assetMaterializations(limit: 1) { timestamp runId }
  partitionStats { numMaterialized numMaterializing numPartitions numFailed }
}
"""
#: The asset catalog page: the UI's AssetCatalogTableQuery (assetsOrError, paged) with what the
#: catalog's rows show of each asset (latest materialization, partition counts).
ASSET_CATALOG_QUERY = (
    """
query AssetCatalogTableQuery($cursor: String, $limit: Int!) {
  assetsOrError(cursor: $cursor, limit: $limit) {
    ... on AssetConnection {
      nodes {
        id
        key { path }
        definition {
          id
          ...CatalogRow
        }
      }
      cursor
    }
    ... on PythonError { message }
  }
}
"""
    + CATALOG_ROW_FRAGMENT
)
CATALOG_PAGE_SIZE = 1000
#: One tenant's assets page: the same fields for the tenant's asset keys only (``assetNodes`` filters in the
#: webserver, as the UI's asset group pages do with ``assetNodes(group:)``).
TENANT_ASSETS_QUERY = (
    """
query TenantAssetsQuery($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    id
    assetKey { path }
    ...CatalogRow
  }
}
"""
    + CATALOG_ROW_FRAGMENT
)


# --- the tenants file ----------------------------------------------------------------------


def tenant_key(index: int) -> str:
    return f"t{index:03d}"


def write_tenants_file(path: Path, count: int, first: int = 1) -> None:
    """N copies of the packaged ``lgm`` tenant (numbered from ``first``): same branches, own key, own
    SmartMoving variables."""
    template = next(t for t in yaml.safe_load(DEFAULT_TENANTS_FILE.read_text())["tenants"] if t["key"] == "lgm")
    tenants = []
    for index in range(first, first + count):
        key = tenant_key(index)
        block = json.loads(json.dumps(template))  # a deep copy
        block.update(key=key, client_id=f"clm_bench_{key}", name=f"Bench tenant {index}")
        block["smartmoving"].update(
            api_key_env=f"BENCH_{key.upper()}_SMARTMOVING_API_KEY",
            base_url_env=f"BENCH_{key.upper()}_SMARTMOVING_BASE_URL",
        )
        tenants.append(block)
    path.write_text(yaml.safe_dump({"tenants": tenants}, allow_unicode=True, sort_keys=False))


# --- processes -----------------------------------------------------------------------------


@dataclass
class Child:
    role: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def child_process(
    role: str, command: list[str], env: dict[str, str], log_dir: Path, name: str | None = None
) -> Iterator[Child]:
    """A process in its own session, stopped with everything it started (run workers too) on exit."""
    log_path = log_dir / f"{name or role}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=log_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own group: Ctrl-C reaches only us, and we stop the group in order (ours first, then it).
            start_new_session=True,
        )
    try:
        yield Child(role, process, log_path)
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 20) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    # A code server outlives SIGTERM while its runs wind down; what is left of the group is killed.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def location_name(index: int, locations: int) -> str:
    return LOCATION_NAME if locations == 1 else f"{LOCATION_NAME}_{index:02d}"


def workspace_file(folder: Path, grpc_ports: list[int]) -> Path:
    """One code location per gRPC code server (a tenant group each when there are several)."""
    path = folder / "workspace.yaml"
    servers = [
        {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": location_name(i, len(grpc_ports))}}
        for i, port in enumerate(grpc_ports, start=1)
    ]
    path.write_text(yaml.safe_dump({"load_from": servers}))
    return path


def cpu_by_role(children: list[Child]) -> dict[str, float]:
    """CPU seconds so far of each role's process trees (several code servers add up)."""
    spent: dict[str, float] = {}
    for child in children:
        spent[child.role] = spent.get(child.role, 0.0) + tree_cpu_s(child.process.pid)
    return spent


# --- CPU and memory ------------------------------------------------------------------------


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(root_pid: int) -> float:
    """CPU of the tree so far: each live process's own time plus that of the children it reaped."""
    total = 0.0
    for process in _tree(psutil.Process(root_pid)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


@dataclass
class Sampler:
    """Every SAMPLE_INTERVAL_S: RSS per role, and the CPU of the bench databases' PostgreSQL backends."""

    children: list[Child]
    dagster_db_url: str
    databases: tuple[str, ...]
    peak_rss: dict[str, float] = field(default_factory=dict)  # role -> largest single process, MiB
    peak_total_rss: dict[str, float] = field(default_factory=dict)  # role -> largest sum, MiB
    backend_cpu: dict[tuple[int, float], float] = field(default_factory=dict)  # (pid, started) -> last seen
    backend_cpu_at_start: dict[tuple[int, float], float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._engine = sa.create_engine(self.dagster_db_url, poolclass=sa.pool.StaticPool)
        self.sample()
        self.backend_cpu_at_start = dict(self.backend_cpu)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()
        self._engine.dispose()

    def postgres_cpu_s(self) -> float:
        return sum(cpu - self.backend_cpu_at_start.get(key, 0.0) for key, cpu in self.backend_cpu.items())

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.sample()

    def _record(self, role: str, processes: list[psutil.Process]) -> None:
        sizes = []
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                sizes.append(process.memory_info().rss / MIB)
        if sizes:
            self.peak_rss[role] = max(self.peak_rss.get(role, 0.0), *sizes)
            self.peak_total_rss[role] = max(self.peak_total_rss.get(role, 0.0), sum(sizes))

    def sample(self) -> None:
        for child in self.children:
            tree = _tree(psutil.Process(child.process.pid))
            if child.role == "code_server":
                # The gRPC server launches the run workers (and they their step processes).
                self._record("code_server", tree[:1])
                self._record("run_workers", tree[1:])
            else:
                self._record(child.role, tree)
        backends = []
        with self._engine.connect() as conn:
            pids = conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE datname = ANY(:names) AND pid <> pg_backend_pid()"),
                {"names": list(self.databases)},
            ).scalars()
            for pid in pids:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    process = psutil.Process(pid)
                    times = process.cpu_times()
                    self.backend_cpu[(pid, process.create_time())] = times.user + times.system
                    backends.append(process)
        self._record("postgres_backends", backends)


# --- the UI's asset catalog ----------------------------------------------------------------


@dataclass
class CatalogPoller:
    """Loads the asset catalog like a user keeping the page open, timing each full load."""

    graphql_url: str
    interval_s: float
    #: One tenant's asset keys: time its assets page instead of the whole catalog.
    asset_keys: list[list[str]] | None = None
    timings: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def load_tenant_view(self, client: httpx.Client) -> int:
        variables = {"keys": [{"path": path} for path in self.asset_keys or []]}
        response = client.post(self.graphql_url, json={"query": TENANT_ASSETS_QUERY, "variables": variables})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors'][:1]}")
        return len(body["data"]["assetNodes"])

    def load_catalog(self, client: httpx.Client) -> int:
        cursor: str | None = None
        assets = 0
        while True:
            response = client.post(
                self.graphql_url,
                json={"query": ASSET_CATALOG_QUERY, "variables": {"cursor": cursor, "limit": CATALOG_PAGE_SIZE}},
            )
            response.raise_for_status()
            body = response.json()
            if body.get("errors"):
                raise RuntimeError(f"GraphQL errors: {body['errors'][:1]}")
            page = body["data"]["assetsOrError"]
            if "nodes" not in page:
                raise RuntimeError(f"assetsOrError: {page.get('message')}")
            assets += len(page["nodes"])
            cursor = page["cursor"]
            if len(page["nodes"]) < CATALOG_PAGE_SIZE or not cursor:
                return assets

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _loop(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    if self.asset_keys:
                        self.load_tenant_view(client)
                    else:
                        self.load_catalog(client)
                    self.timings.append(time.perf_counter() - started)
                except (httpx.HTTPError, RuntimeError, KeyError) as error:
                    self.errors.append(str(error)[:300])
                self._stop.wait(self.interval_s)


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


# --- storage -------------------------------------------------------------------------------


def table_sizes(engine: sa.Engine) -> dict[str, int]:
    """Bytes per table of the Dagster database, with its indexes and TOAST."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
        )
        return {name: int(size) for name, size in rows}


# --- the cycle -----------------------------------------------------------------------------


def tick_cron(tick: dt.datetime, timezone: str) -> str:
    """A cron that fires once (at ``tick``, a whole minute) in the schedules' time zone."""
    local = tick.astimezone(ZoneInfo(timezone))
    return f"{local.minute} {local.hour} {local.day} {local.month} *"


@dataclass
class TenantProgress:
    key: str
    expected_partitions: set[str]
    raw_ok: bool = False
    materialized: int = 0
    cycle_runs: dict[str, int] = field(default_factory=dict)  # "raw" | "journeys" -> runs
    other_runs: dict[str, int] = field(default_factory=dict)  # job name -> runs
    in_progress: int = 0
    failed: list[str] = field(default_factory=list)
    last_end: float = 0.0

    @property
    def done(self) -> bool:
        return self.raw_ok and self.materialized >= len(self.expected_partitions) and not self.in_progress


def expected_journeys_partitions(tenant: Any, tick: dt.datetime) -> set[str]:
    """The (date, branch) partitions the automation sensor rebuilds after the tick's raw pull."""
    from lgm_pipeline.naming import journey_partition_key

    return {
        str(journey_partition_key(day.isoformat(), location_id))
        for day in tenant.sync_window(tick)
        for location_id in tenant.location_ids
        if tenant.rebuilds_after_pull(location_id, day, tick)
    }


def cycle_run_records(instance: Any, tick: dt.datetime) -> list[Any]:
    """Every run launched since the tick (a minute's margin: the records' create time is the daemon's)."""
    import dagster as dg

    return list(instance.get_run_records(dg.RunsFilter(created_after=tick - dt.timedelta(seconds=60))))


def tenant_progress(instance: Any, tenant: Any, records: list[Any], expected: set[str]) -> TenantProgress:
    """The tenant's part of the cycle: its raw run (tenant tag) and the runs of its ``journeys`` (the
    location's automation sensor launches those, with its own tags: they are told apart by asset key)."""
    import dagster as dg

    from lgm_pipeline.assets.automation import WORK_TAG, raw_job_name

    progress = TenantProgress(tenant.key, expected)
    journeys_key = tenant.names.asset_key("journeys")
    for record in records:
        run = record.dagster_run
        if run.job_name == raw_job_name(tenant) and run.tags.get(WORK_TAG) == "cycle":
            kind = "raw"
        elif run.asset_selection and journeys_key in run.asset_selection:
            kind = "journeys"
        elif run.tags.get("tenant") == tenant.key:
            progress.other_runs[run.job_name] = progress.other_runs.get(run.job_name, 0) + 1
            continue
        else:
            continue
        progress.cycle_runs[kind] = progress.cycle_runs.get(kind, 0) + 1
        if run.status == dg.DagsterRunStatus.SUCCESS:
            progress.raw_ok |= kind == "raw"
        elif run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            progress.failed.append(f"{run.job_name} {run.run_id} {run.status.value}")
        else:
            progress.in_progress += 1
        progress.last_end = max(progress.last_end, record.end_time or 0.0)
    progress.materialized = len(instance.get_materialized_partitions(journeys_key) & expected)
    return progress


def measure_standing_cost(children: list[Child], args: argparse.Namespace, tenants: Any, tick: dt.datetime) -> dict:
    """CPU of our processes while nothing runs (the sensor ticking, the schedules evaluated): ``--idle-s``."""
    idle_s = min(args.idle_s, (tick - dt.datetime.now(dt.UTC)).total_seconds() - 5)
    before = cpu_by_role(children)
    time.sleep(idle_s)
    spent = {role: round(cpu - before[role], 2) for role, cpu in cpu_by_role(children).items()}
    cores = sum(spent.values()) / idle_s
    result = {
        "idle_s": round(idle_s, 1),
        "automation_interval_s": automation_interval_s(args.tenants_per_location or len(tenants)),
        "cpu_s_by_role": spent,
        "cores": round(cores, 4),
        "cpu_s_per_tenant_per_2h": round(cores * 7200 / len(tenants), 2),
    }
    print(f"standing cost: {json.dumps(result)}", file=sys.stderr)
    return result


def wait_until(what: str, condition: Callable[[], bool], timeout_s: float, children: list[Child]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for child in children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.role} exited ({child.process.returncode}):\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(1)


def schedules_ready(instance: Any, tenants: tuple[Any, ...], locations: int) -> bool:
    """Each tenant's refresh schedule has its state (the tick counts from then) and every code location's
    automation sensor ticked."""
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    from lgm_pipeline.assets.automation import AUTOMATION_SENSOR

    schedules = {s.instigator_name for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)}
    wanted_schedules = {t.names.schedule("every_2_hours") for t in tenants}
    if not wanted_schedules <= schedules:
        return False
    # The automation sensor's first tick only records what exists: a raw pull before it would go unseen.
    ticked = 0
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == AUTOMATION_SENSOR:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
            ticked += any(t.status != TickStatus.STARTED for t in ticks)
    return ticked == locations


def graphql_ready(url: str) -> bool:
    try:
        return httpx.post(url, json={"query": "{ version }"}, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Topology:
    """The production topology's processes on a fresh database, with N simulated tenants."""

    sim: Any
    dagster_home: Path
    dagster_db_url: sa.URL
    databases: tuple[str, ...]
    code_servers: list[Child]
    daemon: Child
    webserver: Child
    graphql_url: str
    locations: int

    @property
    def children(self) -> list[Child]:
        return [*self.code_servers, self.daemon, self.webserver]


def bench_tenants(work: Path, count: int) -> tuple[Any, ...]:
    """N copies of the LGM tenant in ``work``'s tenants file, which this process and its children load."""
    from lgm_pipeline.tenants import load_tenants

    tenants_file = work / "tenants.yaml"
    write_tenants_file(tenants_file, count)
    os.environ[TENANTS_FILE_ENV] = str(tenants_file)
    os.environ["LGM_HOME"] = str(work / "lgm_home")
    os.environ.pop("DAGSTER_HOME", None)  # lgm_runtime writes the packaged instance into LGM_HOME
    os.environ[RATE_LIMIT_OVERRIDE_ENV] = "off"
    return tuple(load_tenants())


def start_topology(
    stack: ExitStack, work: Path, tenants: tuple[Any, ...], per_location: int | None, keep_database: bool
) -> Topology:
    """A simulator serving every tenant, the schemas, then code servers (one per ``per_location`` tenants, each
    with its tenants file, as a deployment gives each tenant group), the daemon and the webserver."""
    from lgm_pipeline.cli.runtime import lgm_runtime
    from lgm_pipeline.storage.database import dagster_storage_url

    count = len(tenants)
    url = stack.enter_context(fresh_database(f"multi_{count}_{os.getpid()}", keep=keep_database))
    sim = stack.enter_context(simulator_process(CUSTOMERS_PER_DAY, rate_limit=None, tenants=count))
    for index, tenant in enumerate(tenants, start=1):
        os.environ[tenant.smartmoving.base_url_env] = sim.base_url
        os.environ[tenant.smartmoving.api_key_env] = sim.api_keys[index - 1]
    dagster_home = stack.enter_context(lgm_runtime(smartmoving=False, say=False))  # schemas, instance
    dagster_db_url = sa.make_url(dagster_storage_url(url)).set(drivername="postgresql+psycopg")
    databases = (str(sa.make_url(url).database), str(dagster_db_url.database))

    per_location = per_location or count
    firsts = list(range(1, count + 1, per_location))
    grpc_ports, web_port = [free_port() for _ in firsts], free_port()
    workspace = workspace_file(work, grpc_ports)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DAGSTER_HOME": str(dagster_home)}
    bin_dir = Path(sys.executable).parent
    code_servers = []
    for index, (first, port) in enumerate(zip(firsts, grpc_ports, strict=True), start=1):
        # A tenant group: its own tenants file, as a deployment gives each code location.
        group_file = work / f"tenants_{index:02d}.yaml"
        write_tenants_file(group_file, min(per_location, count - first + 1), first)
        name = location_name(index, len(firsts))
        code_servers.append(
            stack.enter_context(
                child_process(
                    "code_server",
                    [str(bin_dir / "dagster"), "api", "grpc", "-m", "lgm_pipeline.definitions", "-h", "127.0.0.1",
                     "-p", str(port), "--location-name", name],
                    {**env, TENANTS_FILE_ENV: str(group_file)},
                    work,
                    name=name,
                )
            )
        )  # fmt: skip
    daemon = stack.enter_context(
        child_process("daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], env, work)
    )
    webserver = stack.enter_context(
        child_process(
            "webserver",
            [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port)],
            env,
            work,
        )
    )
    return Topology(
        sim,
        dagster_home,
        dagster_db_url,
        databases,
        code_servers,
        daemon,
        webserver,
        f"http://127.0.0.1:{web_port}/graphql",
        len(firsts),
    )


def wait_for_topology(topology: Topology, instance: Any, tenants: tuple[Any, ...], timeout_s: float) -> None:
    """Until the webserver answers and the daemon has each tenant's schedule state and each sensor's first tick."""
    wait_until("webserver", lambda: graphql_ready(topology.graphql_url), timeout_s, topology.children)
    wait_until(
        "daemon's schedules and sensors",
        lambda: schedules_ready(instance, tenants, topology.locations),
        timeout_s,
        topology.children,
    )


def run_cycle(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import dagster as dg

    tenants = bench_tenants(work, args.tenants)
    # The tick: a whole minute far enough out for the code server, the daemon's first scheduler
    # iteration (it only counts ticks after it) and the automation sensors' first ticks.
    launched = dt.datetime.now(dt.UTC)
    tick = (launched + dt.timedelta(seconds=args.lead_s + 59)).replace(second=0, microsecond=0)
    os.environ[REFRESH_CRON_ENV] = tick_cron(tick, tenants[0].timezone)

    with ExitStack() as stack:
        topology = start_topology(stack, work, tenants, args.tenants_per_location, args.keep_database)
        sim, children, daemon = topology.sim, topology.children, topology.daemon
        dagster_db_url, databases = topology.dagster_db_url, topology.databases
        print(f"tick at {tick:%H:%M} UTC (cron {os.environ[REFRESH_CRON_ENV]!r}); logs in {work}", file=sys.stderr)

        # Worlds up front: generating them is the simulator's cost, not the cycle's.
        windows = {t.key: t.sync_window(tick) for t in tenants}
        for index, tenant in enumerate(tenants, start=1):
            sim.generate(windows[tenant.key], tenant=index)

        instance = dg.DagsterInstance.from_config(str(topology.dagster_home))
        stack.callback(instance.dispose)
        graphql_url = topology.graphql_url
        wait_for_topology(topology, instance, tenants, (tick - dt.datetime.now(dt.UTC)).total_seconds())
        ready_s = (dt.datetime.now(dt.UTC) - launched).total_seconds()
        if dt.datetime.now(dt.UTC) >= tick - dt.timedelta(seconds=2):
            raise RuntimeError(f"ready after {ready_s:.0f} s, past the tick: rerun with a larger --lead-s")
        poller = CatalogPoller(graphql_url, args.graphql_interval_s)
        print(f"asset catalog: {poller.load_catalog(httpx.Client(timeout=120))} assets", file=sys.stderr)

        dagster_engine = sa.create_engine(dagster_db_url, poolclass=sa.pool.NullPool)
        stack.callback(dagster_engine.dispose)
        standing = measure_standing_cost(children, args, tenants, tick) if args.idle_s else None
        time.sleep(max(0.0, (tick - dt.datetime.now(dt.UTC)).total_seconds()))
        sizes_before = table_sizes(dagster_engine)
        cpu_before = cpu_by_role(children)
        sampler = Sampler(children, dagster_db_url.render_as_string(hide_password=False), databases)
        sampler.start()
        stack.callback(sampler.stop)
        poller.start()
        stack.callback(poller.stop)

        expected = {t.key: expected_journeys_partitions(t, tick) for t in tenants}
        progress: dict[str, TenantProgress] = {}
        deadline = time.monotonic() + args.timeout_s
        complete = True
        last_line = ""
        while True:
            records = cycle_run_records(instance, tick)
            progress = {t.key: tenant_progress(instance, t, records, expected[t.key]) for t in tenants}
            failed = [f for p in progress.values() for f in p.failed]
            if failed:
                raise RuntimeError(f"runs failed: {failed[:5]}\n{daemon.log_tail()}")
            line = (
                f"{(dt.datetime.now(dt.UTC) - tick).total_seconds():5.0f} s: "
                f"{sum(p.raw_ok for p in progress.values())}/{len(tenants)} raw, "
                f"{sum(p.materialized for p in progress.values())}/{sum(map(len, expected.values()))} partitions, "
                f"{sum(p.in_progress for p in progress.values())} runs in progress"
            )
            if line.split(":", 1)[1] != last_line:
                print(line, file=sys.stderr, flush=True)
                last_line = line.split(":", 1)[1]
            if all(p.done for p in progress.values()):
                break
            for child in children:
                if child.process.poll() is not None:
                    raise RuntimeError(f"{child.role} exited ({child.process.returncode}):\n{child.log_tail()}")
            if time.monotonic() > deadline:
                # What a cycle that cannot finish costs is a figure too: measured up to here, marked incomplete.
                print(
                    f"the cycle did not finish within {args.timeout_s:.0f} s: stopping the measurement", file=sys.stderr
                )
                complete = False
                break
            time.sleep(max(2.0, len(tenants) / 10))  # our own polling must not take the cycle's CPU

        cpu_after = cpu_by_role(children)
        poller.stop()
        sampler.stop()
        sizes_after = table_sizes(dagster_engine)

    stopped_s = (dt.datetime.now(dt.UTC) - tick).total_seconds()
    cycle_wall_s = max(p.last_end for p in progress.values()) - tick.timestamp() if complete else None
    # The run workers exit into their code server's children time: one figure for the two.
    cycle_cpu_by_role = {
        "code_server_and_run_workers" if role == "code_server" else role: cpu_after[role] - cpu_before[role]
        for role in cpu_after
    }
    cycle_cpu_by_role["postgres_backends"] = sampler.postgres_cpu_s()
    # The webserver's CPU is mostly our polling of the catalog: reported, not counted in the cycle's.
    cycle_cpu_s = sum(v for role, v in cycle_cpu_by_role.items() if role != "webserver")
    runs = [sum(p.cycle_runs.values()) for p in progress.values()]
    growth = {name: (sizes_after.get(name, 0) - sizes_before.get(name, 0)) / MIB for name in sizes_after}
    return {
        "tenants": args.tenants,
        "code_locations": topology.locations,
        "standing_cost": standing,
        "cycle_complete": complete,
        # An incomplete cycle: how far it got when the measurement stopped (its CPU and storage are up to then).
        "stopped_after_s": None if complete else stopped_s,
        "raw_runs_done": sum(p.raw_ok for p in progress.values()),
        "journeys_partitions_done": sum(p.materialized for p in progress.values()),
        "runs_per_tenant_cycle": sum(runs) / len(runs),
        "runs_per_tenant_cycle_max": max(runs),
        "runs_by_kind": {
            kind: sum(p.cycle_runs.get(kind, 0) for p in progress.values()) for kind in ("raw", "journeys")
        },
        "other_runs_by_job": {job: n for p in progress.values() for job, n in p.other_runs.items()},
        "journeys_partitions": sum(len(e) for e in expected.values()),
        "cycle_wall_s": cycle_wall_s,
        "cpu_s_per_tenant_cycle": cycle_cpu_s / args.tenants if complete else None,
        "cpu_s_total": cycle_cpu_s,
        "cpu_s_by_role": cycle_cpu_by_role,
        "peak_rss_mib": sampler.peak_rss,
        "peak_total_rss_mib": sampler.peak_total_rss,
        "graphql_assets_p50_s": percentile(poller.timings, 0.50),
        "graphql_assets_p95_s": percentile(poller.timings, 0.95),
        "graphql_assets_max_s": max(poller.timings, default=None),
        "graphql_polls": len(poller.timings),
        "graphql_errors": poller.errors[:5],
        "dagster_storage_growth_mib": sum(growth.values()),
        "dagster_storage_growth_mib_by_table": {k: round(v, 3) for k, v in sorted(growth.items()) if v},
        "dagster_storage_before_mib": sum(sizes_before.values()) / MIB,
        "startup_s": ready_s,
        "tick": tick.isoformat(),
        "window": {k: [d.isoformat() for d in v] for k, v in list(windows.items())[:1]},
    }


def summary(result: dict[str, Any]) -> str:
    cpu = result["cpu_s_by_role"]
    rows = [
        ["tenants", result["tenants"]],
        ["runs per tenant-cycle", result["runs_per_tenant_cycle"]],
        ["cycle wall s", result["cycle_wall_s"] if result["cycle_complete"] else f"> {result['stopped_after_s']:.0f}"],
        ["raw runs / journeys partitions done", f"{result['raw_runs_done']} / {result['journeys_partitions_done']}"],
        ["CPU s per tenant-cycle", result["cpu_s_per_tenant_cycle"]],
        *[[f"  CPU s {role}", value] for role, value in cpu.items()],
        *[[f"peak RSS MiB {role}", value] for role, value in result["peak_rss_mib"].items()],
        ["GraphQL catalog p50 s", result["graphql_assets_p50_s"]],
        ["GraphQL catalog p95 s", result["graphql_assets_p95_s"]],
        ["Dagster storage growth MiB", result["dagster_storage_growth_mib"]],
    ]
    return table(["measure", "value"], rows)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, required=True, metavar="N")
    parser.add_argument("--out", type=Path, required=True, help="the JSON result")
    parser.add_argument(
        "--lead-s", type=float, help="seconds from start to the tick (default: 75 + 3 per tenant)", default=None
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=3600,
        help="stop measuring after this; the JSON then says cycle_complete: false and how far it got",
    )
    parser.add_argument("--graphql-interval-s", type=float, default=2.0, help="pause between catalog loads")
    parser.add_argument("--keep-database", action="store_true", help="keep lgm_bench_multi_* to look at after")
    parser.add_argument(
        "--tenants-per-location",
        type=int,
        default=None,
        metavar="K",
        help="tenant groups: one code location (code server, tenants file) per K tenants (default: one for all)",
    )
    parser.add_argument(
        "--idle-s",
        type=float,
        default=0.0,
        help="before the tick, measure the standing cost (sensors, schedules, nothing running) for this long",
    )
    parser.add_argument(
        "--automation-interval-s", type=int, default=None, help="LGM_AUTOMATION_INTERVAL_S (default: the package's)"
    )
    args = parser.parse_args(argv)
    if args.lead_s is None:
        args.lead_s = 75 + 3 * args.tenants
    args.lead_s += args.idle_s
    if args.automation_interval_s is not None:
        os.environ[AUTOMATION_INTERVAL_ENV] = str(args.automation_interval_s)
    # SIGTERM unwinds like Ctrl-C: every child's group is stopped, the databases dropped. SIGINT is set
    # too: a shell starting us in the background leaves it ignored, and Python would keep it so.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"lgm_bench_multi_{args.tenants}_"))
    try:
        result = run_cycle(args, work)
    except KeyboardInterrupt:
        print("interrupted: child processes stopped", file=sys.stderr)
        return 130
    document = {"measured_at": dt.datetime.now(dt.UTC).isoformat(), "machine": machine(), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str))
    print(summary(result))
    print(f"written {args.out} (process logs in {work})")
    return 0 if result["cycle_complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
