"""One real ``lgm up`` for the whole UI package: what an engineer gets after the README's first command.

``lgm up`` runs as a subprocess exactly as a user starts it, except that it writes to a fresh database
on the test server and a temporary ``LGM_HOME``: simulator mode (no SmartMoving settings), no
``DAGSTER_HOME``. Starting it costs a full sync (about a minute), so the UI tests share one, and the
test that presses Ctrl-C on it is moved behind every other UI test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from lgm_pipeline.settings import DAGSTER_STORAGE_URL_ENV, DATABASE_URL_ENV, HOME_ENV, RATE_LIMIT_OVERRIDE_ENV
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.tenants import Tenant, load_tenants

#: The first sync pulls about 400 API calls from the simulator; ~80 s on a 2-core machine.
READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60
STOPS_LGM_UP = "stops_lgm_up"

UI_DIR = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{STOPS_LGM_UP}: stops the shared `lgm up`; runs after the other UI tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Reorder only inside this package's contiguous block of items: moving the stop test out of it
    # would tear the package fixture down and start a second `lgm up` for it.
    positions = [i for i, item in enumerate(items) if UI_DIR in Path(str(item.path)).parents]
    if not positions:
        return
    block = [items[i] for i in positions]
    ordered = [i for i in block if not i.get_closest_marker(STOPS_LGM_UP)]
    ordered += [i for i in block if i.get_closest_marker(STOPS_LGM_UP)]
    for position, item in zip(positions, ordered, strict=True):
        items[position] = item


@dataclass
class LgmUp:
    """The running ``lgm up`` and where it writes."""

    process: subprocess.Popen[bytes]
    port: int
    database_url: str
    home: Path
    log_path: Path
    tenant: Tenant
    window: list[dt.date]
    ready_after_s: float = 0.0
    webhook_port: int = 0
    engine: sa.Engine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = create_engine(self.database_url, poolclass=sa.pool.NullPool)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def scalar(self, sql: str, **params: object) -> object:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()

    def rows(self, sql: str, **params: object) -> list[sa.Row]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lgm_env(database_url: str, home: Path) -> dict[str, str]:
    """The user's environment minus everything that would leave simulator mode or the test's database."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SMARTMOVING_")
        and key not in {"DAGSTER_HOME", DAGSTER_STORAGE_URL_ENV, RATE_LIMIT_OVERRIDE_ENV, "LGM_TENANTS_FILE"}
    }
    env[DATABASE_URL_ENV] = database_url
    env[HOME_ENV] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until_answering(up: LgmUp, started: float) -> None:
    deadline = started + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if up.process.poll() is not None:
            pytest.fail(f"`lgm up` exited with {up.process.returncode} before the UI answered:\n{up.log_tail()}")
        try:
            # lgm up announces the UI on its next poll after the webserver answers: wait for both
            answered = httpx.get(up.url("server_info"), timeout=2).status_code == 200
            if answered and "Dagster UI: " in up.log_path.read_text(errors="replace"):
                up.ready_after_s = time.monotonic() - started
                return
        except httpx.TransportError:
            pass  # not listening yet: still syncing, or the webserver is starting
        time.sleep(1)
    pytest.fail(f"the Dagster UI did not answer within {READY_TIMEOUT_S} s:\n{up.log_tail()}")


def stop_tree(process: subprocess.Popen[bytes], tree: list[psutil.Process]) -> None:
    """Last resort after a failed test: the whole tree goes, so nothing outlives the test session."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@pytest.fixture(scope="package")
def ui_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for the package (the per-test ``database_url`` fixture is function-scoped)."""
    name = f"lgm_ui_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            for database in (name, f"{name}_dagster"):  # the second one is Dagster's, made by `lgm up`
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="package")
def lgm_up(ui_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LgmUp]:
    work = tmp_path_factory.mktemp("lgm_up")
    home = work / "lgm_home"
    log_path = work / "lgm_up.log"
    tenant = load_tenants()[0]
    port, webhook_port = free_port(), free_port()
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lgm_pipeline.cli.main",
                "up",
                "--port",
                str(port),
                "--webhook-port",
                str(webhook_port),
            ],
            env=lgm_env(ui_database_url, home),
            cwd=work,  # the checkout is shared with other work: nothing may be written into it
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Our own session: a Ctrl-C on pytest must not reach it behind the test's back.
            start_new_session=True,
        )
    up = LgmUp(process, port, ui_database_url, home, log_path, tenant, tenant.sync_window(), webhook_port=webhook_port)
    tree: list[psutil.Process] = []
    try:
        wait_until_answering(up, started)
        tree = psutil.Process(process.pid).children(recursive=True)
        yield up
    finally:
        if process.poll() is None:
            tree = tree or psutil.Process(process.pid).children(recursive=True)
        stop_tree(process, tree)
        up.engine.dispose()
