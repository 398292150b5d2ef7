"""Raw SmartMoving assets of one tenant, partitioned by service date.

A run covers a range of dates in one go (``BackfillPolicy.single_run``): the customers list is
pulled once for the whole range (one date-range query, never per date or branch) and every job is
filed under its own ``jobDate``. Opportunity details are fetched at most once per opportunity, and
only when the list summary changed or the cached copy is older than allowed.
"""

import datetime as dt
import time
from collections import Counter
from typing import Any

import dagster as dg
import pandas as pd

from lgm_pipeline.assets.metadata import api_cost_metadata, cycles_per_day, per_branch, preview
from lgm_pipeline.assets.partitions import TenantPartitions
from lgm_pipeline.naming import CONFIGURATION_ERROR, IO_MANAGER_KEY, OWNERS, STOP_CYCLE
from lgm_pipeline.quality.rules import MAX_QUARANTINE_SHARE
from lgm_pipeline.quality.unmapped_branches import UnmappedBranches, unmapped_branches
from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.enums import OpportunityStatus
from lgm_pipeline.smartmoving.errors import (
    AuthenticationError,
    ConfigurationError,
    EndpointNotFoundError,
    EndpointUnavailableError,
    MissingSettingError,
    QuotaExhaustedError,
    SmartMovingError,
    UnusableBaseURLError,
)
from lgm_pipeline.smartmoving.resource import SmartMovingResource
from lgm_pipeline.storage.io_manager import table_metadata, with_pulled_records
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.storage.write import PulledRecords
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.journeys import job_branches
from lgm_pipeline.transform.raw import (
    OpportunitySummary,
    PullAccount,
    branches_account,
    branches_frame,
    customers_account,
    customers_frame,
    departures_frame,
    jobs_account,
    jobs_frame,
    jobs_on,
    listed_jobs,
    listed_opportunities_account,
    opportunities_frame,
    opportunity_dates,
    opportunity_summaries,
    read_status,
    unreadable_frame,
)

# Transient upstream trouble is retried by the client first; this covers a whole step failing
# (e.g. the API down for minutes). Jitter keeps two tenants' retries from lining up.
API_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class OpportunityDetailsConfig(dg.Config):
    force_refresh: bool = False
    """Fetch every opportunity's details again, ignoring the cache."""
    refetch_on_status_change: bool = True
    """Fetch details again when only the listed status changed. The catch-up turns this off: the status is taken
    from the customers list, and details are fetched only when jobs changed or work was newly Completed (its
    actual charges)."""
    detail_max_age_hours: float = 36.0
    """Cached details younger than this are reused while the list summary is unchanged; changes the summary does not
    show (an address) wait at most this long. 36 h keeps LGM's month (2-hour cycles with a full detail refresh every
    36 h, ~283 calls a day, plus the changed details and the daily catch-up) near 16,800 calls, inside the Basic
    tier's 20,000; 24 h would reach ~21,000 with the catch-up (docs/performance.md)."""


DEFAULT_BASE_URL_ENV = "SMARTMOVING_BASE_URL"
DEFAULT_API_KEY_ENV = "SMARTMOVING_API_KEY"
EXAMPLE_BASE_URL = "https://api-public.smartmoving.com/v1"


def _explain(error: SmartMovingError, url_env: str, key_env: str) -> str:
    """The client's message, plus the setting to fix when the settings are at fault."""
    text = str(error).rstrip(".")
    if isinstance(error, EndpointNotFoundError):
        return f"{text}: check {url_env} ({error.base_url}): it should end in /v1, e.g. {EXAMPLE_BASE_URL}"
    if isinstance(error, UnusableBaseURLError):
        return f"{text}: check {url_env}: it should look like {EXAMPLE_BASE_URL}"
    if isinstance(error, AuthenticationError):
        return f"{text}: check {key_env}"
    return text


def api_failure(error: SmartMovingError, calls: Counter[str], tenant: Tenant) -> dg.Failure:
    """The step's failure, with the calls it spent (a failed attempt's calls count against the quota too).

    Wrong settings, a rejected key or an exhausted quota will not heal by retrying the step: they fail
    once, clearly, and stop the cycle. Anything else (5xx, 429, timeouts after the client's own retries)
    stays retryable by the step's RetryPolicy.
    """
    url_env, key_env = tenant.smartmoving.base_url_env, tenant.smartmoving.api_key_env
    # An endpoint out of the key's reach (EndpointUnavailableError) will not heal either, but it is no setting's
    # fault: the cycle stops pulling, without a configuration error, and what was written stands.
    final = isinstance(error, ConfigurationError | QuotaExhaustedError | EndpointUnavailableError)
    metadata: dict[str, Any] = {
        "api_calls": dg.MetadataValue.int(sum(calls.values())),
        "api_calls_by_endpoint": dg.MetadataValue.json(dict(sorted(calls.items()))),
    }
    if final:
        metadata[STOP_CYCLE] = True
    if isinstance(error, ConfigurationError):
        metadata[CONFIGURATION_ERROR] = True
    return dg.Failure(description=_explain(error, url_env, key_env), allow_retries=not final, metadata=metadata)


#: How far back the details of earlier pulls are searched for a later day of a multi-day move.
MULTI_DAY_LOOKBACK = dt.timedelta(days=31)


def runs_per_day(tenant: Tenant, dates: list[dt.date]) -> int:
    """How often a run like this one happens: the window every cycle, a catch-up or a backfill once."""
    return cycles_per_day() if tenant.today() in dates else 1


def began_before(opportunity: dict[str, Any], dates: list[dt.date]) -> bool:
    """Its details name work on one of ``dates`` and its first day is before them (a multi-day move)."""
    days = opportunity_dates(opportunity)
    return bool(days & set(dates)) and min(days) < dates[0]


def same_but_status(summary: OpportunitySummary, cached: dict[str, Any]) -> bool:
    """The listed jobs are the cached ones and no newly completed work awaits its actual charges."""
    newly_completed = summary.status == OpportunityStatus.COMPLETED and read_status(cached.get("status")) not in (
        OpportunityStatus.COMPLETED,
        OpportunityStatus.CLOSED,
    )
    return not newly_completed and summary.jobs == listed_jobs(cached.get("jobs"), "jobDate")


def api_asset(tenant: Tenant, asset: str) -> dict[str, Any]:
    """What every asset calling SmartMoving shares: storage, the tenant's API pool and tag, retries."""
    return {
        "metadata": table_metadata(tenant, asset, definition=True),
        "io_manager_key": IO_MANAGER_KEY,
        "kinds": {"smartmoving", "pandas", "postgres"},
        "owners": OWNERS,
        "tags": tenant.names.tags,
        "pool": tenant.names.api_pool,
        "retry_policy": API_RETRY_POLICY,
    }


def service_dates(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The dates of the run: one partition, or a range launched as a single run."""
    return sorted(dt.date.fromisoformat(key) for key in context.partition_keys)


def call_api(func: Any, *args: Any, tenant: Tenant) -> Any:
    """``func(*args)`` (a SmartMoving client's method); a SmartMoving error becomes the step's ``dg.Failure``."""
    client = getattr(func, "__self__", None)
    before = Counter(client.calls) if isinstance(client, SmartMovingClient) else Counter()
    try:
        return func(*args)
    except SmartMovingError as error:
        spent = Counter(client.calls) - before if isinstance(client, SmartMovingClient) else Counter()
        raise api_failure(error, spent, tenant) from None


def open_client(
    smartmoving: SmartMovingResource, tenant: Tenant, context: dg.AssetExecutionContext
) -> SmartMovingClient:
    """The tenant's client; an unset variable or a base URL httpx cannot even parse fails the step at once,
    like a 404 (no retry, the cycle stops), and only this tenant's step. A step of a run being canceled
    (Ctrl-C, a terminated run) fails at once, without a call.

    Nothing else of the run is read to decide whether to call: a step after an error that stops the cycle
    (wrong settings, a rejected key, an exhausted quota) does not run at all, because it depends on the step
    that failed (the leads on ``smartmoving_jobs``, the last step of the pull), and Dagster skips it.
    """
    if _run_canceling(context):
        raise dg.Failure(description="the run is being canceled: no call made", allow_retries=False)
    try:
        client = smartmoving.account(tenant.key).get_client(logger=context.log)
    except (UnusableBaseURLError, MissingSettingError) as error:
        raise api_failure(error, Counter(), tenant) from None
    client.note_answered(_answered_in_run(context))
    return client


def _answered_in_run(context: dg.AssetExecutionContext) -> set[str]:
    """Endpoints that answered in earlier steps of this run (each materialization records its calls): with them,
    a 404/403 on this step's endpoint is that endpoint's (the leads after the pull), not the base URL's or key's."""
    answered: set[str] = set()
    for record in context.instance.all_logs(context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        entry = materialization.metadata.get("api_calls_by_endpoint") if materialization else None
        calls = getattr(entry, "value", None)
        if isinstance(calls, dict):
            answered.update(endpoint for endpoint, count in calls.items() if count)
    return answered


def _run_canceling(context: dg.AssetExecutionContext) -> bool:
    run = context.instance.get_run_by_id(context.run.run_id)
    return run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


#: On every raw asset: each record served is stored, set aside for a stated reason, or quarantined.
RECORDS_READ_CHECK = "records_read"
RECORDS_READ_DESCRIPTION = (
    "[per pull] Every record SmartMoving served is stored, set aside for a stated reason (a duplicate across "
    "pages, a job dated outside the pulled dates) or kept raw in unreadable_records with a reason naming the "
    "field and value. ERROR: the counts do not add up (a record was lost); WARN: records quarantined."
)


def records_read_spec(key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(RECORDS_READ_CHECK, asset=key, description=RECORDS_READ_DESCRIPTION)


def records_read_check(account: PullAccount, key: dg.AssetKey | None = None) -> dg.AssetCheckResult:
    """ERROR when served != stored + set aside + quarantined; WARN naming the first reasons when any
    record was quarantined."""
    quarantined = len(account.unreadable)
    lost = account.unaccounted
    if lost:
        description = f"{account.summary()}: {lost:+d} record(s) unaccounted for"
    elif quarantined:
        description = f"{account.summary()}. First: " + "; ".join(account.reasons(3))
    else:
        description = account.summary()
    return dg.AssetCheckResult(
        check_name=RECORDS_READ_CHECK,
        asset_key=key,
        passed=not lost and not quarantined,
        severity=dg.AssetCheckSeverity.ERROR if lost else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "served": account.served,
            "stored": account.stored,
            "quarantined": quarantined,
            "set_aside": dg.MetadataValue.json(account.set_aside),
            "unaccounted": lost,
            "reasons": dg.MetadataValue.json(account.reasons(20)),
        },
    )


def account_metadata(account: PullAccount) -> dict[str, Any]:
    return {
        "served": dg.MetadataValue.int(account.served),
        "stored": dg.MetadataValue.int(account.stored),
        "quarantined": dg.MetadataValue.int(len(account.unreadable)),
    }


def attach_account(frame: pd.DataFrame, account: PullAccount, fetched_at: dt.datetime, run_id: str) -> pd.DataFrame:
    """The frame, carrying its pull's served count and unreadable records to the IO manager's write."""
    rows = unreadable_frame(account.unreadable, fetched_at, run_id).drop(columns=["record_kind", "run_id"])
    return with_pulled_records(frame, PulledRecords(account.kind, account.served, rows.to_dict("records")))


#: Found once per date on ``smartmoving_jobs``: an unmapped branch's jobs belong to no branch partition.
BRANCH_MAPPING_CHECK = "branch_mapping"


def build_raw_assets(tenant: Tenant, partitions: TenantPartitions) -> list[dg.AssetsDefinition]:
    names = tenant.names
    common: dict[str, Any] = {
        "key_prefix": [names.key],
        "group_name": names.group("raw"),
        "partitions_def": partitions.service_date,
        # The window (and the daily catch-up) is one run: one date-range list call for all its dates.
        "backfill_policy": dg.BackfillPolicy.single_run(),
    }

    @dg.asset(
        name="smartmoving_customers",
        description=(
            f"{tenant.name}: SmartMoving customers with a job on the service date (all pages, opportunity "
            "summaries included), payload kept verbatim. Table raw_customers."
        ),
        check_specs=[records_read_spec(names.asset_key("smartmoving_customers"))],
        **api_asset(tenant, "smartmoving_customers"),
        **common,
    )
    def smartmoving_customers(
        context: dg.AssetExecutionContext, smartmoving: SmartMovingResource, postgres: PostgresResource
    ) -> Any:
        postgres.ensure_tenant(tenant)  # a schema behind the code fails the pull here, before its first call
        dates = service_dates(context)
        started = time.monotonic()
        with open_client(smartmoving, tenant, context) as client:
            customers = call_api(client.list_customers, dates[0], dates[-1], tenant=tenant)
            calls = Counter(client.calls)
            duplicates = client.duplicates["customers"]
        fetched_at = dt.datetime.now(dt.UTC)
        frame = customers_frame(customers, dates, fetched_at, context.run.run_id)
        account = customers_account(customers, frame, dates, duplicates)
        opportunities = sum(len(c.get("opportunities") or []) for c in customers if isinstance(c, dict))
        yield dg.Output(
            attach_account(frame, account, fetched_at, context.run.run_id),
            metadata={
                **account_metadata(account),
                "rows": dg.MetadataValue.int(len(frame)),
                "opportunities_listed": dg.MetadataValue.int(opportunities),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                "dates": dg.MetadataValue.json([d.isoformat() for d in dates]),
                **api_cost_metadata(tenant, calls, runs_per_day(tenant, dates)),
                "preview": preview(frame, ["service_date", "customer_id", "name"]),
            },
        )
        yield records_read_check(account)

    opportunities_asset = api_asset(tenant, "smartmoving_opportunities")

    def stored_out(asset: str, description: str) -> dg.AssetOut:
        return dg.AssetOut(
            key=names.asset_key(asset),
            description=description,
            group_name=common["group_name"],
            io_manager_key=IO_MANAGER_KEY,
            metadata=table_metadata(tenant, asset, definition=True),
            kinds=opportunities_asset["kinds"],
            owners=OWNERS,
            tags=names.tags,
        )

    # One step, two tables: the details, and why journeys of the pulled dates leave them (found from the same
    # details and calls). Declared as two assets so the lineage shows what the step writes.
    @dg.multi_asset(
        name=names.op("smartmoving_opportunities"),
        outs={
            "smartmoving_opportunities": stored_out(
                "smartmoving_opportunities",
                f"{tenant.name}: opportunity details (branch, status, totals, jobs with addresses and charges) for "
                "every opportunity listed on the service date. Details are reused from the previous pull while the "
                "list summary is unchanged and younger than detail_max_age_hours. Table raw_opportunities.",
            ),
            "smartmoving_job_departures": stored_out(
                "smartmoving_job_departures",
                f"{tenant.name}: jobs that had a journey on a pulled date and that the pull files on none of its "
                "dates, with why (rescheduled and where, cancelled, deleted), from their opportunity's details. The "
                "journeys merge copies the reason into the delete's audit row. Table raw_job_departures.",
            ),
        },
        ins={"smartmoving_customers": dg.AssetIn(names.asset_key("smartmoving_customers"))},
        check_specs=[records_read_spec(names.asset_key("smartmoving_opportunities"))],
        partitions_def=common["partitions_def"],
        backfill_policy=common["backfill_policy"],
        pool=opportunities_asset["pool"],
        retry_policy=opportunities_asset["retry_policy"],
    )
    def smartmoving_opportunities(
        context: dg.AssetExecutionContext,
        config: OpportunityDetailsConfig,
        smartmoving: SmartMovingResource,
        postgres: PostgresResource,
        smartmoving_customers: pd.DataFrame,
    ) -> Any:
        dates = service_dates(context)
        started = time.monotonic()
        summaries = opportunity_summaries(smartmoving_customers)
        now = dt.datetime.now(dt.UTC)
        oldest_reusable = now - dt.timedelta(hours=config.detail_max_age_hours)

        # Later days of multi-day moves the list did not return (see opportunity_ids_with_jobs_on): only
        # moves that began before these dates, as their latest details show. Anything else the list
        # leaves out has left these dates (moved, deleted): the list is the authority.
        candidates = postgres.opportunity_ids_with_jobs_on(tenant, dates, dates[0] - MULTI_DAY_LOOKBACK) - set(
            summaries
        )
        cached = postgres.cached_opportunity_details(tenant, [*summaries, *candidates])
        carried = {oid for oid in candidates & set(cached) if began_before(cached[oid].payload, dates)}
        for oid in carried:
            # Its stored hash: the day the list shows it again, an unchanged opportunity is no refetch.
            summaries[oid] = OpportunitySummary(oid, cached[oid].customer_id, cached[oid].summary_hash)

        details: dict[str, dict[str, Any]] = {}
        fetched_at: dict[str, dt.datetime] = {}
        if not config.force_refresh:
            for oid, detail in cached.items():
                if oid not in summaries:
                    continue
                # A carried opportunity is refetched every pull: the list no longer shows it, so nothing
                # vouches for its stored details, and deleted or cancelled (or, read as "first day in
                # range", anything) its later days would stay booked on the board until they aged out.
                unchanged = oid not in carried and (
                    detail.summary_hash == summaries[oid].summary_hash
                    or (not config.refetch_on_status_change and same_but_status(summaries[oid], detail.payload))
                )
                if unchanged and detail.fetched_at >= oldest_reusable:
                    details[oid] = detail.payload
                    fetched_at[oid] = detail.fetched_at
        reused = len(details)
        to_fetch = [oid for oid in summaries if oid not in details]
        window = set(dates)
        with open_client(smartmoving, tenant, context) as client:
            fetched = call_api(client.get_opportunities, to_fetch, tenant=tenant)
            # Deleted in SmartMoving between the list and the details: its journeys leave with the next merge.
            vanished = [oid for oid in to_fetch if oid not in fetched]
            for oid, payload in fetched.items():
                details[oid] = payload
                fetched_at[oid] = now
            # Journeys of these dates whose job this pull files on none of them leave with the next
            # merge; their opportunities' details say why. Only an opportunity the list no longer shows
            # costs a call (at most once per pull; none once its journeys are gone).
            filed = {str(job["id"]) for payload in details.values() for job in jobs_on(payload, window)}
            leaving = [job for job in postgres.journey_jobs_on(tenant, dates) if job.job_id not in filed]
            unexplained = sorted({job.opportunity_id for job in leaving} - set(details) - set(vanished))
            explaining = call_api(client.get_opportunities, unexplained, tenant=tenant)
            calls = Counter(client.calls)
        if vanished:
            context.log.warning(f"{len(vanished)} listed opportunities no longer exist in SmartMoving: {vanished[:5]}")
        departures = departures_frame(leaving, {**details, **explaining}, fetched_at, window, now, context.run.run_id)
        # A carried opportunity whose multi-day job moved off these dates no longer belongs here.
        for oid in carried & set(details):
            if not opportunity_dates(details[oid]) & window:
                del details[oid]

        frame = opportunities_frame(details, summaries, fetched_at, dates, context.run.run_id)
        account = listed_opportunities_account(smartmoving_customers, summaries)
        # Listed but not stored: SmartMoving no longer knows it (a 400 between the list and the details).
        account.set_aside = {"gone (400)": len(set(vanished) & (set(summaries) - carried))}
        account.stored = len((set(summaries) - carried) & set(frame["opportunity_id"]))
        branches = pd.Series([(p.get("branch") or {}).get("name") for p in frame["payload"]], dtype=object)
        # Each pulled date's departures are replaced, none left clearing the date's (the IO manager's scope).
        yield dg.Output(
            departures,
            output_name="smartmoving_job_departures",
            metadata={"rows": dg.MetadataValue.int(len(departures))},
        )
        yield dg.Output(
            attach_account(frame, account, now, context.run.run_id),
            output_name="smartmoving_opportunities",
            metadata={
                **account_metadata(account),
                "rows": dg.MetadataValue.int(len(frame)),
                "details_fetched": dg.MetadataValue.int(len(fetched)),
                "details_reused": dg.MetadataValue.int(reused),
                "vanished": dg.MetadataValue.int(len(vanished)),
                "carried_multi_day": dg.MetadataValue.int(len(carried & set(details))),
                # Journeys leaving these dates: why (raw_job_departures), and the calls that told.
                "departures": dg.MetadataValue.json(
                    {str(reason): int(n) for reason, n in departures["reason"].value_counts().sort_index().items()}
                ),
                "departure_details_fetched": dg.MetadataValue.int(len(unexplained)),
                "rows_per_branch": per_branch(branches),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                **api_cost_metadata(tenant, calls, runs_per_day(tenant, dates)),
                "preview": preview(frame, ["opportunity_id", "customer_id", "summary_hash"]),
            },
        )
        yield records_read_check(account)

    jobs_key = names.asset_key("smartmoving_jobs")

    @dg.asset(
        name="smartmoving_jobs",
        description=(
            f"{tenant.name}: jobs flattened from the opportunity details, one row per job under its own jobDate "
            "(addresses, type, confirmed, estimated charges); a job without a date is no journey (view "
            "unscheduled_jobs). No API call. Table raw_jobs."
        ),
        io_manager_key=IO_MANAGER_KEY,
        kinds={"pandas", "postgres"},
        owners=OWNERS,
        tags=names.tags,
        metadata=table_metadata(tenant, "smartmoving_jobs", definition=True),
        check_specs=[
            records_read_spec(jobs_key),
            dg.AssetCheckSpec(
                BRANCH_MAPPING_CHECK,
                asset=jobs_key,
                description=(
                    "[blocking, per date] Booked jobs name a SmartMoving branch the tenants file maps; the others "
                    "are quarantined (journeys_quarantine, no branch) and named here, once per date."
                ),
            ),
        ],
        **common,
    )
    def smartmoving_jobs(
        context: dg.AssetExecutionContext,
        smartmoving_customers: pd.DataFrame,
        smartmoving_opportunities: pd.DataFrame,
    ) -> Any:
        dates = service_dates(context)
        frame = pd.concat(
            [jobs_frame(smartmoving_opportunities, day, context.run.run_id) for day in dates],
            ignore_index=True,
        )
        account = jobs_account(smartmoving_opportunities, frame, dates)
        yield dg.Output(
            attach_account(frame, account, dt.datetime.now(dt.UTC), context.run.run_id),
            metadata={
                **account_metadata(account),
                "rows": dg.MetadataValue.int(len(frame)),
                "preview": preview(frame, ["job_number", "job_type", "confirmed", "opportunity_id"]),
            },
        )
        yield records_read_check(account)
        branches = job_branches(tenant, smartmoving_customers, smartmoving_opportunities, frame)
        yield branch_mapping_check(unmapped_branches(branches), dates)

    return [smartmoving_customers, smartmoving_opportunities, smartmoving_jobs]


def branch_mapping_check(found: UnmappedBranches, dates: list[dt.date]) -> dg.AssetCheckResult:
    """One result for the run's dates: WARN naming the unmapped branches, ERROR past the quarantine share."""
    share = found.worst_share()
    label = dates[0].isoformat() if len(dates) == 1 else f"{dates[0]}..{dates[-1]}"
    return dg.AssetCheckResult(
        check_name=BRANCH_MAPPING_CHECK,
        passed=not found.jobs,
        severity=dg.AssetCheckSeverity.ERROR if share > MAX_QUARANTINE_SHARE else dg.AssetCheckSeverity.WARN,
        description=(
            f"{found.jobs} booked job(s) of SmartMoving branch(es) not in the tenants file, quarantined: "
            f"{', '.join(found.names())}. Map them in tenants.yaml (then `lgm sync --date`) or ignore them there."
            if found.jobs
            else None
        ),
        metadata={
            "partition": label,
            "unmapped_jobs": found.jobs,
            "by_date": dg.MetadataValue.json(found.by_date),
            "worst_date_share": round(share, 4),
            "action": "quarantined in journeys_quarantine (no branch)",
            "examples": dg.MetadataValue.json(found.examples),
        },
    )


def build_branches_asset(tenant: Tenant) -> dg.AssetsDefinition:
    @dg.asset(
        key=tenant.names.asset_key("smartmoving_branches"),
        description=(
            f"{tenant.name}: SmartMoving's branches with their dispatch address (one call), for the board view. "
            "Table raw_branches."
        ),
        group_name=tenant.names.group("reference"),
        check_specs=[records_read_spec(tenant.names.asset_key("smartmoving_branches"))],
        **api_asset(tenant, "smartmoving_branches"),
    )
    def smartmoving_branches(
        context: dg.AssetExecutionContext, smartmoving: SmartMovingResource, postgres: PostgresResource
    ) -> Any:
        postgres.ensure_tenant(tenant)  # as the customers: no call for a table that cannot take the rows
        with open_client(smartmoving, tenant, context) as client:
            branches = call_api(client.list_branches, tenant=tenant)
            calls = Counter(client.calls)
        fetched_at = dt.datetime.now(dt.UTC)
        frame = branches_frame(branches, fetched_at, context.run.run_id)
        account = branches_account(branches, frame, fetched_at.date())
        mapped = set(tenant.branch_by_smartmoving_name())
        yield dg.Output(
            attach_account(frame, account, fetched_at, context.run.run_id),
            metadata={
                **account_metadata(account),
                "rows": dg.MetadataValue.int(len(frame)),
                "not_in_tenants_file": dg.MetadataValue.json(sorted(str(n) for n in frame["name"] if n not in mapped)),
                **api_cost_metadata(tenant, calls),
            },
        )
        yield records_read_check(account)

    return smartmoving_branches
