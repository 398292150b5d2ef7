"""Many tenants all day on one box: each tenant's cycle every P minutes, staggered, for M minutes.

    .venv/bin/python bench/sustained.py --tenants 10 --minutes 20 --period-min 10 --out bench/results/sustained_10.json

Issue 28 item 3. Density is what matters: N tenants every P minutes load the box as N x 120 / P tenants
every 2 hours (25 every 30 minutes are 100 every 2 hours). On this machine's PostgreSQL (``fresh_database``):

1. **Standing cost** (``--idle-s``, skipped with 0): the production topology (``bench/multi_tenant.py``'s:
   gRPC code servers, one per ``--tenants-per-location`` tenants, ``dagster-daemon``, ``dagster-webserver``,
   as separate processes) for N tenants whose cycles do not tick (LGM_REFRESH_CRON on the 1st of
   January): the CPU of every process we started and of the bench databases' PostgreSQL backends, while
   the daemon loops over the schedules and the automation sensor ticks with nothing to do.
   Then, with the CPU no longer counted, the UI at rest: the whole catalog loaded 5 times and one tenant's
   assets page 20 times, one after the other (``standing_cost.ui_at_rest``).
   ``--standing-only`` stops there (N = 100's figure without an hour of cycles).
2. **Sustained**: a new topology on a new database, with LGM_CYCLE_PERIOD_MINUTES = P: every tenant's
   schedule ticks every P minutes at its own offset (the stagger, from the key). After the first whole
   minute once everything is up, for M minutes: CPU (as above), and the UI polled like an engineer
   keeping two pages open: the whole asset catalog and one tenant's assets page (``assetNodes`` of its
   keys). Then up to ``--drain-min`` minutes for the ticks of those M minutes to finish.

Per tick (a run of a tenant's ``<key>_every_2_hours`` schedule scheduled in the M minutes),
``tick_to_fresh`` is the scheduled time to the moment the last of that tenant's window partitions of
``journeys`` (the ones the automation rebuilds after the pull) was written after the run's last
``smartmoving_jobs`` write. ``failed_runs`` counts every run that failed or was cancelled from the start
of the M minutes to the end of the drain. ``cpu_cores_avg`` is the CPU of the M minutes over their wall
time, webserver included (serving the polled pages is part of the load); ``standing_cores`` is phase 1's.
The automation sensor's ticks of the M minutes give ``automation_tick_p50_s``/``_p95_s`` (wall time of an
evaluation, in the code server) and its CPU per tick is in the standing cost.

Ctrl-C (or SIGTERM) stops every process started here and drops the databases.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine, table
from multi_tenant import (
    CATALOG_ROW_FRAGMENT,
    CatalogPoller,
    Sampler,
    Topology,
    bench_tenants,
    cpu_by_role,
    expected_journeys_partitions,
    location_name,
    percentile,
    start_topology,
    wait_for_topology,
)

from lgm_pipeline.settings import AUTOMATION_INTERVAL_ENV, CYCLE_PERIOD_ENV, REFRESH_CRON_ENV, automation_interval_s

#: A cron that does not tick during a measurement (midnight on the 1st of January).
NEVER_CRON = "0 0 1 1 *"
#: After the topology is up, before the standing cost's measurement: the first sensor ticks and the
#: webserver's first loads of the code locations are start-up, not standing cost.
SETTLE_S = 30
STARTUP_TIMEOUT_S = 900
#: The UI's asset group page (``/locations/<location>/asset-groups/<group>``): the webserver filters by group,
#: whereas the catalog loads every asset of the workspace and filters in the browser (its selection syntax).
GROUP_PAGE_QUERY = (
    """
query AssetCatalogGroupTableQuery($group: AssetGroupSelector) {
  assetNodes(group: $group) {
    id
    assetKey { path }
    ...CatalogRow
  }
}
"""
    + CATALOG_ROW_FRAGMENT
)


# --- phase 1: standing cost ----------------------------------------------------------------


def measure_cpu(topology: Topology, seconds: float, say: Any = None) -> dict[str, Any]:
    """CPU by role of the topology's processes (and the bench databases' PostgreSQL backends) for ``seconds``."""
    sampler = Sampler(
        topology.children, topology.dagster_db_url.render_as_string(hide_password=False), topology.databases
    )
    before = cpu_by_role(topology.children)
    started = time.monotonic()
    sampler.start()
    try:
        deadline = started + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 60))
            check_alive(topology)
            if say:
                say()
    finally:
        sampler.stop()
    wall = time.monotonic() - started
    spent = {role: cpu - before[role] for role, cpu in cpu_by_role(topology.children).items()}
    spent["postgres_backends"] = sampler.postgres_cpu_s()
    # The run workers exit into their code server's children time: one figure for the two.
    spent = {("code_servers_and_runs" if role == "code_server" else role): round(v, 2) for role, v in spent.items()}
    return {"wall_s": round(wall, 1), "cpu_s_by_role": spent, "cores": round(sum(spent.values()) / wall, 4)}


def check_alive(topology: Topology) -> None:
    for child in topology.children:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.role} exited ({child.process.returncode}):\n{child.log_tail()}")


def standing_cost(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import dagster as dg

    work.mkdir()
    tenants = bench_tenants(work, args.tenants)
    os.environ[REFRESH_CRON_ENV] = NEVER_CRON
    try:
        with ExitStack() as stack:
            topology = start_topology(stack, work, tenants, args.tenants_per_location, keep_database=False)
            instance = dg.DagsterInstance.from_config(str(topology.dagster_home))
            stack.callback(instance.dispose)
            started = time.monotonic()
            wait_for_topology(topology, instance, tenants, STARTUP_TIMEOUT_S)
            startup_s = time.monotonic() - started
            say(f"standing cost: topology up in {startup_s:.0f} s; measuring {args.idle_s:.0f} s with nothing due")
            time.sleep(SETTLE_S)
            measured = measure_cpu(topology, args.idle_s)
            ui = ui_loads(topology, tenants[0])  # after the CPU's measurement: the engineer is not standing cost
    finally:
        os.environ.pop(REFRESH_CRON_ENV, None)
    cores = measured["cores"]
    result = {
        **measured,
        "ui_at_rest": ui,
        "code_locations": topology.locations,
        "startup_s": round(startup_s, 1),
        "cpu_s_per_tenant_per_2h": round(cores * 7200 / args.tenants, 2),
    }
    say(f"standing cost: {cores:.3f} cores {json.dumps(measured['cpu_s_by_role'])}")
    return result


def ui_loads(topology: Topology, tenant: Any, catalog_loads: int = 5, tenant_page_loads: int = 20) -> dict[str, Any]:
    """The whole catalog, one tenant's assets page and its asset group pages, each loaded one after the other
    with nothing running."""
    assets_of_tenant = _tenant_assets(tenant)
    keys = [list(key.path) for key in sorted(assets_of_tenant, key=str)]
    groups = sorted(set(assets_of_tenant.values()))
    poller = CatalogPoller(topology.graphql_url, 0, asset_keys=keys)
    location = location_name(1, topology.locations)  # tenants[0] is in the first tenant group

    def load_group_pages(client: httpx.Client) -> int:
        loaded = 0
        for group in groups:
            selector = {"groupName": group, "repositoryName": "__repository__", "repositoryLocationName": location}
            response = client.post(
                topology.graphql_url, json={"query": GROUP_PAGE_QUERY, "variables": {"group": selector}}
            )
            response.raise_for_status()
            body = response.json()
            if body.get("errors"):
                raise RuntimeError(f"GraphQL errors: {body['errors'][:1]}")
            loaded += len(body["data"]["assetNodes"])
        return loaded

    timings: dict[str, list[float]] = {"catalog": [], "tenant_page": [], "group_pages": []}
    assets_loaded: dict[str, int] = {}
    with httpx.Client(timeout=300) as client:
        for name, load, count in (
            ("catalog", poller.load_catalog, catalog_loads),
            ("tenant_page", poller.load_tenant_view, tenant_page_loads),
            ("group_pages", load_group_pages, tenant_page_loads),
        ):
            for _ in range(count):
                started = time.perf_counter()
                assets_loaded[name] = load(client)
                timings[name].append(time.perf_counter() - started)
    ui = {
        "catalog_assets": assets_loaded["catalog"],
        "tenant_page_assets": len(keys),
        "tenant_groups": len(groups),
        "group_pages_assets": assets_loaded["group_pages"],
        **{
            f"{name}_{q}_s": round(percentile(t, p) or 0.0, 3)
            for name, t in timings.items()
            for q, p in (("p50", 0.5), ("p95", 0.95))
        },
    }
    say(
        f"at rest: catalog ({ui['catalog_assets']} assets) p95 {ui['catalog_p95_s']} s, tenant page p95 "
        f"{ui['tenant_page_p95_s']} s, its {len(groups)} group pages (all of them) p95 {ui['group_pages_p95_s']} s"
    )
    return ui


# --- phase 2: the sustained run ------------------------------------------------------------


@dataclass
class Tick:
    tenant: str
    scheduled: str
    run_id: str
    status: str
    tick_to_fresh_s: float | None  # None: not fresh (failed, or not by the end of the drain)


def scheduled_raw_runs(instance: Any, tenants: tuple[Any, ...], start: dt.datetime, end: dt.datetime) -> list[Any]:
    """(tenant, scheduled time, run record) of each cycle tick scheduled in [start, end)."""
    import dagster as dg
    from dagster._core.storage.tags import SCHEDULE_NAME_TAG, SCHEDULED_EXECUTION_TIME_TAG

    from lgm_pipeline.assets.automation import refresh_schedule_name

    by_schedule = {refresh_schedule_name(t): t for t in tenants}
    found = []
    for record in instance.get_run_records(dg.RunsFilter(created_after=start - dt.timedelta(minutes=2))):
        tags = record.dagster_run.tags
        tenant = by_schedule.get(tags.get(SCHEDULE_NAME_TAG, ""))
        if tenant is None or SCHEDULED_EXECUTION_TIME_TAG not in tags:
            continue
        scheduled = dt.datetime.fromisoformat(tags[SCHEDULED_EXECUTION_TIME_TAG])
        if start <= scheduled < end:
            found.append((tenant, scheduled, record))
    return found


def materializations(instance: Any, key: Any, after: dt.datetime) -> list[Any]:
    import dagster as dg

    records, cursor = [], None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_timestamp=after.timestamp()), limit=1000, cursor=cursor
        )
        records.extend(result.records)
        if not result.has_more:
            return records
        cursor = result.cursor


def tick_outcomes(instance: Any, tenants: tuple[Any, ...], start: dt.datetime, end: dt.datetime) -> list[Tick]:
    import dagster as dg

    runs = scheduled_raw_runs(instance, tenants, start, end)
    ticks = []
    for tenant in tenants:
        mine = [(scheduled, record) for t, scheduled, record in runs if t.key == tenant.key]
        if not mine:
            continue
        # The run's last write of smartmoving_jobs: what journeys rebuilt after it has read the pull.
        pulled: dict[str, float] = {}
        for record in materializations(instance, tenant.names.asset_key("smartmoving_jobs"), start):
            pulled[record.run_id] = max(pulled.get(record.run_id, 0.0), record.timestamp)
        written: dict[str, list[float]] = {}
        for record in materializations(instance, tenant.names.asset_key("journeys"), start):
            written.setdefault(str(record.partition_key), []).append(record.timestamp)
        for scheduled, record in mine:
            run = record.dagster_run
            fresh: float | None = None
            if run.status == dg.DagsterRunStatus.SUCCESS and run.run_id in pulled:
                after = pulled[run.run_id]
                firsts = [
                    min((t for t in written.get(partition, []) if t > after), default=None)
                    for partition in expected_journeys_partitions(tenant, scheduled)
                ]
                if firsts and None not in firsts:
                    fresh = max(firsts) - scheduled.timestamp()  # type: ignore[type-var]
            ticks.append(Tick(tenant.key, scheduled.isoformat(), run.run_id, run.status.value, fresh))
    return ticks


def failed_runs(instance: Any, since: dt.datetime) -> list[str]:
    import dagster as dg

    records = instance.get_run_records(
        dg.RunsFilter(
            created_after=since,
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
        )
    )
    return [f"{r.dagster_run.job_name} {r.dagster_run.run_id} {r.dagster_run.status.value}" for r in records]


def run_counts(instance: Any, since: dt.datetime) -> dict[str, int]:
    import dagster as dg

    counts: dict[str, int] = {}
    for record in instance.get_run_records(dg.RunsFilter(created_after=since)):
        status = record.dagster_run.status.value.lower()
        counts[status] = counts.get(status, 0) + 1
    return counts


def automation_tick_seconds(instance: Any, since: dt.datetime) -> list[float]:
    """Wall time of each automation sensor tick (every code location's) since ``since``."""
    from dagster._core.scheduler.instigation import InstigatorType

    from lgm_pipeline.assets.automation import AUTOMATION_SENSOR

    seconds = []
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name != AUTOMATION_SENSOR:
            continue
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, after=since.timestamp()):
            if tick.end_timestamp:
                seconds.append(tick.end_timestamp - tick.timestamp)
    return seconds


def sustained(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import dagster as dg

    work.mkdir()
    tenants = bench_tenants(work, args.tenants)
    os.environ[CYCLE_PERIOD_ENV] = str(args.period_min)
    os.environ.pop(REFRESH_CRON_ENV, None)
    with ExitStack() as stack:
        launched = time.monotonic()
        topology = start_topology(stack, work, tenants, args.tenants_per_location, keep_database=False)
        # Worlds up front (generating them is the simulator's cost): every date a window holds until the end.
        horizon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=args.minutes + args.drain_min + 20)
        for index, tenant in enumerate(tenants, start=1):
            topology.sim.generate(sorted(set(tenant.sync_window()) | set(tenant.sync_window(horizon))), tenant=index)
        instance = dg.DagsterInstance.from_config(str(topology.dagster_home))
        stack.callback(instance.dispose)
        wait_for_topology(topology, instance, tenants, STARTUP_TIMEOUT_S)
        startup_s = time.monotonic() - launched
        catalog = CatalogPoller(topology.graphql_url, args.graphql_interval_s)
        assets = catalog.load_catalog(httpx.Client(timeout=120))
        keys = [list(key.path) for key in sorted(_tenant_assets(tenants[0]), key=str)]
        tenant_view = CatalogPoller(topology.graphql_url, args.graphql_interval_s, asset_keys=keys)

        start = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)).replace(second=0, microsecond=0)
        end = start + dt.timedelta(minutes=args.minutes)
        say(
            f"up in {startup_s:.0f} s ({assets} assets in the catalog); measuring {start:%H:%M}-{end:%H:%M} UTC, "
            f"{args.tenants} tenants every {args.period_min} min; logs in {work}"
        )
        time.sleep(max(0.0, (start - dt.datetime.now(dt.UTC)).total_seconds()))
        catalog.start()
        tenant_view.start()

        def progress() -> None:
            counts = run_counts(instance, start)
            minute = (dt.datetime.now(dt.UTC) - start).total_seconds() / 60
            say(f"{minute:4.0f} min: runs {json.dumps(counts, sort_keys=True)}")

        try:
            load = measure_cpu(topology, (end - dt.datetime.now(dt.UTC)).total_seconds(), say=progress)
        finally:
            catalog.stop()
            tenant_view.stop()
        automation_ticks = automation_tick_seconds(instance, start)

        # The drain: the M minutes' ticks finish (their journeys written) or fail; no CPU counted.
        deadline = time.monotonic() + args.drain_min * 60
        while True:
            ticks = tick_outcomes(instance, tenants, start, end)
            waiting = [t for t in ticks if t.tick_to_fresh_s is None and t.status not in ("FAILURE", "CANCELED")]
            if not waiting or time.monotonic() > deadline:
                break
            say(f"drain: {len(waiting)} of {len(ticks)} ticks not fresh yet")
            check_alive(topology)
            time.sleep(15)
        failed = failed_runs(instance, start)
        runs_by_status = run_counts(instance, start)

    fresh = [t.tick_to_fresh_s for t in ticks if t.tick_to_fresh_s is not None]
    return {
        "tenants": args.tenants,
        "minutes": args.minutes,
        "period_min": args.period_min,
        "density_tenants_per_2h": args.tenants * 120 / args.period_min,
        "code_locations": topology.locations,
        "automation_interval_s": automation_interval_s(args.tenants_per_location or args.tenants),
        "ticks": len(ticks),
        "ticks_fresh": len(fresh),
        "ticks_not_fresh": [asdict(t) for t in ticks if t.tick_to_fresh_s is None],
        "tick_to_fresh_p50_s": _round(percentile(fresh, 0.50)),
        "tick_to_fresh_p95_s": _round(percentile(fresh, 0.95)),
        "tick_to_fresh_max_s": _round(max(fresh, default=None)),
        "cpu_cores_avg": load["cores"],
        "cpu_s_by_role": load["cpu_s_by_role"],
        "standing_cores": args.standing["cores"] if args.standing else None,
        "standing_cost": args.standing,
        "graphql_catalog_p50_s": _round(percentile(catalog.timings, 0.50)),
        "graphql_catalog_p95_s": _round(percentile(catalog.timings, 0.95)),
        "graphql_catalog_assets": assets,
        "graphql_tenant_view_p50_s": _round(percentile(tenant_view.timings, 0.50)),
        "graphql_tenant_view_p95_s": _round(percentile(tenant_view.timings, 0.95)),
        "graphql_polls": len(catalog.timings) + len(tenant_view.timings),
        "graphql_errors": (catalog.errors + tenant_view.errors)[:5],
        "automation_ticks": len(automation_ticks),
        "automation_tick_p50_s": _round(percentile(automation_ticks, 0.50)),
        "automation_tick_p95_s": _round(percentile(automation_ticks, 0.95)),
        "failed_runs": len(failed),
        "failed_run_list": failed[:20],
        "runs_by_status": runs_by_status,
        "startup_s": round(startup_s, 1),
        "start": start.isoformat(),
        "ticks_detail": [asdict(t) for t in ticks],
    }


def _tenant_assets(tenant: Any) -> dict[Any, str]:
    """The tenant's asset keys and their groups as its code location defines them."""
    from lgm_pipeline.assets.factory import build_tenant_definitions

    with warnings.catch_warnings():  # the definitions' beta warnings, already shown by the code servers
        warnings.simplefilter("ignore")
        defs = build_tenant_definitions(tenant)
    return {key: group for asset in defs.assets or () for key, group in asset.group_names_by_key.items()}  # type: ignore[union-attr]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def say(message: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def summary(result: dict[str, Any]) -> str:
    rows = [
        [name, result.get(name)]
        for name in (
            "tenants",
            "period_min",
            "minutes",
            "density_tenants_per_2h",
            "code_locations",
            "ticks",
            "ticks_fresh",
            "tick_to_fresh_p50_s",
            "tick_to_fresh_p95_s",
            "cpu_cores_avg",
            "standing_cores",
            "graphql_catalog_p95_s",
            "graphql_tenant_view_p95_s",
            "automation_tick_p95_s",
            "failed_runs",
        )
    ]
    return table(["measure", "value"], rows)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, required=True, metavar="N")
    parser.add_argument("--minutes", type=float, default=20, metavar="M", help="how long ticks are measured")
    parser.add_argument("--period-min", type=int, default=120, metavar="P", help="each tenant's cycle period")
    parser.add_argument("--out", type=Path, required=True, help="the JSON result")
    parser.add_argument(
        "--tenants-per-location", type=int, default=None, metavar="K", help="one code location per K tenants"
    )
    parser.add_argument("--idle-s", type=float, default=120, help="the standing cost's measurement (0: skip it)")
    parser.add_argument("--standing-only", action="store_true", help="measure the standing cost only")
    parser.add_argument("--drain-min", type=float, default=10, help="at most this long for the last ticks to finish")
    parser.add_argument("--graphql-interval-s", type=float, default=5.0, help="pause between two loads of a page")
    parser.add_argument(
        "--automation-interval-s", type=int, default=None, help="LGM_AUTOMATION_INTERVAL_S (default: the package's)"
    )
    args = parser.parse_args(argv)
    if args.automation_interval_s is not None:
        os.environ[AUTOMATION_INTERVAL_ENV] = str(args.automation_interval_s)
    # Fails now, with the setting's message, rather than in a code server.
    os.environ[CYCLE_PERIOD_ENV] = str(args.period_min)
    from lgm_pipeline.settings import cycle_period_minutes

    try:
        cycle_period_minutes()
    except ValueError as error:
        parser.error(str(error).replace(CYCLE_PERIOD_ENV, "--period-min"))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"lgm_bench_sustained_{args.tenants}_"))
    try:
        args.standing = standing_cost(args, work / "standing") if args.idle_s else None
        if args.standing_only:
            result: dict[str, Any] = {
                "tenants": args.tenants,
                "standing_cores": args.standing and args.standing["cores"],
            }
            result["standing_cost"] = args.standing
        else:
            result = sustained(args, work / "sustained")
    except KeyboardInterrupt:
        print("interrupted: child processes stopped", file=sys.stderr)
        return 130
    document = {"measured_at": dt.datetime.now(dt.UTC).isoformat(), "machine": machine(), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str))
    if not args.standing_only:
        print(summary(result))
    print(f"written {args.out} (process logs in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
