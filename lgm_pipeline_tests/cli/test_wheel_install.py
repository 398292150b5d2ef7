"""A plain ``pip install .`` runs: the wheel alone, in a fresh venv outside the checkout, in an empty folder.

The wheel is built from a copy of the project files (nothing is written into the checkout) and installed
into a new venv with ``--no-deps``; the venv borrows its dependencies from the test venv through a
``.pth`` line (a plain path: the test venv's own ``.pth`` hooks, the editable install's among them, are
not run), which keeps the test at about a minute instead of downloading Dagster again. ``pip check``
proves the wheel's declared dependencies are all met, and the test asserts that ``lgm_pipeline`` is
imported from the new venv, never from the checkout.

``lgm up`` then runs as a user starts it in an empty folder: no ``LGM_HOME`` (``./.lgm``), no
``DAGSTER_HOME``, no SmartMoving settings (built-in simulator), only ``LGM_DATABASE_URL`` pointing at
a fresh database on the test server, so the test can read what was written.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import psutil
import pytest
import sqlalchemy as sa

from lgm_pipeline.settings import HOME_ENV
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline_tests.ui.conftest import READY_TIMEOUT_S, free_port, lgm_env, stop_tree

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
#: What a build of the project reads (pyproject.toml's readme, package discovery); the rest stays behind.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "lgm_pipeline")
STOP_WITHIN_S = 30
SYNC_TIMEOUT_S = 300


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _build_wheel(work: Path) -> Path:
    source = work / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)], timeout=300)
    [wheel] = dist.glob("lgm_pipeline-*.whl")
    return wheel


def _fresh_venv_with(wheel: Path, venv: Path) -> Path:
    """A new venv holding the wheel; dependencies come from the test venv (see the module docstring)."""
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], timeout=120)
    site_packages = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    )
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site_packages / "zz_borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(borrowed)))
    _run([str(python), "-m", "pip", "check"], timeout=120)
    return venv / "bin"


def _wait_for_ui(process: subprocess.Popen[bytes], port: int, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        if process.poll() is not None:
            pytest.fail(f"`lgm up` exited with {process.returncode} before the UI answered:\n{_tail(log)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass  # still syncing, or the webserver is starting
        time.sleep(1)
    pytest.fail(f"the Dagster UI did not answer within {READY_TIMEOUT_S} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def test_wheel_installs_and_lgm_up_then_lgm_sync_run_from_it(database_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    outside = tmp_path / "outside"  # pytest's tmp_path is outside the checkout
    outside.mkdir()
    wheel = _build_wheel(outside)
    bin_dir = _fresh_venv_with(wheel, outside / "venv")
    installed_after = time.monotonic() - started

    folder = outside / "empty"
    folder.mkdir()
    env = lgm_env(database_url, folder / "unused")
    del env[HOME_ENV]  # the default, ./.lgm, as for a user who sets nothing
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"

    where = _run([str(bin_dir / "python"), "-c", "import lgm_pipeline; print(lgm_pipeline.__file__)"], cwd=folder)
    module_file = Path(where.stdout.strip())
    assert (outside / "venv") in module_file.parents, module_file
    assert REPO_ROOT not in module_file.parents

    port = free_port()
    log_path = outside / "lgm_up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(bin_dir / "lgm"), "up", "--port", str(port)],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C on pytest must not reach it behind the test's back
        )
    tree: list[psutil.Process] = []
    try:
        ready_after = _wait_for_ui(process, port, log_path)
        tree = psutil.Process(process.pid).children(recursive=True)
        stopping = time.monotonic()
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        returncode = process.wait(timeout=STOP_WITHIN_S)
        stopped_after = time.monotonic() - stopping
    finally:
        stop_tree(process, tree)
    assert returncode in (0, 130), _tail(log_path)
    dagster_home = folder / ".lgm" / "dagster"
    # lgm up serves the code location over gRPC, as lgm serve does
    assert sorted(p.name for p in dagster_home.glob("*.yaml")) == ["dagster.yaml", "workspace-grpc.yaml"]

    tenant = load_tenants()[0]
    count_runs = sa.text(f"SELECT count(DISTINCT run_id) FROM {tenant.schema}.sync_runs")
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            runs_before = conn.execute(count_runs).scalar()
        assert runs_before, "lgm up's first sync recorded nothing"

        sync_started = time.monotonic()
        branch = tenant.location_ids[0]
        sync = subprocess.run(
            [str(bin_dir / "lgm"), "sync", "--branch", branch],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=SYNC_TIMEOUT_S,
            check=False,
        )
        sync_took = time.monotonic() - sync_started
        assert sync.returncode == 0, sync.stdout[-3000:] + sync.stderr[-3000:]
        assert branch in sync.stdout
        with engine.connect() as conn:
            runs_after = conn.execute(count_runs).scalar()
            journeys = conn.execute(
                sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys WHERE location_id = :b"), {"b": branch}
            ).scalar()
    finally:
        engine.dispose()
    assert runs_after > runs_before
    assert journeys > 0
    print(
        f"wheel built and installed in {installed_after:.1f} s; lgm up answered after {ready_after:.1f} s, "
        f"stopped {stopped_after:.1f} s after Ctrl-C; lgm sync took {sync_took:.1f} s; "
        f"total {time.monotonic() - started:.1f} s"
    )
