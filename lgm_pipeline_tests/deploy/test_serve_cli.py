"""`lgm serve` refuses what it cannot serve before starting anything: exit 2 and one line."""

from __future__ import annotations

import signal
import socket

import pytest

from lgm_pipeline.cli.main import main
from lgm_pipeline.cli.serve import describe_exit
from lgm_pipeline.settings import CYCLE_PERIOD_ENV, REFRESH_CRON_ENV, WEBHOOK_INTERVAL_ENV


def test_a_port_in_use_is_a_configuration_error(database_url: str, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--code-port", str(port)]) == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lgm:")]
    assert line.startswith(f"lgm: port {port} on 127.0.0.1 is in use (--port)")


def test_a_webhook_port_in_use_is_a_configuration_error(database_url: str, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", "0", "--code-port", "0", "--webhook-port", str(port)]) == 2
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("lgm:")]
    assert line.startswith(f"lgm: port {port} on 127.0.0.1 is in use (--webhook-port)")


def test_a_bad_refresh_cron_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv(REFRESH_CRON_ENV, "every minute")
    assert main(["serve"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"lgm: {REFRESH_CRON_ENV} is not a cron expression: 'every minute' (e.g. '0 */2 * * *')"
    )


def test_a_cycle_period_no_cron_repeats_evenly_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv(REFRESH_CRON_ENV, raising=False)
    monkeypatch.setenv(CYCLE_PERIOD_ENV, "45")
    assert main(["serve"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"lgm: {CYCLE_PERIOD_ENV} must be one of 1, 2, 3,") and line.endswith("not '45'")


def test_a_webhook_interval_that_is_not_whole_seconds_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv(REFRESH_CRON_ENV, raising=False)
    monkeypatch.delenv(CYCLE_PERIOD_ENV, raising=False)
    monkeypatch.setenv(WEBHOOK_INTERVAL_ENV, "5s")
    assert main(["serve"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == f"lgm: {WEBHOOK_INTERVAL_ENV} must be a whole number of seconds from 1 to 600, not '5s'"


def test_a_death_is_told_by_signal_or_exit_code() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"
