"""Tenants and their branches: the one configuration file every other part derives from."""

from lgm_pipeline.tenants.config import (
    Branch,
    SmartMovingSettings,
    Tenant,
    TenantConfigError,
    load_tenants,
)

__all__ = ["Branch", "SmartMovingSettings", "Tenant", "TenantConfigError", "load_tenants"]
