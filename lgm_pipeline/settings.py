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
DAGSTER_DATABASE_NAME = "dagster"


def lgm_home() -> Path:
    """Where the embedded PostgreSQL and the Dagster home live (``./.lgm`` by default)."""
    return Path(os.environ.get(HOME_ENV) or ".lgm").expanduser().resolve()


def configured_database_url() -> str | None:
    return os.environ.get(DATABASE_URL_ENV) or None
