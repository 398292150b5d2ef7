"""``lgm``: the command line of lgm-pipeline.

lgm up                 embedded PostgreSQL + simulator (if needed), one full sync, then the Dagster UI
lgm serve              the production topology on one machine: gRPC code server, daemon, webserver and
                       webhook receiver as separate processes (exit 0 stopped by Ctrl-C/SIGTERM, 1 a
                       service died, 2 settings)
lgm sync               what the schedule does, headless, in one process (exit 0 ok, 1 failed sync,
                       2 configuration error, 3 partial: the leads or branches failed, the journeys
                       were written, 130/143 interrupted by SIGINT/SIGTERM)
lgm status             last sync per tenant and branch
lgm simulator          the SmartMoving simulator alone
lgm check-connection   ping SmartMoving, report latency, key validity and branches
lgm webhooks serve     receive SmartMoving's webhooks (Premium) into each tenant's inbox
lgm db migrate | grant-reader
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lgm_pipeline.cli.output import Output, hide_dagster_warnings
from lgm_pipeline.cli.runtime import SetupError, lgm_runtime, warn_of_time_zones
from lgm_pipeline.settings import secret
from lgm_pipeline.tenants import TenantConfigError, load_tenants
from lgm_pipeline.tenants.config import get_tenant

if TYPE_CHECKING:
    from lgm_pipeline.cli.serve import WebAccess
    from lgm_pipeline.smartmoving.connection import ConnectionReport

#: Exit codes: a sync that ran and failed; settings the operator must fix (and usage errors, as argparse);
#: partial: some endpoints failed (the leads, SmartMoving's branches), the rest was written.
EXIT_FAILED, EXIT_CONFIGURATION, EXIT_PARTIAL = 1, 2, 3
#: When tenants end differently, the exit code asking most of the operator wins.
_EXIT_RANK = {0: 0, EXIT_PARTIAL: 1, EXIT_FAILED: 2, EXIT_CONFIGURATION: 3}
_EXIT_BY_OUTCOME = {"ok": 0, "partial": EXIT_PARTIAL, "failed": EXIT_FAILED, "configuration_error": EXIT_CONFIGURATION}


def _worse(status: int, other: int) -> int:
    return max(status, other, key=_EXIT_RANK.__getitem__)


class Interrupted(Exception):
    """The command was stopped by SIGINT/SIGTERM after printing what it finished; ``main`` exits 128 + signal."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _sync(args: argparse.Namespace, out: Output, ui_url: str | None = None) -> int:
    import dagster as dg

    from lgm_pipeline.assets.automation import catch_up_dates, catch_up_run_config, refresh_details_run_config
    from lgm_pipeline.cli.dead_syncs import owner_tags, settle_runs_of_dead_syncs
    from lgm_pipeline.cli.signals import exit_code, stop_on_signals
    from lgm_pipeline.definitions import build_definitions
    from lgm_pipeline.sync import Interruption, format_report, report_dict, run_sync

    defs = build_definitions()
    instance = dg.DagsterInstance.get()
    for settled in settle_runs_of_dead_syncs(instance):
        out.notice(f"lgm: {settled.line}")
    status = 0
    reports = []
    tenants = [get_tenant(args.tenant)] if args.tenant else list(load_tenants())
    with stop_on_signals(Interruption(), out.notice) as interruption:
        for tenant in tenants:
            if interruption.requested:
                break
            dates, run_config = args.date or None, None
            if getattr(args, "catch_up", False):
                dates, run_config = catch_up_dates(tenant, tenant.today()), catch_up_run_config(tenant)
                if not dates:
                    out.progress(f"{tenant.key}: nothing to catch up (catch_up_days is {tenant.catch_up_days})")
                    continue
            if getattr(args, "refresh_details", False):
                run_config = refresh_details_run_config(tenant, run_config)
            report = run_sync(
                defs,
                tenant,
                instance,
                dates,
                args.branch or None,
                progress=out.progress,
                run_config=run_config,
                with_branches=getattr(args, "catch_up", False) or args.command == "up",
                interruption=interruption,
                console_level=out.dagster_level,
                run_tags=owner_tags(),
            )
            reports.append(report)
            if not out.json:
                out.summary(format_report(report, ui_url))
            # An interrupted report leaves the code to the signal (below).
            status = _worse(status, _EXIT_BY_OUTCOME.get(report.outcome, 0))
    if out.json:
        out.summary(json.dumps([report_dict(r) for r in reports], indent=2))
    for report in reports:
        if report.configuration_error:
            out.error(f"lgm: {report.configuration_error} (tenant {report.tenant.key})")
        elif report.partial:
            failed = "; ".join(f"{name}: {why}" for name, why in report.side_failures.items())
            out.error(f"lgm: partial sync, the journeys were written; failed: {failed} (tenant {report.tenant.key})")
    if interruption.requested:
        raise Interrupted(exit_code(interruption.reason))
    return status


def check_sync_dates(dates: Sequence[dt.date], tenant_key: str | None) -> None:
    """Refuse, before anything starts, a ``--date`` no partition of the tenant has.

    Such a date would fail only inside a run (retried for minutes before its first partition, a traceback
    past ``date.max``); no retry heals it, so it is a usage error naming the flag and the valid range."""
    if not dates:
        return
    from lgm_pipeline.assets.partitions import tenant_partitions

    for tenant in [get_tenant(tenant_key)] if tenant_key else load_tenants():
        service_date = tenant_partitions(tenant).service_date
        first = dt.date.fromisoformat(service_date.get_first_partition_key() or tenant.first_service_date.isoformat())
        last_key = service_date.get_last_partition_key()
        last = dt.date.fromisoformat(last_key) if last_key else first
        for day in sorted(set(dates)):
            if not first <= day <= last:
                raise SetupError(
                    f"--date {day.isoformat()} is outside tenant {tenant.key}'s service dates: "
                    f"{first.isoformat()} (first_service_date) to {last.isoformat()} (its branches' tomorrow)"
                )


def cmd_sync(args: argparse.Namespace) -> int:
    check_sync_dates(args.date or [], args.tenant)
    out = Output.from_args(args)
    with hide_dagster_warnings(out.verbose), lgm_runtime(say=not out.quiet):
        return _sync(args, out)


def _web_access(args: argparse.Namespace) -> WebAccess:
    from lgm_pipeline.cli.serve import web_access

    return web_access(args.host, args.read_only, args.allow_mutations, args.allowed_host or ())


def _reachable(host: str) -> str:
    """Where this machine reaches a server listening on ``host`` (a wildcard address: loopback)."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def cmd_up(args: argparse.Namespace) -> int:
    from lgm_pipeline.cli.serve import check_ports, free_code_port, run_topology

    out = Output.from_args(args)
    access = _web_access(args)
    code_port = free_code_port()
    receiver = (_reachable(args.host), args.webhook_port)
    with hide_dagster_warnings(out.verbose), lgm_runtime(webhook_receiver=receiver) as dagster_home:
        warn_of_time_zones()
        check_ports(args.host, args.port, code_port, args.webhook_port)  # before a sync of minutes, not after it
        print("Syncing today and tomorrow before starting the UI...", file=sys.stderr)
        args.date, args.branch, args.tenant = None, None, None
        sync_status = _sync(args, out, ui_url=f"http://{args.host}:{args.port}")
        if sync_status:
            print("The first sync had failures (see above); the UI shows the failed runs.", file=sys.stderr)
        print(f"Dagster home: {dagster_home}", file=sys.stderr)
        # The same processes as `lgm serve` (not `dagster dev`, whose webserver cannot be guarded):
        # Ctrl-C/SIGTERM stop them all before the embedded database stops.
        return run_topology(args.host, args.port, code_port, out.verbose, access, webhook_port=args.webhook_port)


def cmd_serve(args: argparse.Namespace) -> int:
    from lgm_pipeline.cli.serve import serve
    from lgm_pipeline.settings import automation_interval_s, cycle_period_minutes, refresh_cron, webhook_interval_s

    # A bad override is a configuration error now, not a code server that never loads.
    refresh_cron()
    cycle_period_minutes()
    automation_interval_s()
    webhook_interval_s()
    receiver = (_reachable(args.host), args.webhook_port) if args.simulator else None
    runtime = lgm_runtime(smartmoving=args.simulator, webhook_receiver=receiver)
    with hide_dagster_warnings(args.verbose), runtime as dagster_home:
        warn_of_time_zones()
        print(f"Dagster home: {dagster_home}", file=sys.stderr)
        return serve(
            args.host, args.port, args.code_port, args.verbose, _web_access(args), webhook_port=args.webhook_port
        )


def cmd_status(args: argparse.Namespace) -> int:
    from lgm_pipeline.status import format_status, tenant_status

    with lgm_runtime(smartmoving=False, say=False):
        for tenant in load_tenants():
            print(format_status(tenant_status(tenant)))
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from lgm_pipeline.simulator import SimulatorConfig, parse_fault_options, parse_webhook_fault_options, serve_forever
    from lgm_pipeline.simulator.webhooks import check_url

    config = SimulatorConfig(
        seed=args.seed,
        customers_per_day=args.customers_per_day,
        rate_limit_per_minute=None if args.rate_limit <= 0 else args.rate_limit,
        **({"churn": args.churn} if args.churn is not None else {}),
        faults=parse_fault_options(args.fault or []),
        date_filter=args.date_filter,
        **({"api_key": args.api_key} if args.api_key else {}),
        tenants=args.tenants,
        drift=args.drift,
        webhook_url=check_url(args.webhook_url),
        webhook_faults=parse_webhook_fault_options(args.webhook_fault or []),
    )
    serve_forever(config, port=args.port)
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    from lgm_pipeline.storage.resources import PostgresResource
    from lgm_pipeline.webhooks.receiver import PortInUseError, bind, serve

    try:
        sock = bind(args.host, args.port)  # at once: not after the embedded PostgreSQL took seconds to start
    except PortInUseError as error:
        raise SetupError(str(error)) from None
    try:
        with lgm_runtime(smartmoving=False, say=False):
            return serve(args.host, args.port, load_tenants(), PostgresResource().engine(), sock=sock)
    finally:
        sock.close()


def _key_verdict(report: ConnectionReport) -> str:
    """What the check learnt of the key; a 403 proves SmartMoving knows it, not that it is any use."""
    if report.key_valid is None:
        return "not judged (SmartMoving did not get that far)"
    if not report.key_valid:
        return "rejected (401)"
    if report.ok:
        return "valid"
    # key_valid with a failed check is a 403 (ConnectionReport): the key is known but refused an endpoint.
    where = f" on {report.unavailable_endpoint}" if report.unavailable_endpoint else ""
    return f"recognised but forbidden{where} (403): this key is not allowed that call"


def cmd_check_connection(args: argparse.Namespace) -> int:
    import dagster as dg

    from lgm_pipeline.assets.factory import smartmoving_resource
    from lgm_pipeline.smartmoving.connection import check_connection

    status = 0
    with lgm_runtime():
        warn_of_time_zones()
        for tenant in load_tenants():
            # build_resources resolves the EnvVars, as a run would; outside it they are only names.
            with (
                dg.build_resources({"smartmoving": smartmoving_resource([tenant])}) as resources,
                resources.smartmoving.account(tenant.key).get_client() as client,
            ):
                report = check_connection(client)
            verdict = "ok" if report.ok else f"{'PARTIAL' if report.partial else 'FAILED'}: {report.error}"
            latency = "-" if report.latency_ms is None else f"{report.latency_ms:.1f} ms"
            print(f"{tenant.key}: {verdict}")
            print(f"  latency {latency}, key: {_key_verdict(report)}")
            print(f"  branches: {', '.join(report.branches) or '-'}")
            if report.ok:
                gaps = tenant.branch_mapping_gaps(report.branches)
                for name in gaps.unmapped:
                    print(
                        f"  warning: SmartMoving branch {name!r} is not in tenants.yaml: its jobs will be quarantined"
                    )
                for name in gaps.unknown:
                    print(f"  warning: tenants.yaml maps {name!r}, which SmartMoving does not know: it will stay empty")
            # Partial (one endpoint out of the key's reach, the rest answered): exit 3, as `lgm sync`.
            status = _worse(status, 0 if report.ok else EXIT_PARTIAL if report.partial else EXIT_FAILED)
    return status


def cmd_db(args: argparse.Namespace) -> int:
    from lgm_pipeline.storage.access import check_locations, grant_reader, groups
    from lgm_pipeline.storage.resources import PostgresResource

    with lgm_runtime(smartmoving=False, say=False):
        postgres = PostgresResource()
        if args.db_command == "migrate":
            for tenant in load_tenants():
                print(f"{tenant.key}: schema {tenant.schema} up to date")
            with postgres.engine().connect() as conn:
                for tenant in load_tenants():
                    names = groups(conn, tenant)
                    print(f"{tenant.key}: groups {', '.join(names.by_kind().values())}")
            return 0
        tenant = get_tenant(args.tenant)
        locations = args.location or []
        check_locations(tenant, locations)  # before asking for a password
        password = secret(args.password_env) if args.password_env else getpass.getpass("Password: ")
        if not password:
            raise SetupError("an empty password is not accepted")
        for change in grant_reader(postgres.engine(), tenant, args.login, password, locations, replace=args.replace):
            print(change)
        scope = f"only {', '.join(locations)}" if locations else "every branch"
        print(f"{args.login} can now read schema {tenant.schema} (read-only, {scope})")
        return 0


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


# simulator.config.MAX_TENANTS, literal because importing the simulator package would slow every lgm command.
_MAX_SIMULATOR_TENANTS = 1000


def _tenant_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_SIMULATOR_TENANTS:
        raise argparse.ArgumentTypeError(f"{text} is not a tenant count from 1 to {_MAX_SIMULATOR_TENANTS}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lgm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="sync once, then serve the Dagster UI and daemon until Ctrl-C")
    up.add_argument("--host", default="127.0.0.1", help="the webserver's address (default: %(default)s)")
    up.add_argument("--port", type=int, default=3000, help="the webserver's port (default: %(default)s)")
    _webhook_port_option(up)
    _web_options(up)
    _output_options(up, json_option=False)
    up.set_defaults(func=cmd_up)

    serve = commands.add_parser(
        "serve",
        help="serve the gRPC code server, daemon and webserver as separate processes until Ctrl-C (no first sync)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="the webserver's address (default: %(default)s)")
    serve.add_argument("--port", type=int, default=3000, help="the webserver's port (default: %(default)s)")
    serve.add_argument(
        "--code-port", type=int, default=4000, help="the code server's gRPC port on 127.0.0.1 (default: %(default)s)"
    )
    serve.add_argument(
        "--simulator",
        action="store_true",
        help="serve tenants without SmartMoving settings from the built-in simulator, as `lgm up` does",
    )
    _webhook_port_option(serve)
    _web_options(serve)
    serve.add_argument("-v", "--verbose", action="store_true", help="keep Dagster's warnings")
    serve.set_defaults(func=cmd_serve)

    sync = commands.add_parser("sync", help="sync the window (default: today and tomorrow, all branches)")
    _output_options(sync)
    sync.add_argument("--date", action="append", type=dt.date.fromisoformat, help="YYYY-MM-DD (repeatable)")
    sync.add_argument("--branch", action="append", help="location id, e.g. loc_lgm_calgary_001 (repeatable)")
    sync.add_argument("--tenant", help="only this tenant key")
    sync.add_argument(
        "--catch-up",
        action="store_true",
        help="the daily catch-up instead: the tenant's last catch_up_days service dates, and its branches",
    )
    sync.add_argument(
        "--refresh-details",
        action="store_true",
        help="fetch every opportunity's details again (one call each) instead of reusing those younger than "
        "detail_max_age_hours: what the customers list does not show, such as a job moved to another branch",
    )
    sync.set_defaults(func=cmd_sync)

    commands.add_parser("status", help="last sync per tenant and branch").set_defaults(func=cmd_status)

    sim = commands.add_parser(
        "simulator",
        help="serve the SmartMoving simulator on loopback",
        description="Serve a simulated SmartMoving API v1 on loopback (base URL http://127.0.0.1:PORT/v1).",
    )
    sim.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (default: %(default)s)")
    sim.add_argument("--api-key", help="key to accept (default: the documented demo key)")
    sim.add_argument("--seed", type=int, default=7, help="the same seed, the same world (default: %(default)s)")
    sim.add_argument(
        "--customers-per-day",
        type=int,
        default=185,
        help="customers with a job each service date (default: %(default)s)",
    )
    sim.add_argument(
        "--churn",
        type=_share,
        help="share of opportunities changed between two pulls (statuses, jobs; default: the simulator's few "
        "percent); 0 = a world that stays still, to show a no-change cycle",
    )
    sim.add_argument(
        "--rate-limit", type=int, default=120, help="requests per minute per key; 0 = off (default: %(default)s)"
    )
    sim.add_argument(
        "--fault",
        action="append",
        help="e.g. error_rate=0.1, latency_ms=200, drop_connection_rate=0.05, malformed_pages=2,3, down, "
        "endpoint_status=leads:404 (that endpoint always answers 404) (repeatable)",
    )
    sim.add_argument(
        "--date-filter",
        choices=("job_date", "service_date"),  # SimulatorConfig.date_filter; literal to keep startup light
        default="job_date",
        help="what FromServiceDate/ToServiceDate match: any job's date (job_date) or the service date only",
    )
    sim.add_argument(
        "--tenants",
        type=_tenant_count,
        default=1,
        metavar="N",
        help="serve N independent tenants on the one port, 1..1000 (default: %(default)s, the plain key): "
        "tenant i's key is API_KEY-t<i>, its world seed SEED+i-1, its rate limit its own; /_admin takes ?tenant=i",
    )
    sim.add_argument(
        "--drift",
        action="store_true",
        help="serve the other shapes the API's public descriptions give (ISO job dates, status names, a lead's "
        "createdOn/firstName/email, amounts as text) and, for a few records, values no reader accepts; "
        'POST /_admin/drift {"enabled": false} turns it off (per tenant with ?tenant=i)',
    )
    sim.add_argument(
        "--webhook-url",
        metavar="URL",
        help="POST SmartMoving's webhooks (opportunity-status-changed, customer-updated...) for every change of the "
        "world to URL; with --tenants, {tenant} in URL becomes the tenant's number. Only its scheme://host:port is "
        "ever printed (the path holds the receiver's token). POST /_admin/webhooks changes it at run time",
    )
    sim.add_argument(
        "--webhook-fault",
        action="append",
        metavar="NAME=VALUE",
        help="a webhook delivery fault: duplicate_rate=0.1, reorder_rate=0.1, delay_ms=200, loss_rate=0.05, "
        "max_attempts=5 (tries per event, retried on 5xx/408/429/no answer) (repeatable)",
    )
    sim.set_defaults(func=cmd_simulator)

    commands.add_parser("check-connection", help="ping SmartMoving").set_defaults(func=cmd_check_connection)

    webhooks = commands.add_parser("webhooks", help="SmartMoving's webhooks (Premium tier)")
    webhook_commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    receive = webhook_commands.add_parser(
        "serve",
        help="receive SmartMoving's webhooks into each tenant's inbox until Ctrl-C",
        description="POST /webhooks/smartmoving/<tenant>/<token>: each delivery is stored in the tenant's "
        "webhook_events, then answered; the token is the value of the variable the tenant's "
        "smartmoving.webhook_token_env names. Put it behind TLS.",
    )
    receive.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)")
    receive.add_argument("--port", type=int, default=_WEBHOOK_PORT, help="the port to listen on (default: %(default)s)")
    webhooks.set_defaults(func=cmd_webhooks)

    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("migrate", help="apply pending migrations for every tenant")
    grant = db_commands.add_parser("grant-reader", help="create or update a read-only login for a tenant's CRM")
    grant.add_argument("--tenant", required=True)
    grant.add_argument("--login", required=True)
    grant.add_argument(
        "--location",
        action="append",
        help="bind the login to this branch's rows, e.g. loc_lgm_toronto_001 (repeatable; re-run to change);"
        " without it the login reads every branch",
    )
    grant.add_argument("--password-env", help="read the password from this environment variable (else prompt)")
    grant.add_argument(
        "--replace",
        action="store_true",
        help="take over an existing login grant-reader did not create: replace its password and scope",
    )
    db.set_defaults(func=cmd_db)
    return parser


# webhooks.receiver.DEFAULT_PORT, literal because importing the receiver (uvicorn) would slow every lgm command.
_WEBHOOK_PORT = 8790


def _webhook_port_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--webhook-port",
        type=int,
        default=_WEBHOOK_PORT,
        help="the webhook receiver's port, on the webserver's --host (default: %(default)s)",
    )


def _web_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="serve the UI read-only (Dagster's --read-only: no runs launched, no schedules switched)",
    )
    parser.add_argument(
        "--allow-mutations",
        action="store_true",
        help="with a --host other machines reach: keep the UI writable (only behind an authenticating proxy; "
        "without this flag such a UI is read-only)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a host name the UI answers to besides its IP addresses and localhost, e.g. the name your proxy "
        "forwards (repeatable); other Host headers get 403 (DNS rebinding)",
    )


def _output_options(parser: argparse.ArgumentParser, json_option: bool = True) -> None:
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "-v", "--verbose", action="store_true", help="also print Dagster's event log (always kept in the UI)"
    )
    shown.add_argument("-q", "--quiet", action="store_true", help="print only the summary (and errors)")
    if json_option:
        parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")


def _one_line(text: str) -> str:
    """A multi-line message (a YAML parser's, with its caret line) as one line."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return "; ".join(line for line in lines if line.strip("^ "))


def main(argv: Sequence[str] | None = None) -> int:
    import sqlalchemy as sa

    from lgm_pipeline.cli.signals import exit_now
    from lgm_pipeline.storage.database import DatabaseUnavailableError, lost_connection

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SetupError, TenantConfigError, DatabaseUnavailableError, ValueError) as error:
        print(f"lgm: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_CONFIGURATION
    except sa.exc.OperationalError as error:
        # The server went away after answering (a restart, pg_terminate_backend): retrying heals it.
        print(f"lgm: {lost_connection(error)}", file=sys.stderr)
        return EXIT_FAILED
    except Interrupted as interrupted:
        if argv is not None:
            return interrupted.code  # called in-process (tests): leave the process alone
        exit_now(interrupted.code)
        raise  # unreachable
    except KeyboardInterrupt:
        # Ctrl-C before the sync started (loading definitions, starting PostgreSQL): nothing to report.
        print("lgm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
