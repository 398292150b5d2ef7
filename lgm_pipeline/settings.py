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
DEFAULT_REFRESH_CRON = "0 */2 * * *"


def refresh_cron() -> str:
    """The cycle's cron (raw refresh and leads): ``LGM_REFRESH_CRON`` over every 2 hours.

    Why an override: a benchmark or a demo triggers one cycle through the daemon at a chosen minute
    instead of waiting for the next even hour.
    """
    return (os.environ.get(REFRESH_CRON_ENV) or "").strip() or DEFAULT_REFRESH_CRON
