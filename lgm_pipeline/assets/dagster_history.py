"""Retention of Dagster's own history: finished runs, their event logs and asset check results.

Why a job of ours: the instance's ``retention`` setting prunes schedule and sensor ticks only, while
every cycle adds runs and a few hundred event-log rows for good (docs/deploy.md, "Storage growth"). Once
a day the runs that finished more than ``LGM_DAGSTER_HISTORY_DAYS`` ago are deleted with their events
(``DagsterInstance.delete_run``) and check results. The tenants' own tables are untouched: journeys and sync history
live in PostgreSQL regardless (their retention is each tenant's ``history_retention``).
"""

import datetime as dt

import dagster as dg
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

from lgm_pipeline.naming import OWNERS
from lgm_pipeline.settings import dagster_history_days

JOB_NAME = "dagster_history_retention"
CRON = "45 3 * * *"  # UTC, after the tenants' own retention
#: Deleted per query: keeps each query and the run's memory small on a large backlog.
BATCH = 200
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def prune_runs(instance: dg.DagsterInstance, keep_days: int, now: dt.datetime, spare: str | None = None) -> int:
    """Delete finished runs created more than ``keep_days`` before ``now`` (never ``spare``, the caller's run)."""
    before = now - dt.timedelta(days=keep_days)
    deleted = 0
    while True:
        records = instance.get_run_records(
            dg.RunsFilter(statuses=FINISHED, created_before=before), limit=BATCH, ascending=True
        )
        doomed = [r.dagster_run.run_id for r in records if r.dagster_run.run_id != spare]
        for run_id in doomed:
            instance.delete_run(run_id)
        _delete_check_executions(instance, doomed)
        deleted += len(doomed)
        if len(records) < BATCH:
            return deleted


def _delete_check_executions(instance: dg.DagsterInstance, run_ids: list[str]) -> None:
    """The asset check results of those runs: ``delete_run`` leaves them behind (Dagster 1.13), and with
    9 checks per journeys partition they are a quarter of what a cycle adds (docs/deploy.md)."""
    storage = instance.event_log_storage
    if not run_ids or not isinstance(storage, SqlEventLogStorage) or not storage.has_table("asset_check_executions"):
        return
    with storage.index_connection() as conn:
        conn.execute(AssetCheckExecutionsTable.delete().where(AssetCheckExecutionsTable.c.run_id.in_(run_ids)))


@dg.op(description="Delete finished Dagster runs and their event logs older than LGM_DAGSTER_HISTORY_DAYS.")
def prune_dagster_history(context: dg.OpExecutionContext) -> None:
    keep_days = dagster_history_days()
    deleted = prune_runs(context.instance, keep_days, dt.datetime.now(dt.UTC), spare=context.run_id)
    context.log.info(f"deleted {deleted} runs older than {keep_days} days, with their event logs")


@dg.job(name=JOB_NAME, description=__doc__.split("\n\n")[0], tags={"dagster/priority": "-1"})
def dagster_history_retention() -> None:
    prune_dagster_history()


def build_dagster_history_definitions() -> dg.Definitions:
    schedule = dg.ScheduleDefinition(
        name=f"{JOB_NAME}_daily",
        cron_schedule=CRON,
        job=dagster_history_retention,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Once a day: Dagster runs and event logs older than LGM_DAGSTER_HISTORY_DAYS (default 14).",
        tags={"owner": OWNERS[0]},
    )
    return dg.Definitions(jobs=[dagster_history_retention], schedules=[schedule])
