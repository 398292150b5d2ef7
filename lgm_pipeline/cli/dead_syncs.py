"""Runs left in progress by an ``lgm sync`` process that no longer exists, and how they are settled.

``lgm sync`` executes its Dagster runs in its own process. A step of a SmartMoving-facing asset holds
its tenant's pool slot (limit 1) in the instance's storage and gives it back when it ends, in that
process. A process killed outright (SIGKILL, the OOM killer, a reboot) gives nothing back: its run
stays STARTED and its slot held, and every later pull of the tenant would wait for that slot for ever.
Dagster's run monitoring frees the slots of runs it sees finished; nothing marks an in-process run of a
dead process finished. So each run ``lgm sync`` starts carries its host, pid and the process's start
time, and before its first run ``lgm sync`` marks failed the runs of dead ``lgm sync`` processes of its
own host and frees their slots (runs of other hosts, or of a live process, are never touched).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import dagster as dg
import psutil

HOST_TAG = "lgm/sync_host"
PID_TAG = "lgm/sync_pid"
#: With the pid, tells a dead process from a new one that was given the same pid.
PROCESS_STARTED_TAG = "lgm/sync_process_started"

_UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _process_started(pid: int) -> str:
    return f"{psutil.Process(pid).create_time():.2f}"


def owner_tags() -> dict[str, str]:
    """The tags that tie a run to this process (``run_sync`` puts them on every run it starts)."""
    pid = psutil.Process().pid
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PROCESS_STARTED_TAG: _process_started(pid)}


def _alive(pid: int, started: str) -> bool:
    try:
        return _process_started(pid) == started
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # another user's live process
        return True


@dataclass(frozen=True)
class SettledRun:
    run_id: str
    job_name: str
    pid: int

    @property
    def line(self) -> str:
        return (
            f"run {self.run_id} ({self.job_name}) of an lgm sync that was killed (pid {self.pid}) was still "
            "in progress: marked failed and its pool slot freed"
        )


def settle_runs_of_dead_syncs(instance: dg.DagsterInstance) -> list[SettledRun]:
    """Mark failed the unfinished runs of this host's dead ``lgm sync`` processes and free their slots."""
    host = socket.gethostname()
    settled = []
    for run in instance.get_runs(dg.RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: host})):
        pid, started = run.tags.get(PID_TAG), run.tags.get(PROCESS_STARTED_TAG)
        if pid is None or not pid.isdigit() or started is None or _alive(int(pid), started):
            continue
        instance.report_run_failed(run, f"its lgm sync process ({host}, pid {pid}) ended without finishing it")
        settled.append(SettledRun(run.run_id, run.job_name, int(pid)))
    for run in settled:
        # A step that held, had been assigned or was queuing for a pool slot: all three are released.
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return settled
