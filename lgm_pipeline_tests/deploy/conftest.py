"""``lgm serve`` as an operator starts it: three Dagster processes (no ``dagster dev``) and the webhook receiver
on the test server.

The instance is the production one, ``deploy/dagster.yaml`` (queued runs with per-tenant limits, pools, run
retries, monitoring, retention), in a temporary ``DAGSTER_HOME``; the refresh schedule ticks every minute
(``LGM_REFRESH_CRON``); SmartMoving is a simulator in the test process. The test reads what happened from
the same Dagster storage, never from the processes' output alone.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import psutil
import pytest

from lgm_pipeline.settings import DAGSTER_STORAGE_URL_ENV, RATE_LIMIT_OVERRIDE_ENV, REFRESH_CRON_ENV
from lgm_pipeline.storage.database import dagster_storage_url
from lgm_pipeline_tests.ui.conftest import free_port, lgm_env

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    instance: dg.DagsterInstance
    webhook_port: int = 0

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_lines(self, prefix: str) -> list[str]:
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if line.startswith(prefix)]

    def services(self) -> dict[str, psutil.Process]:
        """The code server, daemon, webserver and webhook receiver, by role (run workers are their children)."""
        found = {}
        for child in psutil.Process(self.process.pid).children():
            try:
                command = " ".join(child.cmdline())
            except psutil.Error:  # gone, or a zombie until lgm serve reaps it
                continue
            for role, marker in (
                ("code", "dagster api grpc"),
                ("daemon", "dagster._daemon"),
                ("web", "lgm_pipeline.cli.webserver"),  # Dagster's webserver behind the Host/Origin guard
                ("webhooks", "webhooks serve"),  # lgm webhooks serve: SmartMoving's webhook receiver
            ):
                if marker in command:
                    found[role] = child
        return found

    def wait_for(self, what: str, timeout_s: float, check: Callable[[], object]) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"lgm serve exited with {self.process.returncode}:\n{self.log_tail()}"
            result = check()
            if result:
                return result
            time.sleep(1)
        pytest.fail(f"{what}: not within {timeout_s:.0f} s\n{self.log_tail()}")


@pytest.fixture
def start_serve(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, str]], Serve]]:
    started: list[Serve] = []

    def start(extra_env: dict[str, str]) -> Serve:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copyfile(DEPLOY_DIR / "dagster.yaml", home / "dagster.yaml")
        env = lgm_env(database_url, tmp_path / "lgm_home")
        env.update({"DAGSTER_HOME": str(home), REFRESH_CRON_ENV: "* * * * *", RATE_LIMIT_OVERRIDE_ENV: "off"})
        env.update(extra_env)
        port, code_port, webhook_port = free_port(), free_port(), free_port()
        log_path = tmp_path / "lgm_serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lgm_pipeline.cli.main",
                    "serve",
                    "--port",
                    str(port),
                    "--code-port",
                    str(code_port),
                    "--webhook-port",
                    str(webhook_port),
                ],
                env=env,
                cwd=tmp_path,  # nothing may be written into the checkout
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C on pytest must not reach it behind the test's back
            )
        # The test's own view of the same instance (lgm serve made the `_dagster` database first).
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv(DAGSTER_STORAGE_URL_ENV, dagster_storage_url(database_url))
        serve = Serve(process, port, log_path, None, webhook_port)  # type: ignore[arg-type]
        started.append(serve)
        serve.wait_for("the Dagster UI", READY_TIMEOUT_S, lambda: _answers(serve.url("server_info")))
        serve.instance = dg.DagsterInstance.get()
        return serve

    yield start
    for serve in started:
        tree = psutil.Process(serve.process.pid).children(recursive=True) if serve.process.poll() is None else []
        if serve.process.poll() is None:
            serve.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                serve.process.wait(timeout=STOP_TIMEOUT_S)
        for process in [*tree, psutil.Process(serve.process.pid) if serve.process.poll() is None else None]:
            with contextlib.suppress(psutil.NoSuchProcess, AttributeError):
                process.kill()  # type: ignore[union-attr]
        if serve.instance is not None:
            serve.instance.dispose()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
