"""``lgm serve``: the production topology on one machine, each Dagster service its own OS process.

::

    lgm serve ─┬─ code server  python -m dagster api grpc -h 127.0.0.1 -p CODE_PORT -m lgm_pipeline.definitions
               │               loads the definitions; launches each run as a worker process of its own
               ├─ daemon       python -m dagster._daemon run -w $LGM_HOME/dagster/workspace-grpc.yaml
               ├─ webserver    python -m lgm_pipeline.cli.webserver -h HOST -p PORT -w (the same workspace)
               │               Dagster's webserver behind a Host/Origin guard (cli/webguard.py)
               └─ webhooks     python -m lgm_pipeline.cli.main webhooks serve --host HOST --port WEBHOOK_PORT
                               SmartMoving's webhook receiver (webhooks/receiver.py): stores each delivery

The Dagster services share the instance (``DAGSTER_HOME``: its PostgreSQL storage, run queue, pools) and reach the
code over gRPC only, as the containers of ``deploy/docker-compose.yaml`` do; ``lgm up``'s ``dagster dev``
instead loads the code inside the processes it manages, and a crash there takes the UI with it.

- The code server starts first; the daemon, the webserver and the webhook receiver start once it answers a
  gRPC ping, so neither begins with the code location in error.
- A code server that dies after it answered is reported in one line and started again: the daemon and
  the webserver reconnect by themselves, so a crash in user code costs at most the ticks it missed.
- The daemon, the webserver or the webhook receiver dying, or the code server dying before it ever
  answered: one line, the other services are stopped, exit 1 (a supervisor such as systemd restarts the
  whole). A receiver that is down loses nothing: SmartMoving retries, and the 2-hour cycle reconciles.
- SIGINT/SIGTERM: every service gets SIGTERM (the code server's run workers too: they share its
  process group), whatever is left after ``STOP_TIMEOUT_S`` or a second signal gets SIGKILL; exit 0.

The webserver refuses requests whose ``Host`` is not this server's (DNS rebinding), cross-site POSTs and
WebSockets, and GraphQL mutations over GET (``cli/webguard.py``). Bound to an address other machines can
reach, it runs ``--read-only`` unless the operator says an authenticating proxy stands in front
(``--allow-mutations``): Dagster has no login of its own, and anyone reaching a writable UI can launch runs.

Each service runs in its own process group: a Ctrl-C in the terminal would otherwise reach all of them
(and the run workers) at the same moment, behind our back, and we could not tell a stop from a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import httpx

from lgm_pipeline.cli.runtime import (
    SetupError,
    code_location,
    dagster_process_env,
    default_signals,
    generated_file,
    grpc_workspace_text,
    missing_smartmoving_settings,
)
from lgm_pipeline.cli.webguard import ALLOWED_HOSTS_ENV, is_loopback_host
from lgm_pipeline.tenants import Tenant, load_tenants

#: Exit codes: stopped on request; a service died; settings to fix (ports taken) — as ``lgm_pipeline.cli.main``.
EXIT_STOPPED, EXIT_SERVICE_DIED, EXIT_CONFIGURATION = 0, 1, 2
#: The code server binds loopback only: the daemon and the webserver are its only clients.
CODE_HOST = "127.0.0.1"
GRPC_WORKSPACE = "workspace-grpc.yaml"
#: Loading the definitions of every tenant takes seconds; a first start on a busy 2-core machine, more.
CODE_READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.5
#: The webhook receiver's default port (webhooks.receiver.DEFAULT_PORT, literal: see cli/main.py).
WEBHOOK_PORT = 8790


@dataclass(frozen=True)
class WebAccess:
    """How the webserver is exposed: the names it answers to besides its addresses, and whether it may write."""

    read_only: bool
    allowed_hosts: tuple[str, ...] = ()
    #: Why it is read-only, for the one line printed at start (None: asked for, or writable).
    reason: str | None = None


def web_access(host: str, read_only: bool, allow_mutations: bool, allowed_hosts: Sequence[str] = ()) -> WebAccess:
    """Writable on loopback; read-only on an address others reach unless ``--allow-mutations`` says a proxy
    authenticates in front. ``--read-only`` always wins."""
    if read_only:
        return WebAccess(True, tuple(allowed_hosts))
    if not allow_mutations and not is_loopback_host(host):
        reason = (
            f"webserver: read-only: --host {host} is reachable from other machines and Dagster has no login; "
            "put an authenticating proxy in front and pass --allow-mutations to launch runs from the UI"
        )
        return WebAccess(True, tuple(allowed_hosts), reason)
    return WebAccess(False, tuple(allowed_hosts))


@dataclass
class Service:
    name: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    #: Process groups of earlier incarnations: a killed code server's run workers live on in its group.
    earlier_groups: list[int] = field(default_factory=list)

    def start(self) -> None:
        if self.process is not None:
            self.earlier_groups.append(self.process.pid)
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: see the module docstring
            preexec_fn=default_signals,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal_group(self, signo: int) -> None:
        groups = [*self.earlier_groups, *([self.process.pid] if self.process is not None else [])]
        for group in groups:
            # A group outlives its leader while a member (a run worker) is still running.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signo)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _code_server_answers(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=port, host=CODE_HOST).ping("lgm")
    except Exception:  # any failure means "not yet": the caller bounds the wait
        return False
    return True


def _webserver_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _receiver_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/webhooks/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def webhook_url_lines(url: str, tenants: Sequence[Tenant]) -> list[str]:
    """``Webhooks: <url>/webhooks/smartmoving/<tenant>/$VARIABLE`` per tenant taking webhooks: the
    variable's NAME stands for the token, whose value is never printed."""
    return [
        f"Webhooks: {url}/webhooks/smartmoving/{t.key}/${t.smartmoving.webhook_token_env}"
        for t in tenants
        if t.smartmoving.webhook_token_env
    ]


class Topology:
    """The four services and the signals that stop them."""

    def __init__(
        self,
        host: str,
        port: int,
        code_port: int,
        verbose: bool,
        say: Callable[[str], None],
        access: WebAccess | None = None,
        webhook_port: int = WEBHOOK_PORT,
    ) -> None:
        location = code_location()
        workspace = generated_file(GRPC_WORKSPACE, grpc_workspace_text(location, CODE_HOST, code_port))
        env = dagster_process_env(verbose)
        access = access or web_access(host, read_only=False, allow_mutations=False)
        web_env = {**env, ALLOWED_HOSTS_ENV: ",".join(access.allowed_hosts)}
        web_flags = ["--read-only"] if access.read_only else []
        python = sys.executable
        grpc = ["-h", CODE_HOST, "-p", str(code_port), "-m", location.module_name]
        self.code = Service(
            "code server",
            [python, "-m", "dagster", "api", "grpc", *grpc, "--location-name", location.location_name],
            env,
        )
        self.daemon = Service("daemon", [python, "-m", "dagster._daemon", "run", "-w", str(workspace)], env)
        self.webserver = Service(
            "webserver",
            [python, "-m", "lgm_pipeline.cli.webserver", "-h", host, "-p", str(port), "-w", str(workspace), *web_flags],
            web_env,
        )
        # Through `lgm`: it sets up the database as every command does, and reads the tokens at start-up.
        self.receiver = Service(
            "webhook receiver",
            [python, "-m", "lgm_pipeline.cli.main", "webhooks", "serve", "--host", host, "--port", str(webhook_port)],
            env,
        )
        self.receiver_url = f"http://{host}:{webhook_port}"
        self.access = access
        self.code_port = code_port
        self.url = f"http://{host}:{port}"
        self.say = say
        self.signals: list[int] = []
        self._stop = threading.Event()

    @property
    def services(self) -> tuple[Service, ...]:
        return self.code, self.daemon, self.webserver, self.receiver

    def _on_signal(self, signo: int, frame: FrameType | None) -> None:
        self.signals.append(signo)
        self._stop.set()

    def run(self) -> int:
        # No Dagster code runs in this process, so plain handlers see every signal (cf. cli/signals.py).
        for signo in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signo, self._on_signal)
        try:
            return self._supervise()
        finally:
            self._stop_all()

    def _start_code_server(self) -> bool:
        """Start it and wait until it answers; False when it died first or we were asked to stop."""
        self.code.start()
        self.say(f"code server: pid {self.code.pid}, gRPC {CODE_HOST}:{self.code_port}")
        deadline = time.monotonic() + CODE_READY_TIMEOUT_S
        while not self._stop.is_set():
            returncode = self.code.returncode()
            if returncode is not None:
                self.say(f"lgm: the code server exited ({describe_exit(returncode)}) before it answered; stopping")
                return False
            if _code_server_answers(self.code_port):
                return True
            if time.monotonic() > deadline:
                self.say(f"lgm: the code server did not answer within {CODE_READY_TIMEOUT_S:.0f} s; stopping")
                return False
            self._stop.wait(POLL_S)
        return False

    def _supervise(self) -> int:
        if not self._start_code_server():
            return EXIT_STOPPED if self._stop.is_set() else EXIT_SERVICE_DIED
        for service in (self.daemon, self.webserver, self.receiver):
            service.start()
            self.say(f"{service.name}: pid {service.pid}")
        announced = receiver_announced = False
        while not self._stop.wait(POLL_S):
            if not receiver_announced and _receiver_answers(self.receiver_url):
                receiver_announced = True
                for line in webhook_url_lines(self.receiver_url, load_tenants()):
                    print(line, flush=True)
            if not announced and _webserver_answers(self.url):
                announced = True
                mode = "  read-only" if self.access.read_only else ""
                print(f"Dagster UI: {self.url}{mode}  (Ctrl-C stops everything)", flush=True)
            for service in self.services:
                returncode = service.returncode()
                if returncode is None:
                    continue
                if service is self.code:
                    self.say(
                        f"lgm: the code server (pid {service.pid}) exited ({describe_exit(returncode)}); restarting it"
                    )
                    if not self._start_code_server():
                        return EXIT_STOPPED if self._stop.is_set() else EXIT_SERVICE_DIED
                    continue
                self.say(
                    f"lgm: the {service.name} (pid {service.pid}) exited ({describe_exit(returncode)}); "
                    "stopping the other services"
                )
                return EXIT_SERVICE_DIED
        return EXIT_STOPPED

    def _stop_all(self) -> None:
        running = [s for s in self.services if s.process is not None]
        if not running:
            return
        for service in running:
            service.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        signals_seen = len(self.signals)
        while time.monotonic() < deadline and len(self.signals) <= max(signals_seen, 1):
            if all(s.returncode() is not None for s in running):
                break
            time.sleep(0.1)
        for service in running:
            # What did not stop in time (or everything, on a second signal), and any run worker left behind.
            service.signal_group(signal.SIGKILL)
        for service in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert service.process is not None
                service.process.wait(timeout=10)
        if self.signals:
            self.say("Stopped.")


def free_code_port() -> int:
    """A free loopback port for a code server nobody else needs to know (``lgm up``'s)."""
    with socket.socket() as sock:
        sock.bind((CODE_HOST, 0))
        return int(sock.getsockname()[1])


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_ports(host: str, port: int, code_port: int, webhook_port: int = WEBHOOK_PORT) -> None:
    wanted = (("--port", host, port), ("--code-port", CODE_HOST, code_port), ("--webhook-port", host, webhook_port))
    for what, bind_host, number in wanted:
        if not _port_is_free(bind_host, number):
            raise SetupError(f"port {number} on {bind_host} is in use ({what}): stop what holds it or pick another")


def serve(
    host: str,
    port: int,
    code_port: int,
    verbose: bool,
    access: WebAccess | None = None,
    webhook_port: int = WEBHOOK_PORT,
) -> int:
    """Run the topology until a signal or a service's death; the caller has set up the runtime."""
    check_ports(host, port, code_port, webhook_port)

    for tenant in load_tenants():
        missing = missing_smartmoving_settings(tenant)
        if missing:
            say(
                f"lgm: tenant {tenant.key}: {', '.join(missing)} not set: its SmartMoving runs will fail "
                "until it is (the other tenants run as usual)"
            )
    return run_topology(host, port, code_port, verbose, access, webhook_port)


def run_topology(
    host: str,
    port: int,
    code_port: int,
    verbose: bool,
    access: WebAccess | None = None,
    webhook_port: int = WEBHOOK_PORT,
) -> int:
    topology = Topology(host, port, code_port, verbose, say, access, webhook_port)
    if topology.access.reason:
        say(topology.access.reason)
    return topology.run()
