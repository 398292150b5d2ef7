"""``lgm simulator`` as an operator starts it: a world that stays still on request, options checked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from lgm_pipeline.cli.main import build_parser
from lgm_pipeline.simulator.config import DEMO_API_KEY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def lgm_simulator(*options: str) -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, "-m", "lgm_pipeline.cli.main", "simulator", "--port", str(port), *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base_url}/api/branches", headers={"x-api-key": DEMO_API_KEY}, timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.stderr.read().decode() if process.stderr else "no output") from None
                time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _first_page(base_url: str) -> dict:
    params = {"FromServiceDate": "20261127", "ToServiceDate": "20261128", "IncludeOpportunityInfo": "true"}
    response = httpx.get(f"{base_url}/api/customers", params=params, headers={"x-api-key": DEMO_API_KEY}, timeout=30)
    response.raise_for_status()
    return response.json()


@pytest.mark.slow
def test_churn_zero_serves_the_same_world_to_every_pull() -> None:
    # Every first page of a customers pull evolves the world, unless churn is 0: a no-change cycle to show.
    with lgm_simulator("--churn", "0", "--customers-per-day", "60", "--rate-limit", "0") as base_url:
        pulls = [_first_page(base_url) for _ in range(3)]
    assert pulls[0]["pageResults"] and pulls[0] == pulls[1] == pulls[2]
    with lgm_simulator("--churn", "1", "--customers-per-day", "60", "--rate-limit", "0") as base_url:
        moving = [_first_page(base_url) for _ in range(3)]
    assert moving[0] != moving[2]  # the same pulls see a world that moves


@pytest.mark.parametrize("value", ["1.5", "-0.1", "lots"])
def test_a_churn_outside_zero_to_one_is_refused_by_name(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["simulator", "--churn", value])
    assert raised.value.code == 2
    assert "--churn" in capsys.readouterr().err


def test_the_help_documents_every_simulator_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulator", "--help"])
    text = capsys.readouterr().out
    for option in ("--port", "--api-key", "--seed", "--customers-per-day", "--churn", "--rate-limit", "--fault"):
        assert option in text
    assert "0 = a world that stays still" in text


@pytest.mark.parametrize("value", ["0", "1001", "many"])
def test_a_tenant_count_outside_one_to_a_thousand_is_refused_by_name(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["simulator", "--tenants", value])
    assert raised.value.code == 2
    assert "--tenants" in capsys.readouterr().err.splitlines()[-1]


def test_the_tenant_count_defaults_to_one_and_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["simulator"]).tenants == 1
    assert build_parser().parse_args(["simulator", "--tenants", "1000"]).tenants == 1000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulator", "--help"])
    assert "--tenants N" in capsys.readouterr().out


@pytest.mark.slow
def test_many_tenants_are_announced_in_two_lines_and_served_by_key() -> None:
    port = _free_port()
    command = [sys.executable, "-m", "lgm_pipeline.cli.main", "simulator", "--port", str(port), "--tenants", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        base_url = f"http://127.0.0.1:{port}/v1"
        statuses = [
            httpx.get(f"{base_url}/api/ping", headers={"x-api-key": key}, timeout=10).status_code
            for key in (f"{DEMO_API_KEY}-t50", f"{DEMO_API_KEY}-t51", DEMO_API_KEY)
        ]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert f"listening on http://127.0.0.1:{port}/v1 (50 tenants)" in lines[0]
    assert f"{DEMO_API_KEY}-t<i>" in lines[1] and "tenant=i" in lines[1]
    assert statuses == [200, 401, 401]
