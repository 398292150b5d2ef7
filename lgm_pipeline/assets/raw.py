"""Raw SmartMoving assets of one tenant, partitioned by service date.

The customers list is pulled once per date (never per branch); opportunity details at most once per
opportunity, and only when the list summary changed or the cached copy is older than allowed.
"""

import datetime as dt
import time
from collections import Counter
from typing import Any

import dagster as dg
import pandas as pd

from lgm_pipeline.assets.metadata import api_cost_metadata, attach_api_calls, per_branch, preview
from lgm_pipeline.assets.partitions import TenantPartitions
from lgm_pipeline.smartmoving.errors import (
    AuthenticationError,
    AuthorizationError,
    QuotaExhaustedError,
    SmartMovingError,
)
from lgm_pipeline.smartmoving.resource import SmartMovingResource
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.raw import (
    customers_frame,
    jobs_frame,
    opportunities_frame,
    opportunity_summaries,
)

IO_MANAGER_KEY = "tenant_io_manager"
OWNERS = ["team:data-engineering"]

# Transient upstream trouble is retried by the client first; this covers a whole step failing
# (e.g. the API down for minutes). Jitter keeps two tenants' retries from lining up.
API_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class OpportunityDetailsConfig(dg.Config):
    force_refresh: bool = False
    """Fetch every opportunity's details again, ignoring the cache."""
    detail_max_age_hours: float = 24.0
    """Cached details younger than this are reused while the list summary is unchanged. A day keeps a month of
    2-hour cycles (one full detail refresh a day, ~425 calls for LGM, plus the changed ones) inside the Basic
    tier's 20,000 calls; changes the list summary does not show (an address) wait at most this long."""


def smartmoving_resource_key(tenant: Tenant) -> str:
    return f"smartmoving_{tenant.key}"


#: Failure metadata telling ``lgm sync`` not to pull the cycle's other dates (they would fail the same way).
STOP_CYCLE = "lgm/stop_cycle"


def _fail_fast(error: SmartMovingError) -> dg.Failure:
    """A bad key or an exhausted quota will not heal by retrying the step: fail once, clearly."""
    return dg.Failure(description=str(error), allow_retries=False, metadata={STOP_CYCLE: True})


def _call_api(func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except (AuthenticationError, AuthorizationError, QuotaExhaustedError) as error:
        raise _fail_fast(error) from None


def build_raw_assets(tenant: Tenant, partitions: TenantPartitions) -> list[dg.AssetsDefinition]:
    key_prefix = [tenant.key]
    sm_key = smartmoving_resource_key(tenant)
    group = f"{tenant.key}_raw"
    pool = f"smartmoving_{tenant.key}"
    common: dict[str, Any] = {
        "key_prefix": key_prefix,
        "group_name": group,
        "partitions_def": partitions.service_date,
        "io_manager_key": IO_MANAGER_KEY,
        "owners": OWNERS,
        "metadata": {"partition_expr": "service_date"},
    }

    @dg.asset(
        name="smartmoving_customers",
        description=(
            f"{tenant.name}: SmartMoving customers with a job on the service date (all pages, opportunity "
            "summaries included), payload kept verbatim. Table raw_customers."
        ),
        kinds={"smartmoving", "pandas", "postgres"},
        required_resource_keys={sm_key},
        pool=pool,
        retry_policy=API_RETRY_POLICY,
        **common,
    )
    def smartmoving_customers(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
        service_date = dt.date.fromisoformat(context.partition_key)
        resource: SmartMovingResource = getattr(context.resources, sm_key)
        started = time.monotonic()
        with resource.get_client(logger=context.log) as client:
            customers = _call_api(client.list_customers, service_date, service_date)
            calls = Counter(client.calls)
        frame = customers_frame(customers, service_date, dt.datetime.now(dt.UTC), context.run.run_id)
        opportunities = sum(len(c.get("opportunities") or []) for c in customers)
        return dg.Output(
            attach_api_calls(frame, calls),
            metadata={
                "rows": dg.MetadataValue.int(len(frame)),
                "opportunities_listed": dg.MetadataValue.int(opportunities),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                **api_cost_metadata(tenant, calls),
                "preview": preview(frame, ["customer_id", "name"]),
            },
        )

    @dg.asset(
        name="smartmoving_opportunities",
        description=(
            f"{tenant.name}: opportunity details (branch, status, totals, jobs with addresses and charges) for "
            "every opportunity listed on the service date. Details are reused from the previous pull while the "
            "list summary is unchanged and younger than detail_max_age_hours. Table raw_opportunities."
        ),
        kinds={"smartmoving", "pandas", "postgres"},
        required_resource_keys={sm_key, "postgres"},
        pool=pool,
        retry_policy=API_RETRY_POLICY,
        **common,
    )
    def smartmoving_opportunities(
        context: dg.AssetExecutionContext, config: OpportunityDetailsConfig, smartmoving_customers: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        service_date = dt.date.fromisoformat(context.partition_key)
        resource: SmartMovingResource = getattr(context.resources, sm_key)
        postgres: PostgresResource = context.resources.postgres
        started = time.monotonic()
        summaries = opportunity_summaries(smartmoving_customers)
        now = dt.datetime.now(dt.UTC)
        oldest_reusable = now - dt.timedelta(hours=config.detail_max_age_hours)

        details: dict[str, dict[str, Any]] = {}
        fetched_at: dict[str, dt.datetime] = {}
        if not config.force_refresh and summaries:
            for oid, cached in postgres.cached_opportunity_details(tenant, list(summaries)).items():
                if cached.summary_hash == summaries[oid].summary_hash and cached.fetched_at >= oldest_reusable:
                    details[oid] = cached.payload
                    fetched_at[oid] = cached.fetched_at
        reused = len(details)
        to_fetch = [oid for oid in summaries if oid not in details]
        with resource.get_client(logger=context.log) as client:
            fetched = _call_api(client.get_opportunities, to_fetch)
            calls = Counter(client.calls)
        # Deleted in SmartMoving between the list and the details: its journeys leave with the next merge.
        vanished = [oid for oid in to_fetch if oid not in fetched]
        for oid, payload in fetched.items():
            details[oid] = payload
            fetched_at[oid] = now
        if vanished:
            context.log.warning(f"{len(vanished)} listed opportunities no longer exist in SmartMoving: {vanished[:5]}")

        frame = opportunities_frame(details, summaries, fetched_at, service_date, context.run.run_id)
        branches = pd.Series([(p.get("branch") or {}).get("name") for p in frame["payload"]], dtype=object)
        return dg.Output(
            attach_api_calls(frame, calls),
            metadata={
                "rows": dg.MetadataValue.int(len(frame)),
                "details_fetched": dg.MetadataValue.int(len(fetched)),
                "details_reused": dg.MetadataValue.int(reused),
                "vanished": dg.MetadataValue.int(len(vanished)),
                "rows_per_branch": per_branch(branches),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                **api_cost_metadata(tenant, calls),
                "preview": preview(frame, ["opportunity_id", "customer_id", "summary_hash"]),
            },
        )

    @dg.asset(
        name="smartmoving_jobs",
        description=(
            f"{tenant.name}: jobs flattened from the opportunity details, one row per job dated on the service "
            "date (addresses, type, confirmed, estimated charges). No API call. Table raw_jobs."
        ),
        kinds={"pandas", "postgres"},
        **common,
    )
    def smartmoving_jobs(
        context: dg.AssetExecutionContext, smartmoving_opportunities: pd.DataFrame
    ) -> dg.Output[pd.DataFrame]:
        service_date = dt.date.fromisoformat(context.partition_key)
        frame = jobs_frame(smartmoving_opportunities, service_date, context.run.run_id)
        return dg.Output(
            frame,
            metadata={
                "rows": dg.MetadataValue.int(len(frame)),
                "preview": preview(frame, ["job_number", "job_type", "confirmed", "opportunity_id"]),
            },
        )

    return [smartmoving_customers, smartmoving_opportunities, smartmoving_jobs]
