"""Simulator configuration: the world's shape, the API limits and the switchable faults."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from typing import TypeVar

# Deliberately not 32 hex characters, so it can never be mistaken for (or scanned as) a real key.
DEMO_API_KEY = "lgm-simulator-demo-key"

_Num = TypeVar("_Num", int, float)

# The vendor docs leave open what FromServiceDate/ToServiceDate match; each reading is one value.
DATE_FILTERS = ("job_date", "service_date")

# Enough for a many-tenant benchmark; each tenant's world is built only when first asked for.
MAX_TENANTS = 1000


@dataclass
class FaultConfig:
    """Failures the simulator injects on ``/v1/api``; replaceable at run time."""

    error_rate: float = 0.0
    latency_ms: int = 0
    malformed_pages: list[int] = field(default_factory=list)
    incomplete_pages: list[int] = field(default_factory=list)
    drop_connection_rate: float = 0.0
    duplicate_across_pages: bool = False
    down: bool = False
    # Endpoint name (``leads``, ``branches``, ``customers``, ``ping``...) -> the HTTP status it always answers:
    # an endpoint the key's plan leaves out (404, 403) while the others answer.
    endpoint_status: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_connection_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        # A copy of its own: tenants' faults start as copies of one config and must not share it.
        self.endpoint_status = _statuses(self.endpoint_status)
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FaultConfig:
        """Build from JSON; unknown fields are refused so a typo never silently disables a fault."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault fields {unknown}; known: {sorted(known)}")
        return cls(
            error_rate=_number(data, "error_rate", float),
            latency_ms=_number(data, "latency_ms", int),
            malformed_pages=_pages(data, "malformed_pages"),
            incomplete_pages=_pages(data, "incomplete_pages"),
            drop_connection_rate=_number(data, "drop_connection_rate", float),
            duplicate_across_pages=_flag(data, "duplicate_across_pages"),
            down=_flag(data, "down"),
            endpoint_status=_statuses(data.get("endpoint_status", {})),
        )

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class WebhookFaults:
    """Delivery faults of the simulator's webhooks (``simulator/webhooks.py``), drawn per event from a seeded RNG."""

    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    delay_ms: int = 0
    loss_rate: float = 0.0
    # Tries per event, the first included; a 4xx other than 408/429 is never retried.
    max_attempts: int = 5

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "reorder_rate", "loss_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> WebhookFaults:
        """Build from JSON; unknown fields are refused so a typo never silently disables a fault."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown webhook fault fields {unknown}; known: {sorted(known)}")
        return cls(
            duplicate_rate=_number(data, "duplicate_rate", float),
            reorder_rate=_number(data, "reorder_rate", float),
            delay_ms=_number(data, "delay_ms", int),
            loss_rate=_number(data, "loss_rate", float),
            max_attempts=_number(data, "max_attempts", int, default=5),
        )

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_webhook_fault_options(values: list[str]) -> WebhookFaults:
    """Parse CLI options such as ``duplicate_rate=0.1`` or ``max_attempts=3``."""
    data: dict[str, object] = {}
    for raw in values:
        name, sep, value = raw.partition("=")
        if not sep or not value.strip():
            raise ValueError(f"webhook fault option {raw!r}: expected NAME=VALUE")
        data[name.strip()] = value.strip()
    try:
        return WebhookFaults.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"webhook fault options {values}: {exc}") from exc


def _number(data: dict[str, object], name: str, kind: type[_Num], default: int = 0) -> _Num:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return kind(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc


def _pages(data: dict[str, object], name: str) -> list[int]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in value):
        raise ValueError(f"{name} must be a list of page numbers, got {value!r}")
    return list(value)


def _statuses(value: object) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599
        for k, v in value.items()
    ):
        raise ValueError(f"endpoint_status must map endpoint names to HTTP statuses 400-599, got {value!r}")
    return dict(value)


def _flag(data: dict[str, object], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


@dataclass
class SimulatorConfig:
    api_key: str = DEMO_API_KEY
    seed: int = 7
    customers_per_day: int = 185
    rate_limit_per_minute: int | None = 120
    monthly_quota: int | None = None
    churn: float = 0.03
    max_page_size: int = 1000
    branch_names: list[str] | None = None
    faults: FaultConfig = field(default_factory=FaultConfig)
    # "job_date": a customer matches when an opportunity's serviceDate or any job's jobDate is in range.
    # "service_date": only the opportunity's serviceDate (its first day) counts.
    date_filter: str = "job_date"
    # Independent tenants served side by side: tenant i answers to tenant_api_key(i).
    tenants: int = 1
    # Serve the other shapes the API's public descriptions give (simulator/drift.py).
    drift: bool = False
    # Where to POST SmartMoving's webhooks (simulator/webhooks.py); None sends none. With many tenants,
    # "{tenant}" in it becomes the tenant's number. It carries a secret token: log only its origin.
    webhook_url: str | None = None
    webhook_faults: WebhookFaults = field(default_factory=WebhookFaults)

    def __post_init__(self) -> None:
        check_date_filter(self.date_filter)
        check_tenant_count(self.tenants)

    def tenant_api_key(self, tenant: int) -> str:
        """Tenant ``tenant``'s key (1-based): the plain key when it is the only tenant."""
        self._check_tenant(tenant)
        # A single tenant keeps the plain key, so single-tenant callers see nothing change.
        return self.api_key if self.tenants == 1 else f"{self.api_key}-t{tenant}"

    def api_keys(self) -> list[str]:
        return [self.tenant_api_key(i) for i in range(1, self.tenants + 1)]

    def api_key_fingerprints(self) -> list[str]:
        return [key_fingerprint(key) for key in self.api_keys()]

    def for_tenant(self, tenant: int) -> SimulatorConfig:
        """The one-tenant config of tenant ``tenant``: its key, and a seed of its own so worlds differ."""
        self._check_tenant(tenant)
        return replace(
            self,
            api_key=self.tenant_api_key(tenant),
            seed=self.seed + tenant - 1,
            tenants=1,
            faults=replace(self.faults),
            branch_names=None if self.branch_names is None else list(self.branch_names),
            webhook_url=self.tenant_webhook_url(tenant),
        )

    def tenant_webhook_url(self, tenant: int) -> str | None:
        """Tenant ``tenant``'s webhook URL: ``webhook_url`` with ``{tenant}`` replaced by its number."""
        self._check_tenant(tenant)
        return None if self.webhook_url is None else self.webhook_url.replace("{tenant}", str(tenant))

    def _check_tenant(self, tenant: int) -> None:
        if not 1 <= tenant <= self.tenants:
            raise ValueError(f"tenant must be between 1 and {self.tenants}, got {tenant}")


def check_tenant_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TENANTS:
        raise ValueError(f"tenants must be a whole number from 1 to {MAX_TENANTS}; got {value!r}")
    return value


def check_date_filter(value: object) -> str:
    if value not in DATE_FILTERS:
        raise ValueError(f"date_filter must be one of {', '.join(DATE_FILTERS)}; got {value!r}")
    return str(value)


_BOOL_FAULTS = {"duplicate_across_pages", "down"}
_LIST_FAULTS = {"malformed_pages", "incomplete_pages"}
_MAP_FAULTS = {"endpoint_status"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_fault_options(values: list[str]) -> FaultConfig:
    """Parse CLI options such as ``error_rate=0.1``, ``malformed_pages=2,3``, ``endpoint_status=leads:404`` or a
    bare ``down``."""
    data: dict[str, object] = {}
    for raw in values:
        name, sep, value = raw.partition("=")
        name = name.strip()
        value = value.strip()
        if name in _BOOL_FAULTS:
            if not sep or value.lower() in _TRUE:
                data[name] = True
            elif value.lower() in _FALSE:
                data[name] = False
            else:
                raise ValueError(f"fault option {raw!r}: expected true or false")
        elif not sep or not value:
            raise ValueError(f"fault option {raw!r}: expected NAME=VALUE")
        elif name in _MAP_FAULTS:
            try:
                data[name] = {
                    endpoint.strip(): int(status)
                    for endpoint, _, status in (pair.partition(":") for pair in value.split(","))
                }
            except ValueError as exc:
                raise ValueError(f"fault option {raw!r}: expected endpoint:status pairs like leads:404") from exc
        elif name in _LIST_FAULTS:
            try:
                data[name] = [int(p) for p in value.split(",") if p.strip()]
            except ValueError as exc:
                raise ValueError(f"fault option {raw!r}: expected page numbers like 2,3") from exc
        else:
            data[name] = value
    try:
        return FaultConfig.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"fault options {values}: {exc}") from exc


def key_fingerprint(key: str) -> str:
    """Enough of a key's SHA-256 to tell keys apart in a listing, never enough to call the API with."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]
