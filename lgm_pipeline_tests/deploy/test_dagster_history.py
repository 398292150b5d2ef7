"""The Dagster history retention deletes old finished runs with their event logs, and nothing younger."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from lgm_pipeline.assets.dagster_history import dagster_history_retention, prune_runs
from lgm_pipeline.settings import DAGSTER_HISTORY_DAYS_ENV, dagster_history_days


@dg.op
def noop() -> None:
    pass


@dg.job
def tiny() -> None:
    noop()


def test_prunes_finished_runs_older_than_the_cutoff_with_their_events() -> None:
    with dg.instance_for_test() as instance:
        old, young = (tiny.execute_in_process(instance=instance).run_id for _ in range(2))
        assert instance.all_logs(old)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
        # both are "3 days old" at `later`: a 5-day retention keeps them, a 2-day one deletes them
        assert prune_runs(instance, 5, later) == 0
        assert prune_runs(instance, 2, later, spare=young) == 1
        assert instance.get_run_by_id(old) is None and not instance.all_logs(old)
        assert instance.get_run_by_id(young) is not None


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="thing")])
def thing():
    yield dg.Output(1)
    yield dg.AssetCheckResult(passed=True)


def test_the_check_results_of_a_deleted_run_go_too() -> None:
    key = dg.AssetCheckKey(dg.AssetKey("thing"), "positive")
    with dg.instance_for_test() as instance:
        dg.materialize([thing], instance=instance)
        assert len(instance.event_log_storage.get_asset_check_execution_history(key, limit=10)) == 1
        assert prune_runs(instance, 0, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)) == 1
        assert instance.event_log_storage.get_asset_check_execution_history(key, limit=10) == []


def test_the_job_runs_and_keeps_its_own_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DAGSTER_HISTORY_DAYS_ENV, "0")
    with dg.instance_for_test() as instance:
        earlier = tiny.execute_in_process(instance=instance).run_id
        result = dagster_history_retention.execute_in_process(instance=instance)
        assert result.success
        assert instance.get_run_by_id(earlier) is None
        assert instance.get_run_by_id(result.run_id) is not None


@pytest.mark.parametrize("value", ["-1", "two weeks"])
def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(DAGSTER_HISTORY_DAYS_ENV, value)
    with pytest.raises(ValueError, match=DAGSTER_HISTORY_DAYS_ENV):
        dagster_history_days()
