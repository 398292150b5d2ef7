"""Process-wide settings read from the environment, with their defaults, in one place.

Only names and non-secret defaults live here; secret values are read at run time and never
copied into Dagster config, metadata or logs.
"""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_URL_ENV = "LGM_DATABASE_URL"
TEST_DATABASE_URL_ENV = "LGM_TEST_DATABASE_URL"
HOME_ENV = "LGM_HOME"
DAGSTER_STORAGE_URL_ENV = "LGM_DAGSTER_STORAGE_URL"


TENANTS_FILE_ENV = "LGM_TENANTS_FILE"
ALLOWED_HOSTS_ENV = "LGM_WEBSERVER_ALLOWED_HOSTS"


def webserver_allowed_hosts() -> list[str]:
    """``LGM_WEBSERVER_ALLOWED_HOSTS``: host names the guarded webserver answers to besides IPs and localhost."""
    return [name.strip() for name in (os.environ.get(ALLOWED_HOSTS_ENV) or "").split(",") if name.strip()]


def tenants_file_override() -> str | None:
    """``LGM_TENANTS_FILE``: another tenants file than the packaged one."""
    return os.environ.get(TENANTS_FILE_ENV) or None


def secret(name: str) -> str | None:
    """The value of the variable ``name`` (a tenant's API key or URL, a webhook token: tenants.yaml names them).

    Read where it is used (a run's client, the receiver's start-up), never cached, never copied into config,
    metadata or logs; this module is the one place code reads the environment.
    """
    return os.environ.get(name) or None


def lgm_home() -> Path:
    """Where the embedded PostgreSQL and the Dagster home live (``./.lgm`` by default)."""
    return Path(os.environ.get(HOME_ENV) or ".lgm").expanduser().resolve()


def configured_database_url() -> str | None:
    return os.environ.get(DATABASE_URL_ENV) or None


RATE_LIMIT_OVERRIDE_ENV = "LGM_SMARTMOVING_RATE_LIMIT"


def smartmoving_rate_limit(tenant_default: int) -> int | None:
    """Client-side SmartMoving budget: ``LGM_SMARTMOVING_RATE_LIMIT`` ("off" or calls/min) over the tenant's."""
    value = (os.environ.get(RATE_LIMIT_OVERRIDE_ENV) or "").strip().lower()
    if not value:
        return tenant_default
    if value == "off":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{RATE_LIMIT_OVERRIDE_ENV} must be 'off' or a whole number, not {value!r}") from None


REFRESH_CRON_ENV = "LGM_REFRESH_CRON"
#: Every 2 hours: 12 cycles a day (assets.metadata.cycles_per_day() follows LGM_CYCLE_PERIOD_MINUTES).
DEFAULT_REFRESH_CRON = "0 */2 * * *"


#: The default cycle's period: each tenant's cycle starts at its own minute of it (``cycle_offset_minutes``).
CYCLE_PERIOD_MINUTES = 120
CYCLE_PERIOD_ENV = "LGM_CYCLE_PERIOD_MINUTES"
#: The periods a cron repeats evenly all day (a divisor of the hour, or 2 hours). Each divides 120, so a
#: tenant's offset in the 2 hours, taken modulo the period, spreads tenants over a shorter period as evenly.
CYCLE_PERIODS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120)


def cycle_period_minutes() -> int:
    """``LGM_CYCLE_PERIOD_MINUTES`` over 120: how often each tenant's cycle ticks, still staggered.

    A shorter period is for load tests and demos of many tenants (25 tenants every 30 minutes load a
    machine as 100 every 2 hours do); each cycle spends API calls, so production keeps the 2 hours
    (the API budget's projections follow the period)."""
    value = (os.environ.get(CYCLE_PERIOD_ENV) or "").strip()
    if not value:
        return CYCLE_PERIOD_MINUTES
    if not value.isdigit() or int(value) not in CYCLE_PERIODS:
        raise ValueError(f"{CYCLE_PERIOD_ENV} must be one of {', '.join(map(str, CYCLE_PERIODS))}, not {value!r}")
    return int(value)


def refresh_cron_override() -> str | None:
    """``LGM_REFRESH_CRON`` when set (validated): every tenant's cycle then follows it verbatim, unstaggered.

    For tests and demos that want a tick within a minute (``* * * * *``); a production change of
    cadence changes the API budget too (docs/performance.md)."""
    value = (os.environ.get(REFRESH_CRON_ENV) or "").strip()
    if not value:
        return None
    from dagster._utils.schedules import is_valid_cron_string  # late: most commands never need it

    if not is_valid_cron_string(value):
        raise ValueError(f"{REFRESH_CRON_ENV} is not a cron expression: {value!r} (e.g. '0 */2 * * *')")
    return value


def refresh_cron() -> str:
    """The cycle's cron before staggering: ``LGM_REFRESH_CRON`` over every 2 hours.

    A tenant's own cron is :func:`lgm_pipeline.assets.automation.cycle_cron`: the default shifted by
    the tenant's offset, or the override verbatim."""
    return refresh_cron_override() or DEFAULT_REFRESH_CRON


DAGSTER_HISTORY_DAYS_ENV = "LGM_DAGSTER_HISTORY_DAYS"
#: Longer than the automation's lookback (catch_up_days + the window, 10 days for lgm): the journeys
#: condition reads the materializations of those dates, which go with their runs.
DEFAULT_DAGSTER_HISTORY_DAYS = 14


def _whole_number(env: str, default: int, low: int, high: int | None, what: str) -> int:
    """``env`` as a whole number in ``low..high``, ``default`` when unset; otherwise an error naming it."""
    value = (os.environ.get(env) or "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low or (high is not None and number > high):
        raise ValueError(f"{env} must be a whole number of {what}, not {value!r}")
    return number


def dagster_history_days() -> int:
    """Finished Dagster runs (and their event logs) older than this many days are deleted daily."""
    return _whole_number(DAGSTER_HISTORY_DAYS_ENV, DEFAULT_DAGSTER_HISTORY_DAYS, 0, None, "days (0 or more)")


AUTOMATION_INTERVAL_ENV = "LGM_AUTOMATION_INTERVAL_S"
#: How often the automation sensor evaluates journeys' condition, for up to AUTOMATION_TENANTS_PER_STEP
#: tenants in the code location: a raw pull is followed within this.
DEFAULT_AUTOMATION_INTERVAL_S = 30
#: Each further group of this many tenants in a code location adds DEFAULT_AUTOMATION_INTERVAL_S to the default.
AUTOMATION_TENANTS_PER_STEP = 25
#: The default interval's ceiling: journeys are rebuilt at most 2 minutes after their pull however many tenants.
MAX_DEFAULT_AUTOMATION_INTERVAL_S = 120


def automation_interval_s(tenants_in_location: int = 1) -> int:
    """``LGM_AUTOMATION_INTERVAL_S``, or by default 30 s per 25 tenants of the code location, at most 120 s.

    Why it grows: a tick evaluates every tenant's journeys whether or not anything ran, ~12 ms of CPU a
    tenant (1.2 s at 100 tenants; docs/performance.md, section 12), so a fixed 30 s would make the idle
    sensor alone 0.04 cores at 100 tenants. Growing with the location keeps it ~0.01 cores, for at most
    2 minutes (1 on average) between a tenant's pull and its journeys' request."""
    steps = -(-max(tenants_in_location, 1) // AUTOMATION_TENANTS_PER_STEP)
    default = min(DEFAULT_AUTOMATION_INTERVAL_S * steps, MAX_DEFAULT_AUTOMATION_INTERVAL_S)
    return _whole_number(AUTOMATION_INTERVAL_ENV, default, 5, 3600, "seconds from 5 to 3600")


WEBHOOK_INTERVAL_ENV = "LGM_WEBHOOK_INTERVAL_S"
#: How often a code location's webhook sensor looks at its tenants' inboxes, by default.
DEFAULT_WEBHOOK_INTERVAL_S = 10


def webhook_interval_s() -> int:
    """``LGM_WEBHOOK_INTERVAL_S``, or 10 s: the floor of a webhook event's latency (half of it on average), and
    the price of an idle code location, whose every tick the daemon books and the code server evaluates
    whether or not an event waits (docs/performance.md, section 12)."""
    return _whole_number(WEBHOOK_INTERVAL_ENV, DEFAULT_WEBHOOK_INTERVAL_S, 1, 600, "seconds from 1 to 600")
