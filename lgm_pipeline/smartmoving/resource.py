"""Dagster resource handing out configured SmartMoving clients, one account per tenant."""

from __future__ import annotations

import logging
import os

import dagster as dg
from pydantic import Field

from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.errors import MissingSettingError


def _required_env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise MissingSettingError(name, what)
    return value


class SmartMovingAccount(dg.Config):
    """SmartMoving connection settings for one tenant.

    The base URL and key are given as the NAMES of the environment variables holding them and read
    when a client is made. Why not ``dg.EnvVar``: Dagster resolves every EnvVar of a resource's config
    when a run starts, and one resource holds every tenant's account, so one tenant's unset key would
    fail every other tenant's runs. Read here, it fails only the runs that use that tenant's account,
    with a message naming the variable. Dagster still stores only the names in run config.
    """

    base_url_env: str = Field(description="Environment variable with the API root, e.g. SMARTMOVING_BASE_URL")
    api_key_env: str = Field(description="Environment variable with the API key, e.g. SMARTMOVING_API_KEY")
    page_size: int = 500
    max_concurrency: int = 4
    rate_limit_per_minute: int | None = Field(
        default=120, description="Server throttle per key; None turns the client-side budget off"
    )
    max_retries: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    deadline_seconds: float = 900.0

    @property
    def base_url(self) -> str:
        """The API root from the environment (not a secret, but unset it is a configuration error too)."""
        return _required_env(self.base_url_env, "base URL")

    def get_client(self, logger: logging.Logger | None = None) -> SmartMovingClient:
        """A new client; the caller closes it (``with account.get_client() as client:``)."""
        return SmartMovingClient(
            self.base_url,
            _required_env(self.api_key_env, "API key"),
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
