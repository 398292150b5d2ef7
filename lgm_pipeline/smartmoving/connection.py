"""A connection check that reports problems instead of raising them (for ``lgm check-connection``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.errors import (
    AuthenticationError,
    AuthorizationError,
    EndpointUnavailableError,
    SmartMovingError,
)


@dataclass(frozen=True)
class ConnectionReport:
    ok: bool
    latency_ms: float | None
    # None when the check could not tell (the API was unreachable before the key was judged).
    key_valid: bool | None
    branches: list[str] = field(default_factory=list)
    error: str | None = None
    #: An endpoint out of the key's reach while ping answered (``/api/branches``): the base URL is right, the API
    #: is usable without it, so ``lgm check-connection`` says partial (exit 3), not failed.
    unavailable_endpoint: str | None = None

    @property
    def partial(self) -> bool:
        return not self.ok and self.unavailable_endpoint is not None


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
    except EndpointUnavailableError as exc:
        # Ping answered, so the base URL is right; a 403 also proves the key was recognised, a 404 does not
        # (ping may not need the key).
        return ConnectionReport(
            ok=False,
            latency_ms=latency_ms,
            key_valid=True if exc.status == 403 else None,
            error=str(exc),
            unavailable_endpoint=exc.path,
        )
    except SmartMovingError as exc:
        return ConnectionReport(ok=False, latency_ms=latency_ms, key_valid=None, error=str(exc))
    names = [str(b.get("name") or b.get("id") or "?") for b in branches if isinstance(b, dict)]
    return ConnectionReport(ok=True, latency_ms=latency_ms, key_valid=True, branches=names)
