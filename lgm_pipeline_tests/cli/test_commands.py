"""The `lgm` commands as an operator runs them (in process; the database is the test's own)."""

from __future__ import annotations

import json

import pytest

from lgm_pipeline.cli.main import main
from lgm_pipeline.simulator import FaultConfig, SimulatorConfig, start_simulator


@pytest.fixture
def simulator_env(monkeypatch: pytest.MonkeyPatch):
    with start_simulator(SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=20)) as sim:
        monkeypatch.setenv("SMARTMOVING_BASE_URL", sim.base_url)
        monkeypatch.setenv("SMARTMOVING_API_KEY", sim.api_key)
        yield sim


def test_check_connection_reports_latency_and_branches(database_url, simulator_env, capsys) -> None:
    assert main(["check-connection"]) == 0
    out = capsys.readouterr().out
    assert "lgm: ok" in out and "key: valid" in out
    assert "CALGARY" in out
    assert simulator_env.api_key not in out


def test_check_connection_with_a_wrong_key_says_so(database_url, simulator_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SMARTMOVING_API_KEY", "a-wrong-key")
    assert main(["check-connection"]) == 1
    out = capsys.readouterr().out
    assert "key: rejected (401)" in out and "a-wrong-key" not in out


def test_check_connection_with_the_branch_list_out_of_the_keys_reach_is_partial(
    database_url, simulator_env, capsys
) -> None:
    simulator_env.set_faults(FaultConfig(endpoint_status={"branches": 403}))
    assert main(["check-connection"]) == 3  # ping answered: the API is usable, one endpoint is not
    out = capsys.readouterr().out
    assert "lgm: PARTIAL: SmartMoving refused access to /api/branches (403)" in out
    assert "key: recognised but forbidden on /api/branches (403)" in out
    assert "SMARTMOVING_BASE_URL" not in out and "warning:" not in out  # no branch list, no mapping verdict


def test_sync_one_branch_then_status(database_url, simulator_env, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("LGM_SMARTMOVING_RATE_LIMIT", "off")
    assert main(["sync", "--branch", "loc_lgm_calgary_001"]) == 0
    out = capsys.readouterr().out
    assert out.count("loc_lgm_calgary_001") == 2 and "loc_lgm_toronto_001" not in out
    assert "leads (yesterday and today):" in out
    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "loc_lgm_calgary_001" in status and "never synced" not in status
    [leads_line] = [line for line in status.splitlines() if line.strip().startswith("leads:")]
    assert "open in leads_recent" in leads_line and not leads_line.strip().startswith("leads: 0 created today, 0")


def test_sync_with_an_unknown_branch_is_a_clear_error(database_url, simulator_env, capsys) -> None:
    assert main(["sync", "--branch", "loc_nowhere"]) == 2
    assert "unknown branch" in capsys.readouterr().err


def test_check_connection_warns_about_branches_the_tenants_file_and_smartmoving_disagree_on(
    database_url, monkeypatch, capsys
) -> None:
    from lgm_pipeline.simulator.world import DEFAULT_UNKNOWN_BRANCH
    from lgm_pipeline.tenants import load_tenants

    mapped = [b.smartmoving_branch_name for b in load_tenants()[0].branches]
    # SmartMoving knows every branch but Winnipeg, plus one the file does not map.
    served = [*mapped[:-1], DEFAULT_UNKNOWN_BRANCH]
    config = SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=5, branch_names=served)
    with start_simulator(config) as sim:
        monkeypatch.setenv("SMARTMOVING_BASE_URL", sim.base_url)
        monkeypatch.setenv("SMARTMOVING_API_KEY", sim.api_key)
        assert main(["check-connection"]) == 0  # the connection works; the mapping is a warning
    out = capsys.readouterr().out
    assert f"warning: SmartMoving branch {DEFAULT_UNKNOWN_BRANCH!r} is not in tenants.yaml" in out
    assert f"warning: tenants.yaml maps {mapped[-1]!r}, which SmartMoving does not know" in out
    assert out.count("warning:") == 2
    latency = out.split("latency ")[1].split(" ms")[0]
    assert latency.count(".") == 1 and len(latency.split(".")[1]) == 1, latency  # one decimal


def test_check_connection_against_nothing_fails_with_a_nonzero_exit(database_url, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SMARTMOVING_BASE_URL", "http://127.0.0.1:9/v1")  # discard port: nothing listens
    monkeypatch.setenv("SMARTMOVING_API_KEY", "any")
    assert main(["check-connection"]) == 1
    out = capsys.readouterr().out
    assert "lgm: FAILED" in out and "latency -" in out


def test_sync_with_refresh_details_fetches_every_opportunity_again(
    database_url, simulator_env, monkeypatch, capsys
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("LGM_SMARTMOVING_RATE_LIMIT", "off")
    args = ["sync", "--branch", "loc_lgm_calgary_001", "--json", "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0
    [plain] = json.loads(capsys.readouterr().out)[0]["pulls"]
    assert plain["details_reused"] > 0 and plain["details_fetched"] == 0  # the world did not change
    assert main([*args, "--refresh-details"]) == 0
    [refreshed] = json.loads(capsys.readouterr().out)[0]["pulls"]
    assert refreshed["details_reused"] == 0 and refreshed["details_fetched"] == plain["details_reused"]
