"""Dagster resource handing out configured SmartMoving clients, one account per tenant."""

from __future__ import annotations

import logging

import dagster as dg
from pydantic import Field

from lgm_pipeline.smartmoving.client import SmartMovingClient


class SmartMovingAccount(dg.Config):
    """SmartMoving connection settings for one tenant.

    ``api_key`` is given as ``dg.EnvVar(...)``: Dagster then stores only the variable's name in
    run config and resolves the value at run time. ``repr=False`` keeps the resolved value out of
    the account's repr, which Dagster and user code can log.
    """

    base_url: str = Field(description="API root, e.g. https://api-public.smartmoving.com/v1")
    api_key: str = Field(repr=False, description="SmartMoving API key; pass dg.EnvVar, never a literal")
    page_size: int = 500
    max_concurrency: int = 4
    rate_limit_per_minute: int | None = Field(
        default=120, description="Server throttle per key; None turns the client-side budget off"
    )
    max_retries: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    deadline_seconds: float = 900.0

    def get_client(self, logger: logging.Logger | None = None) -> SmartMovingClient:
        """A new client; the caller closes it (``with account.get_client() as client:``)."""
        return SmartMovingClient(
            self.base_url,
            self.api_key,
            page_size=self.page_size,
            max_concurrency=self.max_concurrency,
            rate_limit_per_minute=self.rate_limit_per_minute,
            max_retries=self.max_retries,
            backoff_base_seconds=self.backoff_base_seconds,
            backoff_max_seconds=self.backoff_max_seconds,
            deadline_seconds=self.deadline_seconds,
            logger=logger,
        )


class SmartMovingResource(dg.ConfigurableResource):
    """Every tenant's SmartMoving account, by tenant key: one resource, reached typed by the assets."""

    accounts: dict[str, SmartMovingAccount] = Field(description="Tenant key -> that tenant's SmartMoving account")

    def account(self, tenant_key: str) -> SmartMovingAccount:
        try:
            return self.accounts[tenant_key]
        except KeyError:
            raise dg.DagsterInvariantViolationError(
                f"no SmartMoving account for tenant {tenant_key!r} (accounts: {sorted(self.accounts)})"
            ) from None
