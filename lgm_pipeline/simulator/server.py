"""Running the simulator: in a background thread for tests, or in the foreground for the CLI."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from lgm_pipeline.simulator.app import QUIET_DROPS, ApiState, Tenants, create_app
from lgm_pipeline.simulator.config import FaultConfig, SimulatorConfig, WebhookFaults
from lgm_pipeline.simulator.webhooks import origin
from lgm_pipeline.simulator.world import World

_STARTUP_TIMEOUT_SECONDS = 10.0


def _bind(host: str, port: int) -> socket.socket:
    # Binding before uvicorn starts is what makes port 0 usable: the free port is known at once.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server(config: SimulatorConfig, host: str, port: int) -> tuple[uvicorn.Server, Tenants]:
    logging.getLogger("uvicorn.error").addFilter(QUIET_DROPS)
    app = create_app(None, config)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(uv_config), app.state.tenants


class RunningSimulator:
    """A simulator serving on loopback from a daemon thread; use as a context manager.

    ``world``, ``api_key`` and the stats and faults methods are tenant 1's; with
    ``config.tenants`` > 1, ``api_keys[i - 1]``, ``tenant_world(i)`` and the ``tenant=`` arguments
    reach tenant i.
    """

    def __init__(self, config: SimulatorConfig, port: int = 0) -> None:
        self.config = config
        self.api_keys: list[str] = config.api_keys()
        self.api_key = self.api_keys[0]
        self._socket = _bind("127.0.0.1", port)
        self.port: int = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.admin_url = f"http://127.0.0.1:{self.port}/_admin"
        self._server, self._tenants = _server(config, "127.0.0.1", self.port)
        # Tenant 1's state under its old name: tests reach in to swap its clock.
        self._state: ApiState = self._tenants.state(1)
        self.world: World = self._state.world
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="smartmoving-simulator", daemon=True
        )

    def _start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError("SmartMoving simulator thread exited during startup")
            try:
                if httpx.get(f"{self.admin_url}/stats", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"SmartMoving simulator did not answer within {_STARTUP_TIMEOUT_SECONDS}s")

    def _tenant_state(self, tenant: int) -> ApiState:
        return self._tenants.state(tenant)

    def tenant_world(self, tenant: int) -> World:
        """Tenant ``tenant``'s world (1-based), built now if no request has needed it yet."""
        return self._tenant_state(tenant).world

    @property
    def worlds(self) -> list[World]:
        """Every tenant's world, in tenant order; builds the ones not yet used (cheap: dates stay lazy)."""
        return [self.tenant_world(i) for i in range(1, len(self.api_keys) + 1)]

    def stats(self, tenant: int = 1) -> dict[str, int]:
        return self._tenant_state(tenant).stats()

    def reset_stats(self, tenant: int = 1) -> None:
        self._tenant_state(tenant).reset_stats()

    def set_drift(self, enabled: bool, tenant: int = 1) -> None:
        """Serve tenant ``tenant``'s world in the drifted shapes (``simulator/drift.py``) or the plain ones."""
        self._tenant_state(tenant).drift = enabled

    def set_faults(self, faults: FaultConfig, tenant: int = 1) -> None:
        self._tenant_state(tenant).set_faults(faults)

    @property
    def faults(self) -> FaultConfig:
        return self._tenant_state(1).faults

    def set_webhooks(self, url: str | None, faults: WebhookFaults | None = None, tenant: int = 1) -> dict[str, Any]:
        """POST tenant ``tenant``'s changes to ``url`` (None: stop), with ``faults`` (None: none); returns the settings.

        The admin route's twin: ``POST /_admin/webhooks?tenant=i``.
        """
        return self._tenant_state(tenant).set_webhooks(url, faults)

    def webhook_stats(self, tenant: int = 1) -> dict[str, Any]:
        """The settings and counters, as ``GET /_admin/webhooks`` answers them."""
        return self._tenant_state(tenant).webhook_stats()

    def flush_webhooks(self, timeout: float = 10, tenant: int = 1) -> bool:
        """Wait until tenant ``tenant`` has no webhook pending; False if ``timeout`` seconds passed first."""
        return self._tenant_state(tenant).webhooks.flush(timeout)

    def stop(self) -> None:
        self._server.should_exit = True
        # Webhook threads first: their retries and delays wait on a stop signal, so this is quick.
        self._tenants.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_simulator(config: SimulatorConfig | None = None, port: int = 0) -> RunningSimulator:
    """Start a simulator on 127.0.0.1 (port 0 picks a free port); returns once it answers."""
    simulator = RunningSimulator(config or SimulatorConfig(), port)
    simulator._start()
    return simulator


def serve_forever(config: SimulatorConfig, port: int, host: str = "127.0.0.1") -> None:
    """Serve in the foreground until Ctrl-C (the ``lgm`` CLI's simulator command)."""
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    server, tenants = _server(config, host, bound)
    url = f"http://{host}:{bound}/v1"
    if config.tenants == 1:
        print(f"SmartMoving simulator listening on {url} (api key: {config.api_key})", flush=True)
    else:
        # Two lines for any N: a thousand keys would not fit a screen, and they follow one rule.
        last = config.tenants
        print(f"SmartMoving simulator listening on {url} ({last} tenants)", flush=True)
        print(
            f"tenant i = 1..{last}: api key {config.api_key}-t<i> (e.g. {config.tenant_api_key(1)} .. "
            f"{config.tenant_api_key(last)}), seed {config.seed}+i-1; /_admin/...?tenant=i (default 1); "
            "GET /_admin/tenants lists the tenants and their keys' fingerprints",
            flush=True,
        )
    if config.webhook_url:
        # The origin only: the URL's path or query holds the receiver's secret token.
        where = origin(config.tenant_webhook_url(1))
        print(f"webhooks: POSTed to {where}{' (per tenant)' if '{tenant}' in config.webhook_url else ''}", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully, then re-raises the signal; Ctrl-C is the normal way out.
        pass
    finally:
        tenants.close()
        sock.close()
