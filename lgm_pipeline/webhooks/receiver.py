"""The webhook receiver: ``POST /webhooks/smartmoving/{tenant}/{token}`` stores the delivery, then answers.

SmartMoving signs nothing, so the URL is the secret: a token per tenant, read at start-up from the variable
its ``smartmoving.webhook_token_env`` names. A tenant without the setting, or whose variable is unset,
takes no webhooks: every request for it is a 404.

- Unknown tenant or wrong token: 404, the same body as any unknown path (nothing says which part was
  wrong). Nothing logged holds the path: uvicorn's access log is off; our own line names the tenant key,
  the status and the event type only.
- Bodies over 64 KiB: 413 without reading further (Content-Length, or counted while streaming).
- Not JSON: 400. JSON, read or not: stored in ``webhook_events`` and committed, then 200
  ``{"stored": true}`` (``false``: the same delivery already waits). Unknown event types too (ignored).
- PostgreSQL unreachable: 503 with ``Retry-After``: SmartMoving retries, nothing is lost on our side.
- A flood: uvicorn's ``limit_concurrency`` answers 503 past a bound number of open requests, the body
  limit bounds each, and the insert runs in the threadpool so the event loop keeps answering.

``GET /webhooks/health`` answers 200 for probes (the process is up; it does not ask the database).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

import sqlalchemy as sa
import uvicorn
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from lgm_pipeline.settings import secret
from lgm_pipeline.smartmoving.redaction import Redactor
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline.webhooks.events import MalformedBody, read_event
from lgm_pipeline.webhooks.inbox import store_event

log = logging.getLogger(__name__)

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8790
WEBHOOK_ROUTE = "/webhooks/smartmoving/{tenant}/{token}"
HEALTH_PATH = "/webhooks/health"
#: SmartMoving's payloads are a few hundred bytes; anything near this is not one of them.
MAX_BODY_BYTES = 64 * 1024
#: Requests served at once; past it uvicorn answers 503 itself, so a flood costs bounded memory.
LIMIT_CONCURRENCY = 64
#: What a 503 asks the sender to wait before retrying (the database restarting, typically).
RETRY_AFTER_S = 30
#: Shorter than a token is guessable over the Internet in a day of requests: said at start-up.
MIN_TOKEN_LENGTH = 24
#: What a token may hold: the characters a URL path segment carries unencoded (token_urlsafe's and more).
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~-]+")
#: The longest event type shown in a log line (the value is the sender's, not ours).
_MAX_LOGGED = 60

_NOT_FOUND = "Not Found"  # Starlette's body for any unknown path: a wrong token reads the same
#: Errors meaning the database cannot be reached now (not that the statement is wrong): the sender retries.
_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, sa.exc.DisconnectionError)


def webhook_url(host: str, port: int, tenant: str, token: str) -> str:
    """The URL SmartMoving (or the simulator) POSTs a tenant's events to. It holds the token: never log it."""
    return f"http://{host}:{port}/webhooks/smartmoving/{quote(tenant, safe='')}/{quote(token, safe='')}"


def tenant_tokens(
    tenants: Iterable[Tenant], environ: Mapping[str, str] | None = None, say: Callable[[str], None] | None = None
) -> dict[str, str]:
    """Tenant key -> webhook token, for the tenants that take webhooks; ``say`` hears why others do not.

    Only variable names are ever said, never a value."""
    tokens: dict[str, str] = {}
    for tenant in tenants:
        name = tenant.smartmoving.webhook_token_env
        value = (secret(name) if environ is None else environ.get(name)) if name else None
        token = (value or "").strip()
        if name and token and not _TOKEN_RE.fullmatch(token):
            if say:
                say(
                    f"webhooks: tenant {tenant.key} takes no webhooks: {name} holds characters a URL path cannot "
                    "carry as they are (use letters, digits and - _ . ~): its URL answers 404"
                )
        elif name and token:
            tokens[tenant.key] = token
            if say and len(token) < MIN_TOKEN_LENGTH:
                say(
                    f"webhooks: tenant {tenant.key}: {name} is shorter than {MIN_TOKEN_LENGTH} characters: "
                    "use a long random secret (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        elif say:
            why = f"{name} is not set" if name else "no smartmoving.webhook_token_env in tenants.yaml"
            say(f"webhooks: tenant {tenant.key} takes no webhooks ({why}): its URL answers 404")
    return tokens


def _logged(value: str | None) -> str:
    """An event type as the sender spelt it, safe on one log line (no control characters, bounded)."""
    if value is None:
        return "-"
    shown = value.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= _MAX_LOGGED else shown[: _MAX_LOGGED - 3] + "..."


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The body, refusing (``_TooLarge``) past ``MAX_BODY_BYTES`` without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(engine: Engine, tenants: Iterable[Tenant], tokens: Mapping[str, str]) -> Starlette:
    """The receiver for ``tenants``; only those with a token in ``tokens`` (key -> token) take webhooks."""
    by_key = {t.key: t for t in tenants if tokens.get(t.key)}
    expected = {key: tokens[key].encode("utf-8") for key in by_key}
    # Compared against when the tenant is unknown, so both paths do the same work.
    decoy = os.urandom(32)
    # A sender echoing a token back (in its event type) must not put it in our log either.
    redactor = Redactor(expected_token for expected_token in tokens.values() if expected_token)

    def tenant_for(key: str, token: str) -> Tenant | None:
        given = token.encode("utf-8", errors="replace")
        matches = hmac.compare_digest(given, expected.get(key, decoy))
        return by_key[key] if matches and key in by_key else None

    def answer(tenant_key: str, response: Response, event_type: str | None = None) -> Response:
        shown = _logged(None if event_type is None else redactor.redact(event_type))
        log.info("webhook tenant=%s status=%d event=%s", tenant_key, response.status_code, shown)
        return response

    async def receive(request: Request) -> Response:
        key, token = request.path_params["tenant"], request.path_params["token"]
        tenant = tenant_for(key, token)
        if tenant is None:
            # The key is the sender's text: logged only when it is a tenant of ours.
            return answer(key if key in by_key else "?", PlainTextResponse(_NOT_FOUND, status_code=404))
        try:
            body = await _read_body(request)
        except _TooLarge:
            too_large = JSONResponse(
                {"error": f"the body is over {MAX_BODY_BYTES} bytes"},
                status_code=413,
                headers={"Connection": "close"},  # what was not read stays unread
            )
            return answer(key, too_large)
        try:
            event = read_event(body)
        except MalformedBody as malformed:
            return answer(key, JSONResponse({"error": malformed.reason}, status_code=400))
        try:
            stored = await run_in_threadpool(store_event, engine, tenant, body, event)
        except _UNAVAILABLE as error:
            log.warning("webhook tenant=%s: PostgreSQL unavailable (%s): answered 503", key, type(error).__name__)
            unavailable = JSONResponse(
                {"error": "the inbox is unavailable; retry later"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            return answer(key, unavailable, event.event_type)
        except sa.exc.SQLAlchemyError as error:
            # Not the sender's fault and not transient (a schema not migrated): 500, and only the class
            # logged, as the statement's parameters hold the payload.
            log.error("webhook tenant=%s: storing failed (%s)", key, type(error).__name__)
            return answer(key, JSONResponse({"error": "storing failed"}, status_code=500), event.event_type)
        return answer(key, JSONResponse({"stored": stored}), event.event_type)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route(WEBHOOK_ROUTE, receive, methods=["POST"]), Route(HEALTH_PATH, health, methods=["GET"])]
    )


class ReceiverServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the signal that stopped it: a stop on request exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # a server in a thread (tests) is stopped through should_exit
            return
        originals = {signo: signal.signal(signo, self.handle_exit) for signo in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signo, handler in originals.items():
                signal.signal(signo, handler)


def server_config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        access_log=False,  # it prints the path, and the path holds the token
        log_level="warning",
        lifespan="off",
        limit_concurrency=LIMIT_CONCURRENCY,
        timeout_graceful_shutdown=5,  # Ctrl-C waits for the inserts in flight, not for idle keep-alives
        server_header=False,
    )


class PortInUseError(OSError):
    """The port cannot be bound; the message names it and the flag that chose it."""


def bind(host: str, port: int, flag: str = "--port") -> socket.socket:
    """The listening socket, bound before anything else starts, so a taken port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PortInUseError(
            f"port {port} on {host} is in use or not available ({flag}): {error.strerror or error}"
        ) from None
    return sock


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def serve(
    host: str,
    port: int,
    tenants: Iterable[Tenant],
    engine: Engine,
    environ: Mapping[str, str] | None = None,
    say: Callable[[str], None] = _say,
    sock: socket.socket | None = None,
) -> int:
    """Receive until SIGINT/SIGTERM, then finish the requests in flight; 0 when stopped on request.

    ``sock``: the socket :func:`bind` gave for host:port, when the caller bound it before a slow start."""
    tenants = tuple(tenants)
    sock = sock or bind(host, port)
    with contextlib.closing(sock):
        tokens = tenant_tokens(tenants, environ, say)
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        server = ReceiverServer(server_config(create_app(engine, tenants, tokens)))
        taking = ", ".join(sorted(tokens)) or "none"
        say(f"webhooks: receiving on http://{host}:{port}{WEBHOOK_ROUTE} (tenants taking webhooks: {taking})")
        server.run(sockets=[sock])
    return 0
