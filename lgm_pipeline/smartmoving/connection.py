"""A connection check that reports problems instead of raising them (for ``lgm check-connection``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.errors import AuthenticationError, AuthorizationError, SmartMovingError


@dataclass(frozen=True)
class ConnectionReport:
    ok: bool
    latency_ms: float | None
    # None when the check could not tell (the API was unreachable before the key was judged).
    key_valid: bool | None
    branches: list[str] = field(default_factory=list)
    error: str | None = None


def check_connection(client: SmartMovingClient) -> ConnectionReport:
    """Ping, then list branches: the branch list is the cheapest call that proves the key works."""
    latency_ms: float | None = None
    try:
        latency_ms = client.ping() * 1000
        branches = client.list_branches()
    except AuthenticationError as exc:
        return ConnectionReport(ok=False, latency_ms=latency_ms, key_valid=False, error=str(exc))
    except AuthorizationError as exc:
        # The key was recognised, it just may not call this endpoint.
        return ConnectionReport(ok=False, latency_ms=latency_ms, key_valid=True, error=str(exc))
    except SmartMovingError as exc:
        return ConnectionReport(ok=False, latency_ms=latency_ms, key_valid=None, error=str(exc))
    names = [str(b.get("name") or b.get("id") or "?") for b in branches if isinstance(b, dict)]
    return ConnectionReport(ok=True, latency_ms=latency_ms, key_valid=True, branches=names)
