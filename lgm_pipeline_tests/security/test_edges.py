"""Issue 25, parts 6 and 7: the web UI's boundary and bad input at the edge, each as the probe found it.

The webserver tests run the webserver command ``lgm serve`` builds (``Topology``), as a real process, with an
empty workspace and a throwaway SQLite instance: the boundary is in front of Dagster, not in the code
location, and a process starts in seconds where the whole topology takes a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pytest

from lgm_pipeline.assets.maintenance import build_retention_asset
from lgm_pipeline.cli.main import _web_access, build_parser, main
from lgm_pipeline.cli.serve import Topology
from lgm_pipeline.cli.webguard import WebGuard
from lgm_pipeline.settings import HOME_ENV
from lgm_pipeline.simulator import FaultConfig, SimulatorConfig, start_simulator
from lgm_pipeline.storage.resources import PostgresResource
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline_tests.ui.conftest import free_port

READY_TIMEOUT_S = 90
#: The mutation the probe sent over GET: it stopped a running schedule.
STOP_SCHEDULE = 'mutation { stopRunningSchedule(id: "x") { __typename } }'
PERMISSIONS = "{ permissions { permission value } }"


@dataclass
class Webserver:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"


def _start_webserver(argv: list[str], tmp: Path) -> Webserver:
    """The webserver ``lgm serve <argv>`` would start, on a free port, with an empty workspace."""
    args = build_parser().parse_args(["serve", *argv])
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_ENV, str(tmp / "lgm_home"))
        topology = Topology(args.host, port, free_port(), False, lambda line: None, _web_access(args))
    command = list(topology.webserver.command)
    workspace = tmp / "workspace.yaml"
    workspace.write_text("load_from: []\n")
    command[command.index("-w") + 1] = str(workspace)  # no code server: the guard is in front of Dagster
    dagster_home = tmp / "dagster_home"
    dagster_home.mkdir()
    env = {**topology.webserver.env, "DAGSTER_HOME": str(dagster_home)}
    log = tmp / "webserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Webserver(process, port, log)


def _wait_until_answering(server: Webserver) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text(errors="replace")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url("server_info"), timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"the webserver did not answer within {READY_TIMEOUT_S} s:\n{server.log.read_text(errors='replace')}")


def _stop(server: Webserver) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def webservers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Webserver]]:
    """``lgm serve``'s webserver on loopback (the default) and on a public address, started side by side."""
    servers = {
        "loopback": _start_webserver([], tmp_path_factory.mktemp("web_loopback")),
        "public": _start_webserver(["--host", "0.0.0.0"], tmp_path_factory.mktemp("web_public")),
    }
    try:
        for server in servers.values():
            _wait_until_answering(server)
        yield servers
    finally:
        for server in servers.values():
            _stop(server)


# --- 6. the web UI -------------------------------------------------------------------------------------------


def test_a_request_naming_another_host_is_refused(webservers: dict[str, Webserver]) -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends ``Host: <that name>``."""
    server = webservers["loopback"]
    rebound = httpx.get(server.url("server_info"), headers={"Host": f"rebind.attacker.example:{server.port}"})
    assert rebound.status_code == 403
    assert "--allowed-host rebind.attacker.example" in rebound.text
    # A rebound page would use GraphQL the same way: refused before Dagster sees it.
    posted = httpx.post(server.url("graphql"), json={"query": PERMISSIONS}, headers={"Host": "rebind.attacker.example"})
    assert posted.status_code == 403
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "[::1]"):
        assert httpx.get(server.url("server_info"), headers={"Host": host}).status_code == 200, host


def test_a_graphql_mutation_over_get_does_not_run(webservers: dict[str, Webserver]) -> None:
    """The probe's ``stopRunningSchedule`` over GET (an ``<img src>`` on any page) answered; now it is 405."""
    server = webservers["loopback"]
    answer = httpx.get(server.url("graphql"), params={"query": STOP_SCHEDULE})
    assert answer.status_code == 405 and "POST" in answer.text
    assert httpx.get(server.url("graphql"), params={"query": "mutation{"}).status_code == 405  # unreadable
    reading = httpx.get(server.url("graphql"), params={"query": "{ version }"})
    assert reading.status_code == 200 and reading.json()["data"]["version"]


def test_a_cross_site_post_is_refused_and_a_same_site_one_runs(webservers: dict[str, Webserver]) -> None:
    server = webservers["loopback"]
    body = {"query": PERMISSIONS}
    foreign = httpx.post(server.url("graphql"), json=body, headers={"Origin": "http://attacker.example"})
    assert foreign.status_code == 403 and "cross-site" in foreign.text
    own = httpx.post(server.url("graphql"), json=body, headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert own.status_code == 200 and own.json()["data"]["permissions"]
    # A form POST (no preflight) carrying its query in the URL, as Dagster would read it.
    form = httpx.post(server.url("graphql"), params={"query": STOP_SCHEDULE}, data={"x": "1"})
    assert form.status_code == 415


def test_the_default_loopback_ui_is_writable(webservers: dict[str, Webserver]) -> None:
    answer = httpx.post(webservers["loopback"].url("graphql"), json={"query": PERMISSIONS}).json()
    permissions = {p["permission"]: p["value"] for p in answer["data"]["permissions"]}
    assert permissions["launch_pipeline_execution"] and permissions["stop_running_schedule"]


def test_a_public_address_serves_read_only_without_an_explicit_flag(webservers: dict[str, Webserver]) -> None:
    """``lgm serve --host 0.0.0.0``: anyone who reaches the port would launch runs; Dagster has no login."""
    answer = httpx.post(webservers["public"].url("graphql"), json={"query": PERMISSIONS}).json()
    permissions = {p["permission"]: p["value"] for p in answer["data"]["permissions"]}
    assert not permissions["launch_pipeline_execution"] and not permissions["stop_running_schedule"]


def test_the_web_flags_of_serve_and_up() -> None:
    parse = build_parser().parse_args
    for command in ("serve", "up"):
        assert not _web_access(parse([command])).read_only
        public = _web_access(parse([command, "--host", "0.0.0.0"]))
        assert public.read_only and "--allow-mutations" in (public.reason or "")
        assert not _web_access(parse([command, "--host", "0.0.0.0", "--allow-mutations"])).read_only
        assert _web_access(parse([command, "--read-only"])).read_only
        named = _web_access(parse([command, "--allowed-host", "dagster.corp.example"]))
        assert named.allowed_hosts == ("dagster.corp.example",)


def _asgi_status(guard: WebGuard, scope: dict[str, object]) -> int | str:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    first = sent[0]
    return first["status"] if first["type"] == "http.response.start" else str(first["type"])  # type: ignore[return-value]


def test_the_guard_on_websockets_and_behind_a_proxy() -> None:
    async def dagster(scope: object, receive: object, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})

    guard = WebGuard(dagster, ["dagster.corp.example"])

    def scope(kind: str, method: str, **headers: str) -> dict[str, object]:
        raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        return {"type": kind, "method": method, "path": "/graphql", "query_string": b"", "headers": raw}

    # Cross-site WebSocket hijacking: the handshake is closed before Dagster accepts it.
    hijack = scope("websocket", "GET", host="127.0.0.1:3000", origin="http://attacker.example")
    assert _asgi_status(guard, hijack) == "websocket.close"
    # A proxy with its public name allowed, and one that rewrites Host but says X-Forwarded-Host.
    named = scope("http", "POST", host="dagster.corp.example", origin="https://dagster.corp.example")
    named["headers"].append((b"content-type", b"application/json"))  # type: ignore[union-attr]
    assert _asgi_status(guard, named) == 200
    rewritten = scope("http", "POST", host="10.0.0.5:3000", origin="https://ui.example", x_forwarded_host="ui.example")
    rewritten["headers"].append((b"content-type", b"application/json"))  # type: ignore[union-attr]
    assert _asgi_status(guard, rewritten) == 200
    assert _asgi_status(guard, scope("http", "GET", host="ui.example")) == 403  # not allowed by name


def test_the_simulator_admin_api_lists_no_key() -> None:
    with start_simulator(SimulatorConfig(tenants=3, rate_limit_per_minute=None)) as sim:
        listing = httpx.get(f"{sim.admin_url}/tenants", timeout=10)
    assert listing.status_code == 200
    assert all(key not in listing.text for key in sim.api_keys)
    fingerprints = listing.json()["api_key_fingerprints"]
    assert len(set(fingerprints)) == 3 and all(f.startswith("sha256:") and len(f) == 19 for f in fingerprints)


# --- 7. bad input at the edge ----------------------------------------------------------------------------------


def _one_lgm_line(err: str) -> str:
    [line] = [x for x in err.splitlines() if x.strip()]
    return line


@pytest.mark.parametrize("day", ["2001-01-01", "9999-12-31"])
def test_sync_refuses_a_date_outside_the_partitions_at_once(database_url: str, day: str, capsys) -> None:
    tenant = load_tenants()[0]
    started = time.monotonic()
    assert main(["sync", "--date", day]) == 2
    assert time.monotonic() - started < 30  # no run, no retries: before anything starts
    line = _one_lgm_line(capsys.readouterr().err)
    last = tenant.today() + dt.timedelta(days=tenant.max_days_ahead())
    assert line == (
        f"lgm: --date {day} is outside tenant {tenant.key}'s service dates: "
        f"{tenant.first_service_date.isoformat()} (first_service_date) to {last.isoformat()} (its branches' tomorrow)"
    )


class _RecordingPostgres(PostgresResource):
    """Records what retention would delete instead of deleting it."""

    def prune_history(self, tenant, keep_days, today):  # type: ignore[no-untyped-def, override]
        PRUNED.append(keep_days)
        return {}


PRUNED: list[int] = []


@pytest.mark.parametrize("keep_days", [-1, 0, 100_000])
def test_retention_refuses_keep_days_out_of_bounds_before_deleting(keep_days: int) -> None:
    PRUNED.clear()
    asset = build_retention_asset(load_tenants()[0])
    result = dg.materialize(
        [asset],
        resources={"postgres": _RecordingPostgres()},
        run_config={"ops": {asset.op.name: {"config": {"keep_days": keep_days}}}},
        raise_on_error=False,
    )
    assert not result.success and PRUNED == []
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error
    texts = []
    while error is not None:
        texts.append(error.message)
        error = error.cause
    assert any(
        f"history_retention.keep_days is {keep_days}: it must be a whole number of days from 1 to 3650" in t
        for t in texts
    ), texts


def test_retention_keeps_working_within_bounds() -> None:
    PRUNED.clear()
    asset = build_retention_asset(load_tenants()[0])
    run_config = {"ops": {asset.op.name: {"config": {"keep_days": 30}}}}
    assert dg.materialize([asset], resources={"postgres": _RecordingPostgres()}, run_config=run_config).success
    assert PRUNED == [30]


@pytest.mark.parametrize(("endpoint", "exit_code"), [("ping", 1), ("branches", 3)])
def test_check_connection_reports_a_403_as_forbidden(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys, endpoint: str, exit_code: int
) -> None:
    """A 403 proves SmartMoving knows the key, not that it may be used: never a bare "key valid: True"."""
    config = SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=5)
    with start_simulator(config) as sim:
        sim.set_faults(FaultConfig(endpoint_status={endpoint: 403}))
        monkeypatch.setenv("SMARTMOVING_BASE_URL", sim.base_url)
        monkeypatch.setenv("SMARTMOVING_API_KEY", sim.api_key)
        assert main(["check-connection"]) == exit_code  # 1 unusable, 3 partial (README)
    out = capsys.readouterr().out
    assert "key valid: True" not in out
    [key_line] = [x for x in out.splitlines() if "key:" in x]
    where = " on /api/branches" if endpoint == "branches" else ""
    assert key_line.endswith(f"key: recognised but forbidden{where} (403): this key is not allowed that call")
