"""`lgm sync` as an operator meets it: failures retrying cannot heal fail fast, in one line, with the right
exit code; the output fits a screen; the numbers count what they say."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from lgm_pipeline.cli.main import main
from lgm_pipeline.simulator import FaultConfig, SimulatorConfig, start_simulator
from lgm_pipeline.simulator.server import RunningSimulator
from lgm_pipeline.tenants.config import get_tenant

#: The brief: what retrying cannot heal fails within 30 s, without a step retry.
FAIL_FAST_SECONDS = 30.0
CALGARY, TORONTO = "loc_lgm_calgary_001", "loc_lgm_toronto_001"


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSimulator]:
    with start_simulator(SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=20)) as sim:
        monkeypatch.setenv("SMARTMOVING_BASE_URL", sim.base_url)
        monkeypatch.setenv("SMARTMOVING_API_KEY", sim.api_key)
        monkeypatch.setenv("LGM_SMARTMOVING_RATE_LIMIT", "off")
        monkeypatch.delenv("DAGSTER_HOME", raising=False)
        yield sim


def _sync(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str, float]:
    started = time.monotonic()
    code = main(["sync", *args])
    out, err = capsys.readouterr()
    return code, out, err, time.monotonic() - started


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def test_a_base_url_without_v1_fails_fast_and_says_so(database_url, simulator, monkeypatch, capsys) -> None:
    without_v1 = simulator.base_url.removesuffix("/v1")
    monkeypatch.setenv("SMARTMOVING_BASE_URL", without_v1)
    code, out, err, seconds = _sync(capsys)
    assert code == 2, (out, err)
    assert seconds < FAIL_FAST_SECONDS
    line = _last_line(err)
    assert line.startswith("lgm: SmartMoving answered 404 Not Found for ")
    assert f"{without_v1}/api/customers" in line and "SMARTMOVING_BASE_URL" in line and "end in /v1" in line
    assert "Traceback" not in err and "dagster._core" not in out + err
    # one attempt, no step retry, no later date or leads pull; the summary counts that failed call
    assert "API calls 1 (customers=1)" in out
    assert "Runs -> " in out  # where to look in the UI


def test_a_wrong_key_fails_fast_counts_its_call_and_names_the_variable(
    database_url, simulator, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SMARTMOVING_API_KEY", "a-wrong-key")
    code, out, err, seconds = _sync(capsys)
    assert code == 2 and seconds < FAIL_FAST_SECONDS
    assert _last_line(err) == "lgm: SmartMoving rejected the API key (401): check SMARTMOVING_API_KEY (tenant lgm)"
    assert "FAILED: SmartMoving rejected the API key (401)" in out
    assert "dagster._core" not in out and "Failure:" not in out
    assert "API calls 1 (customers=1)" in out
    assert "a-wrong-key" not in out + err


def _journeys(database_url: str) -> int:
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.journeys")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("status", "meaning"),
    [(404, "this key's SmartMoving plan may not include /api/leads"), (403, "this key is not allowed that endpoint")],
)
def test_leads_out_of_the_keys_reach_is_a_partial_sync_not_a_base_url_error(
    database_url, simulator, capsys, status: int, meaning: str
) -> None:
    """A key whose plan leaves /api/leads out: the journeys are written, the leads have their own line, exit 3."""
    simulator.set_faults(FaultConfig(endpoint_status={"leads": status}))
    code, out, err, seconds = _sync(capsys, "--branch", CALGARY)
    assert code == 3, (out, err)
    assert seconds < FAIL_FAST_SECONDS  # a 404/403 is not retried, by the client or the step
    assert _journeys(database_url) > 0  # written, not rolled back
    [leads_line] = [line for line in out.splitlines() if line.startswith("leads ")]
    assert "FAILED" in leads_line and "/api/leads" in leads_line and meaning in leads_line
    assert "customers" in leads_line  # what answered from the same base URL, and so why it is not the settings
    assert all(" ok" in line for line in out.splitlines() if line.startswith(get_tenant("lgm").today().isoformat()))
    last = _last_line(err)
    assert last.startswith("lgm: partial sync, the journeys were written; failed: leads: ") and meaning in last
    for text in (out, err):
        assert "SMARTMOVING_BASE_URL" not in text and "SMARTMOVING_API_KEY" not in text and "end in /v1" not in text
    assert simulator.stats()["errors"] == 1  # one call to the leads, no retry

    code, out, _, _ = _sync(capsys, "--json", "--quiet", "--branch", CALGARY)
    [report] = json.loads(out)
    assert code == 3 and (report["ok"], report["outcome"], report["configuration_error"]) == (False, "partial", None)
    assert meaning in report["leads"]["error"] and all(b["ok"] for b in report["branches"])


def test_a_404_on_the_first_call_still_names_the_base_url(database_url, simulator, capsys) -> None:
    """The customers list is the cycle's first call: nothing has answered, so a 404 there is the settings'."""
    simulator.set_faults(FaultConfig(endpoint_status={"customers": 404}))
    code, out, err, seconds = _sync(capsys, "--branch", CALGARY)
    assert code == 2 and seconds < FAIL_FAST_SECONDS, (out, err)
    line = _last_line(err)
    assert line.startswith("lgm: SmartMoving answered 404 Not Found for ") and "/api/customers" in line
    assert "check SMARTMOVING_BASE_URL" in line and "end in /v1" in line
    assert "API calls 1 (customers=1)" in out and _journeys(database_url) == 0


def test_partial_means_every_journeys_partition_was_written() -> None:
    from lgm_pipeline.sync import BranchResult, SyncReport

    def report(**fields: object) -> SyncReport:
        today = get_tenant("lgm").today()
        done = SyncReport(get_tenant("lgm"), [today], branches=[BranchResult(today, CALGARY, success=True, rows=3)])
        for name, value in fields.items():
            setattr(done, name, value)
        return done

    assert report().outcome == "ok"
    assert report(leads_failure="x").outcome == "partial"
    assert report(branches_failure="x").outcome == "partial"  # SmartMoving's branch list, after retries
    assert report(leads_failure="x", raw_failures={get_tenant("lgm").today(): "y"}).outcome == "failed"
    failed_branch = BranchResult(get_tenant("lgm").today(), TORONTO, success=False, error="z")
    assert report(leads_failure="x", branches=[failed_branch]).outcome == "failed"
    assert report(leads_failure="x", configuration_error="x").outcome == "configuration_error"
    assert report(leads_failure="x", interrupted="SIGINT").outcome == "interrupted"


def test_a_malformed_base_url_fails_fast(database_url, simulator, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SMARTMOVING_BASE_URL", simulator.base_url.removeprefix("http://"))
    code, _, err, seconds = _sync(capsys, "--quiet")
    assert code == 2 and seconds < FAIL_FAST_SECONDS
    assert "base URL is not usable" in _last_line(err) and "SMARTMOVING_BASE_URL" in _last_line(err)
    assert simulator.stats()["total"] == 0


def test_postgresql_refusing_connections_is_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("LGM_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/lgm")
    monkeypatch.setenv("LGM_HOME", str(tmp_path))
    code, _, err, seconds = _sync(capsys)
    assert code == 2 and seconds < FAIL_FAST_SECONDS
    assert err.strip() == (
        "lgm: cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:1/lgm (connection refused); "
        "check LGM_DATABASE_URL"
    )


def test_postgresql_refusing_the_login_is_one_line(postgres_server_url, monkeypatch, tmp_path: Path, capsys) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server_url).set(username="lgm_no_such_login", password="nope")
    monkeypatch.setenv("LGM_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("LGM_HOME", str(tmp_path))
    code, _, err, _ = _sync(capsys)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("lgm: cannot reach PostgreSQL at ") and "login refused" in line and "nope" not in line


def test_a_broken_tenants_file_is_one_line(database_url, monkeypatch, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "tenants.yaml"
    broken.write_text("tenants: [\n")
    monkeypatch.setenv("LGM_TENANTS_FILE", str(broken))
    assert main(["sync", "--quiet"]) == 2
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    assert line.startswith(f"lgm: tenants file {broken} is not valid YAML")


def test_default_output_fits_a_screen_and_json_is_machine_readable(database_url, simulator, capsys) -> None:
    code, out, err, _ = _sync(capsys)
    assert code == 0, (out, err)
    assert len((out + err).splitlines()) <= 30, out + err
    assert "DEBUG" not in err and "BetaWarning" not in err
    progress = [line for line in err.splitlines() if line.startswith("  lgm ")]
    assert any("details fetched" in line and "API calls" in line for line in progress)

    code, out, err, _ = _sync(capsys, "--quiet", "--branch", CALGARY)
    assert code == 0 and err == ""
    assert out.startswith("Lets Get Moving (lgm)")

    code, out, _, _ = _sync(capsys, "--json", "--quiet", "--branch", CALGARY)
    [report] = json.loads(out)
    assert report["ok"] and report["tenant"] == "lgm"
    assert report["api_calls"] == sum(report["api_calls_by_endpoint"].values())
    assert report["quarantined_jobs"] == sum(b["quarantined"] for b in report["branches"]) + sum(
        report["unmapped_branch_quarantined"].values()
    )
    assert all(b["run_id"] for b in report["branches"])


def test_verbose_shows_dagster_events(database_url, simulator, capsys) -> None:
    code, _, err, _ = _sync(capsys, "--verbose", "--branch", "loc_lgm_calgary_001")
    assert code == 0
    assert "STEP_START" in err or "DEBUG" in err


def test_a_job_of_an_unmapped_branch_is_counted_once(database_url, simulator, capsys) -> None:
    today = get_tenant("lgm").today()
    simulator.world.add_booking(today, "NOWHERE - not in the tenants file", 4)
    code, out, err, _ = _sync(
        capsys, "--json", "--quiet", "--date", today.isoformat(), "--branch", CALGARY, "--branch", TORONTO
    )
    assert code == 0, err
    [report] = json.loads(out)
    unmapped = report["unmapped_branch_quarantined"]
    assert unmapped.get(today.isoformat(), 0) >= 1
    assert all(b["quarantined"] < unmapped[today.isoformat()] or b["quarantined"] == 0 for b in report["branches"])
    # every branch partition quarantines the job, the summary counts it once
    assert report["quarantined_jobs"] == sum(b["quarantined"] for b in report["branches"]) + sum(unmapped.values())
