"""The names Dagster knows each tenant's parts by, and the constants several packages share.

It imports nothing from the project, so any package may import it without creating a cycle; every
per-tenant name (asset keys, groups, pools, resource keys, jobs, schedules, tags) is built here only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import dagster as dg

#: Dimensions of the ``journeys`` partitions (service date x branch).
DATE_DIMENSION = "date"
BRANCH_DIMENSION = "branch"

IO_MANAGER_KEY = "tenant_io_manager"
POSTGRES_RESOURCE_KEY = "postgres"
SMARTMOVING_RESOURCE_KEY = "smartmoving"
OWNERS = ["team:data-engineering"]

#: Tag on every asset (and run) of a tenant: filter the UI by ``tenant=lgm``.
TENANT_TAG = "tenant"

#: PostgreSQL group roles, named ``lgm-<key>-<database digest>-<kind>``. Roles are cluster-wide, so the
#: database is part of the name (a group made in staging has no right in production), and ``-`` is a
#: character no tenant key (``[a-z0-9_]``) or reader login contains: one name, one tenant, one kind
#: (``lgm_spx_crm_writer`` was once both ``spx``'s CRM group and ``spx_crm``'s writer group).
ROLE_SEPARATOR = "-"
GROUP_KINDS = ("reader", "writer", "crm_writer", "branch_reader")
#: PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1), which could make two names one.
MAX_ROLE_NAME = 63
_DATABASE_DIGEST_LENGTH = 8


def database_digest(database: str) -> str:
    """A short stable name of a database for role names: its name's SHA-256, 8 hex digits."""
    return hashlib.sha256(database.encode()).hexdigest()[:_DATABASE_DIGEST_LENGTH]


def group_role(key: str, kind: str, database: str) -> str:
    """Tenant ``key``'s group role of ``kind`` in ``database`` (:data:`GROUP_KINDS`)."""
    if kind not in GROUP_KINDS:
        raise ValueError(f"no group kind {kind!r}; kinds: {', '.join(GROUP_KINDS)}")
    return ROLE_SEPARATOR.join(("lgm", key, database_digest(database), kind))


def role_name_problem(key: str) -> str | None:
    """Why ``key`` cannot name group roles (None: it can): the separator in it, or names too long."""
    if ROLE_SEPARATOR in key:
        return f"contains {ROLE_SEPARATOR!r}, which separates the parts of its role names"
    longest = max((group_role(key, kind, "") for kind in GROUP_KINDS), key=len)
    if len(longest.encode()) > MAX_ROLE_NAME:
        return f"makes role names longer than {MAX_ROLE_NAME} bytes ({longest})"
    return None


#: Input metadata of a branch-partitioned asset reading a date-partitioned raw asset: load only the
#: rows its branch can use instead of the whole date's payloads for every branch.
BRANCH_ROWS = "lgm/branch_rows_only"


@dataclass(frozen=True)
class TenantNames:
    """Every name of one tenant's definitions, derived from its key (``lgm`` -> ``lgm/journeys``)."""

    key: str

    def asset_key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.key, asset])

    def op(self, asset: str) -> str:
        """The op (step) name of one of the tenant's assets, as run config addresses it."""
        return self.asset_key(asset).to_python_identifier()

    def group(self, concern: str) -> str:
        return f"{self.key}_{concern}"

    def job(self, what: str) -> str:
        return f"{self.key}_{what}"

    schedule = job
    sensor = job

    @property
    def api_pool(self) -> str:
        """The concurrency pool of the tenant's SmartMoving calls (one API budget per key)."""
        return f"smartmoving_{self.key}"

    @property
    def tags(self) -> dict[str, str]:
        return {TENANT_TAG: self.key}


#: The text form of a ``journeys`` partition key (Dagster joins dimensions in name order: branch, date).
JOURNEY_KEY_FORM = "<location_id>|<YYYY-MM-DD>, e.g. loc_lgm_calgary_001|2026-11-27"


def journey_partition_key(service_date: str, location_id: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE_DIMENSION: service_date, BRANCH_DIMENSION: location_id})


def parse_journey_partition_key(key: str) -> tuple[dt.date, str]:
    """(service date, location id) of a ``journeys`` partition key, typed or as text from any client.

    A run launched over GraphQL or the CLI with only the ``dagster/partition`` tag hands the asset the
    text form; a malformed key fails here with the form it should have.
    """
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
    else:
        parts = str(key).split("|")
        dims = dict(zip((BRANCH_DIMENSION, DATE_DIMENSION), parts, strict=False)) if len(parts) == 2 else {}
    try:
        service_date = dt.date.fromisoformat(dims[DATE_DIMENSION])
        location_id = dims[BRANCH_DIMENSION]
    except (KeyError, ValueError):
        raise ValueError(f"journeys partition key {str(key)!r} is not of the form {JOURNEY_KEY_FORM}") from None
    if not location_id:
        raise ValueError(f"journeys partition key {str(key)!r} is not of the form {JOURNEY_KEY_FORM}")
    return service_date, location_id


#: Output metadata of an asset whose run may cover several partitions: partition key -> that partition's
#: counts and checks (``journeys``), for ``sync_runs`` and ``lgm sync``'s report.
BY_PARTITION_METADATA = "by_partition"

#: Output metadata of a date-partitioned asset that also rewrites dates outside its run's partitions:
#: ISO dates. The leads pulled with the window include the day before it (a lead created late is worked
#: on the next morning); the IO manager writes those dates in the same transaction as the partitions.
ALSO_REWRITES_METADATA = "lgm/also_rewrites_dates"


#: Failure metadata: this error stops the cycle (retrying cannot heal it); ``lgm sync`` reports the cycle stopped.
STOP_CYCLE = "lgm/stop_cycle"
#: Failure metadata: the settings are wrong (base URL, key, the database's URL or schema); ``lgm sync`` exits 2,
#: as for any configuration error.
CONFIGURATION_ERROR = "lgm/configuration_error"
