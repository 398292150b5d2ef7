"""Near-real-time updates: the webhook inbox served by targeted refresh runs, then the journeys they touched.

Why a sensor, not declarative automation: the inbox is a table outside Dagster, and a sensor is how
Dagster reacts to state outside it. An automation condition would need an observable asset observed
by runs of its own every few seconds; the sensor reads one index per tenant per tick instead. What the
refresh changed is a set of (date, branch) partitions known only after its calls; the sensor requests
exactly those journeys partitions, which ``journeys``' automation (rebuilding after raw pulls of whole
dates) cannot express.

One sensor for the code location (a tenant group), as for the automation: per tick it

1. requests the journeys partitions of each refresh run that succeeded since its cursor (one run per
   partition, run key = refresh run + partition, so a tick evaluated twice launches nothing twice);
2. requests a refresh run (the tenant's SmartMoving job narrowed to ``webhook_updates``, tagged
   :data:`REFRESH_RUN_TAGS`) for each tenant with pending events and no refresh queued or running; the
   events arriving meanwhile wait and are served together (a burst on one opportunity is one call).

A refresh runs in the tenant's API pool, so it shares the scheduled cycle's rate budget and never
runs beside its pulls. After a failed refresh, the tenant's next one waits :data:`RETRY_AFTER`.
"""

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import dagster as dg

from lgm_pipeline.assets.automation import WORK_TAG, journeys_job_name, raw_job_name
from lgm_pipeline.assets.metadata import api_cost_metadata
from lgm_pipeline.assets.raw import STOP_CYCLE, call_api, open_client
from lgm_pipeline.naming import OWNERS, TENANT_TAG
from lgm_pipeline.settings import webhook_interval_s
from lgm_pipeline.smartmoving.resource import SmartMovingResource
from lgm_pipeline.storage.io_manager import column_schema
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.storage.tables import webhook_events
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.webhooks.processing import (
    MAX_REFRESH_ATTEMPTS,
    REFRESH_ASSET,
    apply_refresh,
    count_attempt,
    inbox_backlogs,
    mark_failed,
    pending_events,
    refreshed_partitions,
)

#: The code location's one webhook sensor.
WEBHOOK_SENSOR = "webhook_inbox"
#: After a failed refresh (SmartMoving down, say) the tenant's next one waits this long; the events stay pending.
RETRY_AFTER = dt.timedelta(seconds=60)
#: Tags of the runs the webhook sensor launches: ahead of queued cycle pulls, like the automation's.
WEBHOOK_RUN_TAGS = {"lgm/launched_by": WEBHOOK_SENSOR, "dagster/priority": "2"}
#: On every refresh run, however launched (the sensor's carry it, the asset adds it to the others with its
#: tenant's tag): the sensor finds all tenants' refresh runs in one query.
REFRESH_RUN_TAGS = {WORK_TAG: "webhook_refresh"}
#: A refresh run is in the run storage with its final update time well within this of ending.
SETTLED = dt.timedelta(seconds=60)
#: On a journeys run the sensor launches: the refresh run whose changes it rebuilds.
REFRESH_RUN_TAG = "lgm/webhook_refresh_run"
WEBHOOK_ASSET = REFRESH_ASSET

#: A step failing as a whole (the API down for minutes) is retried once soon; after that the events wait for
#: the sensor's next refresh (RETRY_AFTER) and, at worst, the 2-hour cycle reconciles them.
REFRESH_RETRY_POLICY = dg.RetryPolicy(max_retries=1, delay=10)


def takes_webhooks(tenant: Tenant) -> bool:
    return tenant.smartmoving.webhook_token_env is not None


def build_webhook_refresh_asset(tenant: Tenant) -> dg.AssetsDefinition:
    names = tenant.names

    @dg.asset(
        key=names.asset_key(WEBHOOK_ASSET),
        group_name=names.group("webhooks"),
        description=(
            f"{tenant.name}: the opportunities SmartMoving's webhooks named, refreshed: one details call per "
            "opportunity however many events name it, its raw rows rewritten on every date it has (and had) work "
            "on, its events marked done in webhook_events with this run's id and the journeys partitions to rebuild."
        ),
        kinds={"smartmoving", "postgres"},
        metadata={"dagster/table_name": dg.MetadataValue.text(f"{tenant.schema}.{webhook_events.name}")},
        owners=OWNERS,
        tags=names.tags,
        pool=names.api_pool,
        retry_policy=REFRESH_RETRY_POLICY,
    )
    def webhook_updates(
        context: dg.AssetExecutionContext, smartmoving: SmartMovingResource, postgres: PostgresResource
    ) -> dg.MaterializeResult:
        started_at = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        run_tags = {**REFRESH_RUN_TAGS, **names.tags}
        if any(context.run.tags.get(k) != v for k, v in run_tags.items()):  # launched from the UI or by hand
            context.instance.add_run_tags(context.run.run_id, run_tags)
        engine = postgres.ensure_tenant(tenant)
        events = pending_events(engine, tenant)
        exhausted = [e for e in events if e.attempts >= MAX_REFRESH_ATTEMPTS]
        if exhausted:
            reason = f"{MAX_REFRESH_ATTEMPTS} refreshes failed to serve it: left to the 2-hour cycle"
            mark_failed(engine, tenant, exhausted, reason, context.run.run_id)
            context.log.warning(f"{len(exhausted)} event(s) settled failed after {MAX_REFRESH_ATTEMPTS} refreshes")
        events = [e for e in events if e.attempts < MAX_REFRESH_ATTEMPTS]
        count_attempt(engine, tenant, events)
        opportunities = sorted({e.opportunity_id for e in events})
        calls: Counter[str] = Counter()
        details: dict[str, dict[str, Any]] = {}
        if opportunities:
            try:
                with open_client(smartmoving, tenant, context) as client:
                    details = call_api(client.get_opportunities, opportunities, tenant=tenant)
                    calls = Counter(client.calls)
            except dg.Failure as failure:
                if failure.metadata.get(STOP_CYCLE):
                    # Wrong settings, a rejected key, an exhausted quota: trying again cannot serve these events.
                    # They are settled as failed, with why; the 2-hour cycle reconciles what they announced.
                    mark_failed(engine, tenant, events, failure.description or "refresh failed", context.run.run_id)
                raise
        outcome = apply_refresh(
            engine, tenant, events, details, calls=calls, started_at=started_at, run_id=context.run.run_id
        )
        kinds = Counter(e.event_type or "(none)" for e in events)
        context.log.info(
            f"{outcome.events_done} event(s) on {len(opportunities)} opportunit(ies): "
            f"{len(outcome.partitions)} journeys partition(s) to rebuild, {len(outcome.gone)} gone"
        )
        return dg.MaterializeResult(
            metadata={
                "events_served": dg.MetadataValue.int(outcome.events_done),
                "event_types": dg.MetadataValue.json(dict(sorted(kinds.items()))),
                "event_ids": dg.MetadataValue.json([e.event_id for e in events[:50]]),
                "opportunities": dg.MetadataValue.int(len(opportunities)),
                "opportunities_gone": dg.MetadataValue.json(sorted(outcome.gone)),
                "journeys_partitions": dg.MetadataValue.json(sorted(outcome.partitions)),
                "raw_rows_written": dg.MetadataValue.int(outcome.raw_rows),
                "jobs_unreadable": dg.MetadataValue.int(outcome.jobs_unreadable),
                "duration_s": dg.MetadataValue.float(round(time.monotonic() - started, 2)),
                **api_cost_metadata(tenant, calls),
                "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(webhook_events)),
            }
        )

    return webhook_updates


def _served_by(records: Sequence[dg.RunRecord], tenants: Sequence[Tenant]) -> dict[str, list[dg.RunRecord]]:
    """``records`` of refresh runs by the key of the tenant they refreshed (its tag)."""
    keys = {t.key for t in tenants}
    by_tenant: dict[str, list[dg.RunRecord]] = {}
    for record in records:
        key = record.dagster_run.tags.get(TENANT_TAG)
        if key in keys:
            by_tenant.setdefault(key, []).append(record)
    return by_tenant


def _refresh_requests(
    context: dg.SensorEvaluationContext, tenants: Sequence[Tenant], postgres: PostgresResource
) -> list[dg.RunRequest]:
    """A refresh run for each tenant whose events wait, with none queued or running (nor failed just now).

    The inboxes first (one query for all, on the shared connection pool): the run storage, which opens a
    connection per query, is asked only when some event waits, and then once for all tenants."""
    # The location's tenants share its one database: one engine, each schema's version checked once a process.
    engine = [postgres.ensure_tenant(t) for t in tenants][-1]
    backlogs = inbox_backlogs(engine, tenants)
    waiting = [t for t in tenants if backlogs[t.key].pending]
    if not waiting:
        return []
    busy = _served_by(
        context.instance.get_run_records(dg.RunsFilter(tags=REFRESH_RUN_TAGS, statuses=list(_IN_FLIGHT))), waiting
    )
    failed_just_now = _served_by(
        context.instance.get_run_records(
            dg.RunsFilter(
                tags=REFRESH_RUN_TAGS,
                statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
                updated_after=dt.datetime.now(dt.UTC) - RETRY_AFTER,
            )
        ),
        waiting,
    )
    return [
        dg.RunRequest(
            job_name=raw_job_name(tenant),
            asset_selection=[tenant.names.asset_key(WEBHOOK_ASSET)],
            tags={
                **WEBHOOK_RUN_TAGS,
                **REFRESH_RUN_TAGS,
                "lgm/webhook_events_pending": str(backlogs[tenant.key].pending),
            },
        )
        for tenant in waiting
        if tenant.key not in busy and tenant.key not in failed_just_now
    ]


_IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


def _rebuild_requests(
    context: dg.SensorEvaluationContext,
    tenants: Sequence[Tenant],
    postgres: PostgresResource,
    cursors: dict[str, float],
) -> list[dg.RunRequest]:
    """The journeys partitions of each refresh that ended since its tenant's cursor (an update timestamp).

    One query for every tenant, from the oldest cursor; ``cursors`` is updated in place. A tenant's
    cursor is the update time of its last refresh run seen (one refresh at a time per tenant, so its runs
    end in order); an idle tenant's moves up to :data:`SETTLED` ago, which keeps the query's range short."""
    now = time.time()
    records = context.instance.get_run_records(
        dg.RunsFilter(
            tags=REFRESH_RUN_TAGS,
            # A refresh that committed and failed after (its materialization not recorded) still changed rows.
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            updated_after=dt.datetime.fromtimestamp(min(cursors[t.key] for t in tenants), dt.UTC),
        ),
        ascending=True,
    )
    by_tenant = _served_by(records, tenants)
    requests = []
    for tenant in tenants:
        after = cursors[tenant.key]
        new = [r for r in by_tenant.get(tenant.key, []) if r.update_timestamp.timestamp() > after]
        ended = [r.update_timestamp.timestamp() for r in new]
        cursors[tenant.key] = max([after, now - SETTLED.total_seconds(), *ended])
        for record in new:
            run_id = record.dagster_run.run_id
            for key in refreshed_partitions(postgres.ensure_tenant(tenant), tenant, run_id):
                requests.append(
                    dg.RunRequest(
                        job_name=journeys_job_name(tenant),
                        partition_key=key,
                        run_key=f"{run_id}:{key}",
                        tags={**WEBHOOK_RUN_TAGS, REFRESH_RUN_TAG: run_id},
                    )
                )
    return requests


def build_webhook_sensor(
    tenants: Sequence[Tenant], jobs: Sequence["dg.UnresolvedAssetJobDefinition"]
) -> dg.SensorDefinition | None:
    """The sensor serving every webhook-taking tenant's inbox; None when no tenant takes webhooks."""
    served = [t for t in tenants if takes_webhooks(t)]
    if not served:
        return None
    wanted = {name for t in served for name in (raw_job_name(t), journeys_job_name(t))}

    @dg.sensor(
        name=WEBHOOK_SENSOR,
        jobs=[j for j in jobs if j.name in wanted],
        minimum_interval_seconds=webhook_interval_s(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Serve SmartMoving's webhook events: a refresh run per tenant with pending events, then a journeys run "
            "per (date, branch) partition each refresh changed inside its branch's window."
        ),
    )
    def webhook_inbox(context: dg.SensorEvaluationContext, postgres: PostgresResource) -> dg.SensorResult:
        # Per tenant: the update time of the last refresh run whose partitions were requested (_rebuild_requests).
        cursors: dict[str, float] = json.loads(context.cursor) if context.cursor else {}
        start = time.time() - 3600
        for tenant in served:
            cursors.setdefault(tenant.key, start)
        requests = _rebuild_requests(context, served, postgres, cursors) + _refresh_requests(context, served, postgres)
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursors, sort_keys=True))

    return webhook_inbox
