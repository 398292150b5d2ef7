"""What ships with the package, and stock Dagster tooling run from the repository root.

``lgm`` reads its Dagster instance and workspace from the package (so a wheel runs like a checkout);
the root ``dagster.yaml`` / ``workspace.yaml`` serve stock commands run from the root and must neither
drift from the packaged ones nor need any ``LGM_*`` variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lgm_pipeline.cli import runtime
from lgm_pipeline.settings import HOME_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _stock_env() -> dict[str, str]:
    """A shell with none of our settings: no LGM_*, no DAGSTER_HOME, no SmartMoving variables."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("LGM_", "SMARTMOVING_", "DAGSTER_"))}


def _run_from_root(command: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=_stock_env(), capture_output=True, text=True, timeout=300, check=False
    )
    return result, time.monotonic() - started


def test_root_dagster_yaml_is_the_packaged_instance_without_storage() -> None:
    packaged = yaml.safe_load(runtime.packaged_text("dagster.yaml"))
    root = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert packaged["storage"] == {"postgres": {"postgres_url": {"env": "LGM_DAGSTER_STORAGE_URL"}}}
    assert root == {key: value for key, value in packaged.items() if key != "storage"}, (
        "dagster.yaml (root) and lgm_pipeline/cli/dagster.yaml differ: change the packaged one, then mirror it"
    )


def test_root_workspace_is_the_packaged_workspace() -> None:
    packaged = yaml.safe_load(runtime.packaged_text("workspace.yaml"))
    assert yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text()) == packaged
    [entry] = packaged["load_from"]
    assert entry == {"python_module": {"module_name": "lgm_pipeline.definitions", "location_name": "lgm_pipeline"}}


def test_project_files_are_written_from_the_package_into_lgm_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    for name in runtime.PACKAGED_FILES:
        path = runtime.project_file(name)
        assert path == tmp_path / "home" / "dagster" / name
        assert path.read_text() == runtime.packaged_text(name)
        path.write_text("stale: true\n")  # an older lgm's copy is replaced
        assert runtime.project_file(name).read_text() == runtime.packaged_text(name)
    assert sorted(p.name for p in (tmp_path / "home" / "dagster").iterdir()) == sorted(runtime.PACKAGED_FILES)


def test_importing_the_code_location_builds_nothing() -> None:
    # A tenants file that does not exist: importing must succeed, loading (what Dagster does) must not.
    code = (
        "import lgm_pipeline.definitions as d\n"
        "from lgm_pipeline.tenants import TenantConfigError\n"
        "try:\n"
        "    d.defs()\n"
        "except TenantConfigError:\n"
        "    print('lazy')\n"
    )
    env = {**_stock_env(), "LGM_TENANTS_FILE": "/nonexistent/tenants.yaml"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lazy"


def test_dagster_definitions_validate_passes_from_the_root_without_lgm_settings() -> None:
    result, took = _run_from_root(
        [str(VENV_BIN / "dagster"), "definitions", "validate", "-m", "lgm_pipeline.definitions"]
    )
    print(f"dagster definitions validate: {took:.1f} s")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_dg_check_defs_passes_from_the_root() -> None:
    dg = VENV_BIN / "dg"
    if not dg.exists():
        pytest.fail(f"no dg CLI in {VENV_BIN}: it comes with the test extra, `pip install -e '.[test]'`")
    result, took = _run_from_root([str(dg), "check", "defs"])
    print(f"dg check defs: {took:.1f} s")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "All definitions loaded successfully" in result.stdout
