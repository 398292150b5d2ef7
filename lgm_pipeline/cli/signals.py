"""Ctrl-C and SIGTERM during ``lgm sync`` (and ``lgm up``'s first sync).

The first signal stops the sync: no run starts any more, the run in flight is canceled (``Interruption``
in ``lgm_pipeline.sync_execution``) and the summary says what finished; the command exits 128 + the
signal number (130 for SIGINT, 143 for SIGTERM). A second signal exits at once.

Why a watcher thread on the signal wakeup fd rather than work in a handler: a Python handler runs on the main
thread between bytecodes, which may be inside a database call; the watcher reads each signal's number from
the wakeup fd (written by the C-level handler), counts it and acts at once. The runs themselves execute on
worker threads (``sync_execution``), where Dagster installs no handler of its own.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

from lgm_pipeline.sync_execution import Interruption

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signal_name: str | None) -> int:
    """The shell's code for death by that signal: 130 (SIGINT), 143 (SIGTERM)."""
    signo = getattr(signal, signal_name or "", None)
    return 128 + int(signo) if signo is not None else 130


def exit_now(code: int) -> None:
    """Exit without joining threads: a SmartMoving request still in flight on a worker thread (up to its
    30 s timeout) must not hold up an interrupted command. Exit handlers still run (the embedded PostgreSQL
    detaches), buffered output is flushed."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _noted(signo: int, frame: FrameType | None) -> None:
    """The Python-level handler: the C-level one has already written the signal to the wakeup fd."""


@contextmanager
def stop_on_signals(interruption: Interruption, say: Callable[[str], None]) -> Iterator[Interruption]:
    """SIGINT/SIGTERM request ``interruption`` (the first) or exit at once (the second). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield interruption
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous_handlers = {signo: signal.getsignal(signo) for signo in STOP_SIGNALS}
    for signo in STOP_SIGNALS:
        signal.signal(signo, _noted)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        received = 0
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signo in data:
                if signo not in STOP_SIGNALS:
                    continue
                received += 1
                name = signal.Signals(signo).name
                if received == 1:
                    say(f"lgm: {name} received: stopping; the run in flight is canceled (again to exit at once)")
                    interruption.request(name)
                else:
                    say(f"lgm: {name} received again: exiting now")
                    exit_now(128 + signo)

    watcher = threading.Thread(target=watch, name="lgm-signals", daemon=True)
    watcher.start()
    try:
        yield interruption
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signo, handler in previous_handlers.items():
            signal.signal(signo, handler)
        writer.close()  # the watcher reads EOF and ends
        watcher.join(timeout=1)
        reader.close()
