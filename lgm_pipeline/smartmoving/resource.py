"""Dagster resource handing out configured SmartMoving clients, one account per tenant.

Where a tenant's API root and key come from (the names of its environment variables, from
``tenants.yaml``) is bound in code when the definitions are built, and is no part of the run config
schema: a run launched from the Launchpad or GraphQL can tune the client (page size, retries, rate
budget) but cannot point a tenant's run at another tenant's key, another URL or any other variable of
the code server. Dagster refuses such run config before the run starts, naming the field.
"""

# No ``from __future__ import annotations``: Dagster reads ``ResourceDependency`` from the evaluated annotation.
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from lgm_pipeline.settings import secret
from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.errors import MissingSettingError


def _required_env(name: str, what: str) -> str:
    value = secret(name)
    if not value:
        raise MissingSettingError(name, what)
    return value


@dataclass(frozen=True)
class SmartMovingCredentials:
    """Where one tenant's API root and key are: the NAMES of its environment variables (tenants.yaml).

    Why names and not ``dg.EnvVar``: Dagster resolves every EnvVar of a resource when a run starts, and one
    resource serves every tenant, so one tenant's unset key would fail every other tenant's runs. Read when a
    client is made, an unset variable fails only the runs of its tenant, with a message naming the variable.
    """

    base_url_env: str
    api_key_env: str


class SmartMovingSettings(dg.Config):
    """The client's knobs for one tenant: safe to tune at launch (they choose no credential, no destination)."""

    page_size: int = 500
    max_concurrency: int = 4
    rate_limit_per_minute: int | None = Field(
        default=120, description="Server throttle per key; None turns the client-side budget off"
    )
    max_retries: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    deadline_seconds: float = 900.0


class SmartMovingAccount(SmartMovingSettings):
    """One tenant's account: its settings plus where its credentials are. Built in code, never from run config."""

    base_url_env: str = Field(description="Environment variable with the API root, e.g. SMARTMOVING_BASE_URL")
    api_key_env: str = Field(description="Environment variable with the API key, e.g. SMARTMOVING_API_KEY")

    @property
    def credentials(self) -> SmartMovingCredentials:
        return SmartMovingCredentials(base_url_env=self.base_url_env, api_key_env=self.api_key_env)

    @property
    def settings(self) -> SmartMovingSettings:
        return SmartMovingSettings(**{name: getattr(self, name) for name in SmartMovingSettings.model_fields})

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
    """Every tenant's SmartMoving account, by tenant key: one resource, reached typed by the assets.

    ``credentials`` and ``settings`` are nested resource dependencies, not config fields: Dagster leaves them
    out of the run config schema and hands the run the mappings bound here (built from ``tenants.yaml`` by
    :func:`lgm_pipeline.assets.factory.smartmoving_resource`). Only ``accounts`` is run config: a tenant's
    knobs for one run, in place of its ``tenants.yaml`` ones. Why not every tenant's settings as the config's
    default: the default is part of every job's snapshot, which the daemon reloads every minute, so it would
    grow every job with the number of tenants (docs/performance.md, section 12). Build it with :meth:`for_accounts`.
    """

    credentials: dg.ResourceDependency[Mapping[str, SmartMovingCredentials]]
    settings: dg.ResourceDependency[Mapping[str, SmartMovingSettings]]
    accounts: dict[str, SmartMovingSettings] = Field(
        default_factory=dict,
        description=(
            "Tenant key -> the client's knobs for that tenant in this run, in place of its tenants.yaml settings "
            "(credentials are not here)"
        ),
    )

    @classmethod
    def for_accounts(cls, accounts: Mapping[str, SmartMovingAccount]) -> "SmartMovingResource":
        """The resource of these accounts: their credentials and settings bound; run config may tune the knobs."""
        return cls(
            credentials={key: account.credentials for key, account in accounts.items()},
            settings={key: account.settings for key, account in accounts.items()},
        )

    def account(self, tenant_key: str) -> SmartMovingAccount:
        """The tenant's own account: its bound credentials, with the knobs of this run's config."""
        try:
            credentials = self.credentials[tenant_key]
        except KeyError:
            raise dg.DagsterInvariantViolationError(
                f"no SmartMoving account for tenant {tenant_key!r} (accounts: {sorted(self.credentials)})"
            ) from None
        if not isinstance(credentials, SmartMovingCredentials):
            # Only code can bind credentials; anything else here is a wiring mistake, not something to run with.
            raise dg.DagsterInvariantViolationError(f"tenant {tenant_key!r}: SmartMoving credentials not bound in code")
        settings = self.accounts.get(tenant_key) or self.settings.get(tenant_key) or SmartMovingSettings()
        return SmartMovingAccount(
            **settings.model_dump(), base_url_env=credentials.base_url_env, api_key_env=credentials.api_key_env
        )
