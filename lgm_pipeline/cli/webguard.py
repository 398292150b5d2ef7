"""An ASGI guard in front of Dagster's webserver: the browser of the operator is not a trust boundary.

Dagster's webserver (1.13) has no authentication and no Host check, and executes GraphQL sent over GET
(``/graphql?query=mutation{stopRunningSchedule(...)}``). Bound to loopback it is still reachable from any
page the operator's browser opens: by a plain cross-site request (an ``<img>``, a form POST) or by DNS
rebinding (a name of the attacker's that resolves to 127.0.0.1 after the page loaded: the browser then
calls it same-origin). Its ``--read-only`` flag turns mutations off but leaves that open for a writable UI.
So every HTTP request and WebSocket handshake passes these checks before Dagster sees it:

1. ``Host`` must name this server: an IP literal (a browser that connected to an address by number cannot
   have been rebound), ``localhost`` or ``*.localhost`` (browsers resolve those to loopback themselves), or
   one of the names in ``LGM_WEBSERVER_ALLOWED_HOSTS`` (``lgm serve --allowed-host``; the name the
   operator's proxy forwards). Otherwise 403: this is what defeats DNS rebinding.
2. ``Origin``, when a browser sends one, must be this very server (its host and port equal ``Host``):
   a cross-site POST or WebSocket is refused, 403. Clients that send no ``Origin`` (curl, Dagster's
   GraphQL client) are not browsers on a foreign page and pass.
3. GraphQL over GET may only read: a document with a mutation (or one that does not parse) is refused,
   405, since a cross-site GET carries no ``Origin`` to judge it by.
4. GraphQL over POST must be ``application/json`` or ``application/graphql``: the types a foreign page
   cannot send without a CORS preflight (which Dagster never grants). Dagster would otherwise read a form
   POST's query from its URL. Else 415.

Refusals are one plain-text line naming the setting that would allow the request, when there is one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Comma-separated host names (no port) the webserver answers besides IP literals and localhost.
from lgm_pipeline.settings import ALLOWED_HOSTS_ENV, webserver_allowed_hosts

#: Content types a browser page cannot POST cross-site without a CORS preflight.
GRAPHQL_POST_TYPES = ("application/json", "application/graphql")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def host_name(value: str) -> str:
    """The name part of a ``Host`` header or netloc: no port, no IPv6 brackets, lower case, no final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    """Whether a bind address (``--host``) only accepts connections from this machine."""
    name = host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_hosts_from_env() -> frozenset[str]:
    return frozenset(host_name(n) for n in webserver_allowed_hosts())


def host_is_allowed(name: str, allowed: Iterable[str]) -> bool:
    return is_ip_literal(name) or name == "localhost" or name.endswith(".localhost") or name in set(allowed)


def graphql_mutation_or_unreadable(query: str) -> bool:
    """Whether a GraphQL document contains a mutation, or cannot be parsed (so cannot be vouched for)."""
    from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse

    try:
        document = parse(query)
    except GraphQLError:
        return True
    return any(
        isinstance(d, OperationDefinitionNode) and d.operation is OperationType.MUTATION for d in document.definitions
    )


class WebGuard:
    """Wraps an ASGI app (Dagster's webserver) with the checks of the module docstring."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed_hosts = frozenset(host_name(n) for n in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, text = refusal
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": text[:120]})
            return
        body = (text + "\n").encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """``(status, one line)`` when the request must not reach Dagster, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name = host_name(host)
        if not name:
            return 400, "lgm: a request without a Host header is refused"
        if not host_is_allowed(name, self.allowed_hosts):
            return 403, (
                f"lgm: Host {name!r} is not a name of this server (DNS rebinding guard): open the UI by its address, "
                f"or allow the name with --allowed-host {name} ({ALLOWED_HOSTS_ENV})"
            )
        origin = headers.get("origin")
        method = scope.get("method", "GET").upper()
        if origin is not None and (scope["type"] == "websocket" or method not in ("GET", "HEAD", "OPTIONS")):
            netloc = urlsplit(origin).netloc.lower() if origin != "null" else ""
            # A proxy that rewrites Host to its upstream says the public one in X-Forwarded-Host, a header a
            # foreign page cannot set without a CORS preflight.
            own = {host.strip().lower(), headers.get("x-forwarded-host", "").split(",")[0].strip().lower()}
            if netloc not in own - {""}:
                return 403, f"lgm: cross-site request refused: Origin {origin!r} is not this server ({host})"
        path = scope.get("path", "")
        if scope["type"] == "http" and path.rstrip("/").endswith("/graphql"):
            if method in ("GET", "HEAD"):
                query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("query")
                if query and any(graphql_mutation_or_unreadable(q) for q in query):
                    return 405, "lgm: GraphQL mutations are only accepted over POST (application/json)"
            elif method == "POST":
                content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
                if content_type not in GRAPHQL_POST_TYPES:
                    return 415, "lgm: GraphQL over POST must be application/json or application/graphql"
        return None
