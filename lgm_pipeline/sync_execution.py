"""Executing one run of ``lgm sync`` so that Ctrl-C cancels it through the instance, at once.

A run executes on a worker thread, so the signal never becomes an exception inside a step (Dagster catches
interrupts on the main thread only, and with a RetryPolicy turns one into a retry after its wait). On an
interruption the run in flight is marked CANCELING through the instance; its steps make no further call
(``assets/raw.py::open_client`` reads the run's status). When it has not ended after ``CANCEL_GRACE_S`` (a step
in a 30 s request or in its RetryPolicy's wait), the run is reported CANCELED and the sync returns; the
command then exits, and with it the worker, whose open transaction PostgreSQL rolls back.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import dagster as dg

from lgm_pipeline.smartmoving.client import calls_in_process
from lgm_pipeline.sync_report import RunOutcome

#: How long a run marked CANCELING may take to end by itself before the sync reports it CANCELED.
CANCEL_GRACE_S = 2.0
_ACTIVE = (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)


class Interruption:
    """The operator asked the sync to stop (set from the signal watcher thread, read by ``run_sync``)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._current: tuple[dg.DagsterInstance, str] | None = None
        self._settling = threading.Lock()  # one status write at a time, each after re-reading the status
        self._canceling: threading.Thread | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @property
    def message(self) -> str:
        return f"Interrupted by the operator ({self.reason or 'interrupt'})"

    def request(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            current = self._current
        self.event.set()
        if current is not None:
            # On a thread of its own: the signal watcher must stay free for a second Ctrl-C even if the
            # instance's database does not answer.
            self._canceling = threading.Thread(target=self._mark_canceling, args=current, daemon=True)
            self._canceling.start()

    @contextmanager
    def running(self, instance: dg.DagsterInstance, run_id: str) -> Iterator[None]:
        with self._lock:
            self._current = (instance, run_id)
        try:
            yield
        finally:
            with self._lock:
                self._current = None

    def _mark_canceling(self, instance: dg.DagsterInstance, run_id: str) -> None:
        """CANCELING: the run's steps make no further call (``assets/raw.py::open_client``)."""
        with self._settling, suppress(Exception):  # best effort: settle_given_up or the next sync corrects it
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status in _ACTIVE:
                instance.report_run_canceling(run, message=self.message)

    def settle(self, instance: dg.DagsterInstance, run_id: str, result: dg.ExecuteInProcessResult | None) -> None:
        """After an interruption: a run that did not succeed ends CANCELED, and one given up on (``result``
        None) gives its pool slot back, which nothing else would free once this process exits."""
        if self._canceling is not None:
            self._canceling.join(timeout=CANCEL_GRACE_S)  # its write must not land after this one
        if result is not None and result.success:
            return
        with self._settling, suppress(Exception):  # best effort: cli/dead_syncs.py settles what is left
            run = instance.get_run_by_id(run_id)
            settled = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.FAILURE, *_ACTIVE)
            if run is not None and run.status in settled:
                instance.report_run_canceled(run, message=self.message)
            if result is None:
                instance.event_log_storage.free_concurrency_slots_for_run(run_id)


class Stopped(Exception):
    """The sync was interrupted: before this run started, or while it ran and it did not end in time."""

    def __init__(self, run_id: str | None = None, api_calls: Counter[str] | None = None) -> None:
        super().__init__(run_id)
        self.run_id = run_id
        self.api_calls = api_calls or Counter()


def execute_run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    interruption: Interruption | None,
    run_config: Mapping[str, Any] | None,
    tags: Mapping[str, str],
    asset_selection: Sequence[dg.AssetKey] | None = None,
) -> RunOutcome:
    if interruption is not None and interruption.requested:
        raise Stopped
    run_id = str(uuid.uuid4())
    before = calls_in_process()
    started = time.monotonic()
    outcome: dict[str, Any] = {}

    def execute() -> None:
        try:
            outcome["result"] = job.execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_id=run_id,
                run_config=dict(run_config) if run_config else None,
                tags=dict(tags),
                asset_selection=list(asset_selection) if asset_selection is not None else None,
            )
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    if interruption is None:
        execute()
    else:
        worker = threading.Thread(target=execute, name=f"lgm-run-{run_id[:8]}", daemon=True)
        with interruption.running(instance, run_id):
            worker.start()
            while worker.is_alive() and not interruption.requested:
                worker.join(0.1)  # returns as soon as the run ends; a Ctrl-C is seen within 0.1 s
            worker.join(CANCEL_GRACE_S)
        if interruption.requested:
            interruption.settle(instance, run_id, outcome.get("result"))
    spent = calls_in_process()
    spent.subtract(before)
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise Stopped(run_id, +spent)
    return RunOutcome(outcome["result"], run_id, +spent, time.monotonic() - started)
