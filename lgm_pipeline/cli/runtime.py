"""What every ``lgm`` command sets up first: PostgreSQL, the Dagster home, SmartMoving settings.

- ``LGM_DATABASE_URL`` unset: the embedded PostgreSQL under ``$LGM_HOME`` is started (or reused) and
  its URL exported, so the Dagster webserver, daemon and run workers started from here use it too.
- Dagster's instance storage goes to the ``dagster`` database of the same server (``dagster.yaml``).
- The files handed to Dagster (``dagster.yaml``, ``workspace.yaml``) ship in this package and are written
  into ``$LGM_HOME/dagster``, so a plain ``pip install .`` (a wheel) runs like a checkout.
- A tenant with neither its SmartMoving base URL nor its key in the environment syncs from a
  simulator started here, and we say so.
- Every tenant's schema is migrated here, once, before any run: run workers only check its version.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from lgm_pipeline.settings import (
    DAGSTER_STORAGE_URL_ENV,
    DATABASE_URL_ENV,
    RATE_LIMIT_OVERRIDE_ENV,
    lgm_home,
    smartmoving_rate_limit,
)
from lgm_pipeline.storage.database import (
    dagster_database_name,
    dagster_storage_url,
    database_url,
    ensure_database,
    redacted,
)
from lgm_pipeline.tenants import Tenant, load_tenants

# Package data of lgm_pipeline.cli (pyproject.toml's package-data): the instance and the workspace.
PACKAGED_FILES = ("dagster.yaml", "workspace.yaml")


class SetupError(RuntimeError):
    """Configuration the user must fix; the message says what and how."""


def packaged_text(name: str) -> str:
    """The text of a file shipped with the package (``dagster.yaml``, ``workspace.yaml``)."""
    if name not in PACKAGED_FILES:
        raise ValueError(f"{name} is not one of the files lgm ships ({', '.join(PACKAGED_FILES)})")
    try:
        return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise SetupError(f"{name} is missing from the installed lgm_pipeline package; reinstall it") from error


def project_file(name: str) -> Path:
    """A packaged file Dagster reads by path, written into ``$LGM_HOME/dagster`` (rewritten when it changed)."""
    return generated_file(name, packaged_text(name))


def generated_file(name: str, text: str) -> Path:
    """``text`` as ``$LGM_HOME/dagster/<name>``, rewritten only when it changed."""
    folder = lgm_home() / "dagster"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        # Atomic: another `lgm` process (a webserver, a run worker) may be reading it right now.
        staging = path.with_name(f".{name}.{os.getpid()}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, path)
    return path


@dataclass(frozen=True)
class CodeLocation:
    module_name: str
    location_name: str


def code_location() -> CodeLocation:
    """The code location of the packaged workspace: its one source, for `lgm serve`'s gRPC workspace too."""
    [entry] = yaml.safe_load(packaged_text("workspace.yaml"))["load_from"]
    module = entry["python_module"]
    return CodeLocation(module["module_name"], module["location_name"])


def grpc_workspace_text(location: CodeLocation, host: str, port: int) -> str:
    """A workspace that reaches ``location`` over gRPC at host:port instead of loading it in-process."""
    load_from = [{"grpc_server": {"host": host, "port": port, "location_name": location.location_name}}]
    return "# Written by lgm (cli/runtime.py): the code location over gRPC.\n" + yaml.safe_dump(
        {"load_from": load_from}
    )


#: PYTHONWARNINGS entries for Dagster's processes. By message, with built-in categories: Python reads
#: PYTHONWARNINGS before site-packages are importable, so Dagster's warning classes cannot be named.
DAGSTER_WARNING_FILTERS = (
    # `dagster dev` warns on every start that it is superseded by `dg dev` (a CLI lgm does not use)
    "ignore:Function `dev_command` is superseded:FutureWarning",
    # the code server repeats the beta warnings of the definitions: nothing an operator can act on
    "ignore:Parameter `backfill_policy` of function `asset` is currently in beta:Warning",
    "ignore:Parameter `use_user_code_server` of initializer `AutomationConditionSensorDefinition.__init__`:Warning",
    "ignore:Parameter `allow_nonexistent_upstream_partitions` of initializer `TimeWindowPartitionMapping.__init__`"
    ":Warning",
)


def dagster_process_env(verbose: bool) -> dict[str, str]:
    """The environment for Dagster's own processes: ours (database, secrets), minus their noise unless verbose."""
    env = dict(os.environ)
    if not verbose:
        env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), *DAGSTER_WARNING_FILTERS]))
    return env


def default_signals() -> None:
    """In a child before exec: SIGINT/SIGTERM stop it, even when our own parent started us ignoring them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def missing_smartmoving_settings(tenant: Tenant) -> list[str]:
    """The tenant's SmartMoving variables that are unset (names only: the values are secrets)."""
    names = (tenant.smartmoving.base_url_env, tenant.smartmoving.api_key_env)
    return [name for name in names if not os.environ.get(name)]


def _prepare_dagster_home() -> Path:
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = project_file("dagster.yaml").parent
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _needs_simulator(tenant: Tenant) -> bool:
    url_env, key_env = tenant.smartmoving.base_url_env, tenant.smartmoving.api_key_env
    missing = missing_smartmoving_settings(tenant)
    if len(missing) == 1:
        raise SetupError(f"tenant {tenant.key}: {missing[0]} is not set (set both {url_env} and {key_env}, or neither)")
    return bool(missing)


def _start_simulators(
    tenants: list[Tenant], stack: ExitStack, say: bool, webhook_receiver: tuple[str, int] | None = None
) -> None:
    """A simulator for each tenant without SmartMoving settings; with ``webhook_receiver`` (host, port), a webhook
    token when it has none, and its simulator posting its changes to that receiver."""
    simulated = [t for t in tenants if _needs_simulator(t)]
    if not simulated:
        return
    if webhook_receiver:
        _generate_webhook_tokens(simulated, say)
    from lgm_pipeline.simulator import SimulatorConfig, start_simulator

    # The built-in simulator is for seeing data flow in a minute: no throttle on either side, unless the
    # user asked for a client budget (then the simulator enforces it too). The override is process-wide,
    # so it is only defaulted when no tenant talks to the real API.
    if len(simulated) == len(tenants):
        os.environ.setdefault(RATE_LIMIT_OVERRIDE_ENV, "off")
    for tenant in simulated:
        limit = smartmoving_rate_limit(tenant.smartmoving.rate_limit_per_minute)
        simulator = stack.enter_context(start_simulator(SimulatorConfig(rate_limit_per_minute=limit)))
        url_env, key_env = tenant.smartmoving.base_url_env, tenant.smartmoving.api_key_env
        os.environ[url_env] = simulator.base_url
        os.environ[key_env] = simulator.api_key
        token_env = tenant.smartmoving.webhook_token_env
        if webhook_receiver and token_env and os.environ.get(token_env):
            from lgm_pipeline.webhooks.receiver import webhook_url

            # Until the receiver answers (after the first sync) the simulator's deliveries retry, then fail:
            # the cycle reconciles what they carried.
            simulator.set_webhooks(webhook_url(*webhook_receiver, tenant.key, os.environ[token_env]))
        if say:
            print(
                f"No SmartMoving settings for tenant {tenant.key} ({url_env}/{key_env}): "
                f"syncing from the built-in simulator at {simulator.base_url}",
                file=sys.stderr,
            )


def _generate_webhook_tokens(tenants: list[Tenant], say: bool) -> None:
    """A token for each simulated tenant that takes webhooks but has none, so the demo's receiver answers.

    Into this process's environment, which the services started from here inherit; never printed (the URL
    shown names the variable), and gone with the process: a real deployment sets its own."""
    for tenant in tenants:
        name = tenant.smartmoving.webhook_token_env
        if name and not os.environ.get(name):
            os.environ[name] = secrets.token_urlsafe(32)
            if say:
                print(
                    f"No {name} for tenant {tenant.key}: generated one for this run (the webhook receiver takes it)",
                    file=sys.stderr,
                )


def warn_of_time_zones() -> None:
    """On stderr, one line per configured zone the server's own IANA data gives other offsets (the next year).

    Only a warning, never a failure: the pipeline takes no date from the server's data (the day views
    read the bundled offsets in ``zone_offsets``), but SQL of one's own with ``AT TIME ZONE`` does.
    """
    import sqlalchemy as sa

    from lgm_pipeline.storage.resources import PostgresResource
    from lgm_pipeline.storage.zones import time_zone_warnings

    try:
        lines = time_zone_warnings(PostgresResource().engine(), load_tenants())
    except sa.exc.SQLAlchemyError as error:
        # The command has its own work to do: a comparison that cannot run is one line, not its end.
        lines = [f"warning: could not compare the time zones with PostgreSQL's ({type(error).__name__})"]
    for line in lines:
        print(line, file=sys.stderr, flush=True)


@contextmanager
def lgm_runtime(
    *, smartmoving: bool = True, say: bool = True, webhook_receiver: tuple[str, int] | None = None
) -> Iterator[Path]:
    """Database, Dagster home and (optionally) SmartMoving settings for the duration of a command.

    ``webhook_receiver`` (host, port): a tenant served by the built-in simulator also gets a generated webhook
    token when its variable is unset, and its simulator posts its changes there (``lgm up``'s receiver).
    Yields the Dagster home directory."""
    with ExitStack() as stack:
        url = database_url()
        os.environ[DATABASE_URL_ENV] = url
        ensure_database(url, dagster_database_name(url))
        os.environ[DAGSTER_STORAGE_URL_ENV] = dagster_storage_url(url)
        dagster_home = _prepare_dagster_home()
        if say:
            print(f"PostgreSQL: {redacted(url)}", file=sys.stderr)
        if smartmoving:
            _start_simulators(list(load_tenants()), stack, say, webhook_receiver)
        migrate_tenants()
        yield dagster_home


def migrate_tenants() -> list[tuple[Tenant, list[int]]]:
    """Every tenant's pending migrations, applied before any run (runs only check the version); per tenant, the
    versions applied. Part of every command's start-up, ``lgm db migrate`` included."""
    from lgm_pipeline.storage.resources import PostgresResource

    postgres = PostgresResource()
    return [(tenant, postgres.migrate(tenant)) for tenant in load_tenants()]
