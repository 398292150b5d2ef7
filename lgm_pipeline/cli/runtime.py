"""What every ``lgm`` command sets up first: PostgreSQL, the Dagster home, SmartMoving settings.

- ``LGM_DATABASE_URL`` unset: the embedded PostgreSQL under ``$LGM_HOME`` is started (or reused) and
  its URL exported, so the Dagster webserver, daemon and run workers started from here use it too.
- Dagster's instance storage goes to the ``dagster`` database of the same server (``dagster.yaml``).
- The files handed to Dagster (``dagster.yaml``, ``workspace.yaml``) ship in this package and are written
  into ``$LGM_HOME/dagster``, so a plain ``pip install .`` (a wheel) runs like a checkout.
- A tenant with neither its SmartMoving base URL nor its key in the environment syncs from a
  simulator started here, and we say so.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path

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
    text = packaged_text(name)
    folder = lgm_home() / "dagster"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        # Atomic: another `lgm` process (a webserver, a run worker) may be reading it right now.
        staging = path.with_name(f".{name}.{os.getpid()}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, path)
    return path


def _prepare_dagster_home() -> Path:
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = project_file("dagster.yaml").parent
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _needs_simulator(tenant: Tenant) -> bool:
    url_env, key_env = tenant.smartmoving.base_url_env, tenant.smartmoving.api_key_env
    has_url, has_key = bool(os.environ.get(url_env)), bool(os.environ.get(key_env))
    if has_url != has_key:
        missing = key_env if has_url else url_env
        raise SetupError(f"tenant {tenant.key}: {missing} is not set (set both {url_env} and {key_env}, or neither)")
    return not has_url


def _start_simulators(tenants: list[Tenant], stack: ExitStack, say: bool) -> None:
    """A simulator for each tenant without SmartMoving settings."""
    simulated = [t for t in tenants if _needs_simulator(t)]
    if not simulated:
        return
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
        if say:
            print(
                f"No SmartMoving settings for tenant {tenant.key} ({url_env}/{key_env}): "
                f"syncing from the built-in simulator at {simulator.base_url}",
                file=sys.stderr,
            )


@contextmanager
def lgm_runtime(*, smartmoving: bool = True, say: bool = True) -> Iterator[Path]:
    """Database, Dagster home and (optionally) SmartMoving settings for the duration of a command.

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
            _start_simulators(list(load_tenants()), stack, say)
        from lgm_pipeline.storage.resources import PostgresResource

        postgres = PostgresResource()
        for tenant in load_tenants():
            postgres.ensure_tenant(tenant)
        yield dagster_home
