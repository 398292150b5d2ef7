"""Loading and validating ``tenants.yaml``.

Every identifier here ends up in SQL (schema names, role names) or in Dagster asset keys, so
the loader refuses anything that is not a plain lowercase identifier rather than quoting later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from lgm_pipeline.naming import TenantNames, role_name_problem
from lgm_pipeline.settings import CYCLE_PERIOD_MINUTES, tenants_file_override
from lgm_pipeline.tenants.timezones import zone

DEFAULT_TENANTS_FILE = Path(__file__).with_name("tenants.yaml")

_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_LOCATION_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ENV_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_ADDRESS_ROLES = ("route", "pickup", "dropoff")


class TenantConfigError(ValueError):
    """The tenants file is missing, malformed or inconsistent; the message names the field."""


@dataclass(frozen=True)
class Branch:
    location_id: str
    name: str
    smartmoving_branch_name: str
    #: IANA name of the branch's clock (the tenant's ``timezone`` when the file gives none): its day
    #: views, its sync window and its freshness follow it.
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def today(self, now: dt.datetime | None = None) -> dt.date:
        return (now or dt.datetime.now(dt.UTC)).astimezone(self.tz).date()

    def window(self, now: dt.datetime | None = None) -> list[dt.date]:
        """The branch's 48-hour window: its own today and tomorrow."""
        today = self.today(now)
        return [today, today + dt.timedelta(days=1)]


@dataclass(frozen=True)
class SmartMovingSettings:
    api_key_env: str
    base_url_env: str
    monthly_call_quota: int
    rate_limit_per_minute: int
    #: The variable holding the token of the tenant's webhook URL (None: the tenant takes no webhooks).
    webhook_token_env: str | None = None


@dataclass(frozen=True)
class CustomJobType:
    """A tenant's name for one of SmartMoving's Custom01..40 job types (or a type SmartMoving added)."""

    code: int
    name: str
    needs_truck: bool | None
    addresses: str  # route | pickup | dropoff


@dataclass(frozen=True)
class BranchMappingGaps:
    #: Their jobs fail the branch_mapping rule: every one is quarantined.
    unmapped: list[str]
    #: Their branch partitions stay empty.
    unknown: list[str]


@dataclass(frozen=True)
class Tenant:
    key: str
    client_id: str
    name: str
    timezone: str
    first_service_date: dt.date
    smartmoving: SmartMovingSettings
    branches: tuple[Branch, ...]
    currency: str = "CAD"
    catch_up_days: int = 7  # past service dates refreshed once a day so jobs reach their final status
    job_types: tuple[CustomJobType, ...] = ()
    #: tenants.yaml's ``cycle_offset_minutes``; None: derived from the key (:func:`default_cycle_offset`).
    cycle_offset: int | None = None

    @property
    def cycle_offset_minutes(self) -> int:
        """Where in the 2-hour period the tenant's cycle starts (0 to 119): its daily work moves with it."""
        return default_cycle_offset(self.key) if self.cycle_offset is None else self.cycle_offset

    @property
    def names(self) -> TenantNames:
        return TenantNames(self.key)

    @property
    def schema(self) -> str:
        return f"tenant_{self.key}"

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    @property
    def location_ids(self) -> list[str]:
        return [b.location_id for b in self.branches]

    def branch_by_smartmoving_name(self) -> dict[str, Branch]:
        return {b.smartmoving_branch_name: b for b in self.branches}

    def branch_mapping_gaps(self, smartmoving_names: list[str]) -> BranchMappingGaps:
        """SmartMoving branches this file does not map, and mapped names SmartMoving does not know."""
        mapped = self.branch_by_smartmoving_name()
        return BranchMappingGaps(
            unmapped=[name for name in smartmoving_names if name not in mapped],
            unknown=[name for name in mapped if name not in set(smartmoving_names)],
        )

    def branch(self, location_id: str) -> Branch:
        for branch in self.branches:
            if branch.location_id == location_id:
                return branch
        raise KeyError(location_id)

    @property
    def location_ids_west_to_east(self) -> list[str]:
        """Branches by clock, west first (standard time offsets; file order among equals).

        Whatever the hour, the branches already living a date then follow those still on the previous
        one: each date a cycle rebuilds is one run of neighbouring branch partitions.
        """
        january = dt.datetime(2026, 1, 15, 12, tzinfo=dt.UTC)
        offset = {b.location_id: january.astimezone(b.tz).utcoffset() for b in self.branches}
        return sorted(self.location_ids, key=lambda location_id: offset[location_id])

    def today(self, now: dt.datetime | None = None) -> dt.date:
        """Today on the tenant's clock (schedules, leads' creation dates, the API quota's day)."""
        now = now or dt.datetime.now(dt.UTC)
        return now.astimezone(self.tz).date()

    def sync_window(self, now: dt.datetime | None = None) -> list[dt.date]:
        """The dates the 2-hour cycle pulls: the union of every branch's today and tomorrow.

        Two dates, three while midnight has passed for some branches and not for others (from
        midnight in the easternmost branch to midnight in the westernmost).
        """
        dates = {day for branch in self.branches for day in branch.window(now)}
        return sorted(dates or set(_two_days(self.today(now))))

    def rebuilds_after_pull(self, location_id: str, day: dt.date, now: dt.datetime | None = None) -> bool:
        """Whether a raw pull of ``day`` rebuilds this branch's journeys of ``day`` (automation and ``lgm sync``).

        Yes inside the branch's own window, and for a date that has passed for every branch (the
        catch-up's dates). No for the branch's yesterday while another branch still lives it, nor for
        its day after tomorrow while another branch already lives tomorrow: the cycle pulls those
        dates for the other branch, and this branch's partition waits for its own window (or the
        catch-up).
        """
        branch = self.branch(location_id)
        if day in branch.window(now):
            return True
        return day < min(b.today(now) for b in self.branches)

    def max_days_ahead(self) -> int:
        """How many days a branch's tomorrow can be past the tenant's today (1, or 2 with a branch east of it)."""
        return 1 + any(_ahead_of(b.tz, self.tz) for b in self.branches)


def default_cycle_offset(key: str) -> int:
    """A tenant's minute in the cycle's period, from a stable hash of its key (sha256, not ``hash()``,
    which changes with every process): the same on every machine and start-up, spread evenly over the
    period across tenants, so a code location's tenants do not all tick at the same minute."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % CYCLE_PERIOD_MINUTES


def _two_days(today: dt.date) -> list[dt.date]:
    return [today, today + dt.timedelta(days=1)]


def _ahead_of(clock: ZoneInfo, other: ZoneInfo) -> bool:
    """Whether ``clock`` is ever ahead of ``other`` (checked in winter and in summer)."""
    year = dt.datetime.now(dt.UTC).year
    instants = (dt.datetime(year, 1, 15, 12, tzinfo=dt.UTC), dt.datetime(year, 7, 15, 12, tzinfo=dt.UTC))
    return any(moment.astimezone(clock).utcoffset() > moment.astimezone(other).utcoffset() for moment in instants)  # type: ignore[operator]


def _zone(value: Any, field: str, where: str) -> str:
    timezone = str(value)
    try:
        zone(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TenantConfigError(
            f"{where}: unknown {field} {timezone!r}: use an IANA time zone name such as America/Vancouver"
        ) from exc
    return timezone


def _require(block: dict[str, Any], field: str, where: str) -> Any:
    if field not in block or block[field] in (None, ""):
        raise TenantConfigError(f"{where}: missing required field {field!r}")
    return block[field]


def _match(pattern: re.Pattern[str], value: Any, field: str, where: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise TenantConfigError(f"{where}: {field}={value!r} must match {pattern.pattern}")
    return value


def _parse_tenant(block: Any, index: int) -> Tenant:
    where = f"tenants[{index}]"
    if not isinstance(block, dict):
        raise TenantConfigError(f"{where}: expected a mapping, got {type(block).__name__}")
    key = _match(_KEY_RE, _require(block, "key", where), "key", where)
    where = f"tenant {key!r}"
    # The key names the tenant's database roles: it must name them alone (storage/access.py).
    problem = role_name_problem(key)
    if problem:
        raise TenantConfigError(f"{where}: key {problem}")
    timezone = _zone(_require(block, "timezone", where), "timezone", where)
    try:
        first = dt.date.fromisoformat(str(_require(block, "first_service_date", where)))
    except ValueError as exc:
        raise TenantConfigError(f"{where}: first_service_date must be YYYY-MM-DD") from exc

    sm = _require(block, "smartmoving", where)
    smartmoving = SmartMovingSettings(
        api_key_env=_match(_ENV_NAME_RE, _require(sm, "api_key_env", where), "api_key_env", where),
        base_url_env=_match(_ENV_NAME_RE, _require(sm, "base_url_env", where), "base_url_env", where),
        monthly_call_quota=int(sm.get("monthly_call_quota", 20000)),
        rate_limit_per_minute=int(sm.get("rate_limit_per_minute", 120)),
        webhook_token_env=(
            _match(_ENV_NAME_RE, sm["webhook_token_env"], "webhook_token_env", where)
            if sm.get("webhook_token_env")
            else None
        ),
    )

    raw_branches = _require(block, "branches", where)
    if not isinstance(raw_branches, list):
        raise TenantConfigError(f"{where}: branches must be a list")
    branches: list[Branch] = []
    for j, b in enumerate(raw_branches):
        bwhere = f"{where} branches[{j}]"
        branches.append(
            Branch(
                location_id=_match(_LOCATION_RE, _require(b, "location_id", bwhere), "location_id", bwhere),
                name=str(_require(b, "name", bwhere)),
                smartmoving_branch_name=str(_require(b, "smartmoving_branch_name", bwhere)),
                timezone=_zone(b.get("timezone") or timezone, "timezone", bwhere),
            )
        )
    for attr in ("location_id", "smartmoving_branch_name"):
        values = [getattr(b, attr) for b in branches]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise TenantConfigError(f"{where}: duplicate {attr} {dupes}")

    currency = _match(_CURRENCY_RE, block.get("currency", "CAD"), "currency", where)
    catch_up_days = block.get("catch_up_days", 7)
    if isinstance(catch_up_days, bool) or not isinstance(catch_up_days, int) or not 0 <= catch_up_days <= 60:
        raise TenantConfigError(f"{where}: catch_up_days={catch_up_days!r} must be a whole number from 0 to 60")

    cycle_offset = block.get("cycle_offset_minutes")
    if cycle_offset is not None and (
        isinstance(cycle_offset, bool)
        or not isinstance(cycle_offset, int)
        or not 0 <= cycle_offset < CYCLE_PERIOD_MINUTES
    ):
        raise TenantConfigError(
            f"{where}: cycle_offset_minutes={cycle_offset!r} must be a whole number from 0 to "
            f"{CYCLE_PERIOD_MINUTES - 1} (minutes into the {CYCLE_PERIOD_MINUTES}-minute cycle)"
        )

    return Tenant(
        key=key,
        client_id=str(_require(block, "client_id", where)),
        name=str(_require(block, "name", where)),
        timezone=timezone,
        first_service_date=first,
        smartmoving=smartmoving,
        branches=tuple(branches),
        currency=currency,
        catch_up_days=catch_up_days,
        job_types=_parse_job_types(block.get("job_types") or {}, where),
        cycle_offset=cycle_offset,
    )


def _parse_job_types(raw: Any, where: str) -> tuple[CustomJobType, ...]:
    """``job_types: {101: {name: Piano move, needs_truck: true, addresses: route}, ...}``."""
    if not isinstance(raw, dict):
        raise TenantConfigError(f"{where}: job_types must be a mapping of type code to settings")
    types = []
    for code, settings in raw.items():
        twhere = f"{where} job_types[{code!r}]"
        if isinstance(code, bool) or not isinstance(code, int) or code < 0:
            raise TenantConfigError(f"{twhere}: the key must be a SmartMoving job type code (a whole number)")
        if isinstance(settings, str):
            settings = {"name": settings}
        if not isinstance(settings, dict):
            raise TenantConfigError(f"{twhere}: expected a name or a mapping with name, needs_truck, addresses")
        needs_truck = settings.get("needs_truck")
        if needs_truck is not None and not isinstance(needs_truck, bool):
            raise TenantConfigError(f"{twhere}: needs_truck must be true or false")
        addresses = settings.get("addresses", "route")
        if addresses not in _ADDRESS_ROLES:
            raise TenantConfigError(f"{twhere}: addresses={addresses!r} must be one of {list(_ADDRESS_ROLES)}")
        types.append(CustomJobType(code, str(_require(settings, "name", twhere)), needs_truck, addresses))
    return tuple(types)


def parse_tenants(document: Any) -> tuple[Tenant, ...]:
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), list):
        raise TenantConfigError("tenants file: expected a top-level 'tenants:' list")
    tenants = tuple(_parse_tenant(block, i) for i, block in enumerate(document["tenants"]))
    keys = [t.key for t in tenants]
    if len(set(keys)) != len(keys):
        raise TenantConfigError(f"tenants file: duplicate tenant keys in {keys}")
    if not tenants:
        raise TenantConfigError("tenants file: no tenant configured")
    return tenants


@cache
def _load(path: Path) -> tuple[Tenant, ...]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TenantConfigError(f"tenants file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise TenantConfigError(f"tenants file {path} is not valid YAML: {exc}") from exc
    return parse_tenants(document)


def load_tenants(path: str | Path | None = None) -> tuple[Tenant, ...]:
    """The configured tenants (``LGM_TENANTS_FILE`` overrides the packaged file)."""
    chosen = Path(path or tenants_file_override() or DEFAULT_TENANTS_FILE)
    return _load(chosen.resolve())


def get_tenant(key: str) -> Tenant:
    for tenant in load_tenants():
        if tenant.key == key:
            return tenant
    raise TenantConfigError(f"no tenant {key!r} in the tenants file")
