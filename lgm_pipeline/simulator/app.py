"""The Starlette application: SmartMoving's ``/v1/api`` plus the simulator's ``/_admin``.

Every ``/v1/api`` request goes through, in order: latency, dropped connection, ``down``, the API
key, the monthly quota, the per-minute rate limit, injected 5xx, an endpoint's fixed status
(``endpoint_status``: one endpoint out of the key's plan), then the endpoint. ``/_admin``
skips all of it (no key, no faults): it is for tests and operators on loopback.

Many tenants (``SimulatorConfig.tenants``): the ``x-api-key`` picks the tenant, and with it a
world, counters, limits and faults of its own (see ``Tenants``). An unknown key is counted, faulted
and refused as tenant 1's. Every ``/_admin`` endpoint acts on tenant 1 unless the query string (or
a POST's JSON body) says ``tenant=i``; ``GET /_admin/tenants`` lists the tenants, their seeds and
their keys' fingerprints (never a key: the admin API needs none, so whoever reaches it must not learn one).

Webhooks (``simulator/webhooks.py``): ``POST /_admin/webhooks {"url": "http://...", "faults":
{"duplicate_rate": 0.1}}`` sends the tenant's changes there (``"url": null`` stops; ``faults`` left out
means none); ``GET /_admin/webhooks`` answers the settings and the delivery counters.
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import datetime as dt
import json
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from lgm_pipeline.simulator import drift as shapes
from lgm_pipeline.simulator.config import FaultConfig, SimulatorConfig, WebhookFaults
from lgm_pipeline.simulator.webhooks import WebhookSender
from lgm_pipeline.simulator.world import NotFound, World, from_int_date, to_int_date

STAT_NAMES = (
    "ping",
    "customers",
    "opportunity",
    "opportunity_jobs",
    "branches",
    "rate_limited",
    "unauthorized",
    "errors",
    "dropped",
    "total",
)
DEFAULT_PAGE_SIZE = 50
MAX_DATE_SPAN_DAYS = 366
_RATE_WINDOW_SECONDS = 60
_KNOWN_STATUSES = frozenset(status.value for status in HTTPStatus)


class BadRequest(ValueError):
    """A request parameter the real API would refuse with 400."""


class DropConnection(Exception):
    """Raised after the response head is sent, so uvicorn closes the socket mid-response."""


class _QuietDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for every deliberately dropped connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DropConnection))


QUIET_DROPS = _QuietDrops()


class _DroppedResponse(Response):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        raise DropConnection("connection dropped by fault injection")


def _message(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


class ApiState:
    """Counters, limits and faults shared by the request handlers; one lock guards them."""

    def __init__(self, world: World, config: SimulatorConfig) -> None:
        self.world = world
        self.config = config
        self.faults = dataclasses.replace(config.faults)
        self.drift = config.drift
        self.clock: Callable[[], float] = time.time
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._windows: dict[str, tuple[int, int]] = {}
        self._monthly: Counter[tuple[str, int, int]] = Counter()
        self._fault_rng = random.Random(f"faults:{config.seed}")
        self._injected = 0
        # No thread and no subscription to the world until a URL is set: no cost for who sends no webhooks.
        self.webhooks = WebhookSender(seed=config.seed)
        if config.webhook_url:
            # for_tenant has already put a tenant's number in; what is left is a single tenant's template.
            self.set_webhooks(config.webhook_url.replace("{tenant}", "1"), config.webhook_faults)

    def count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {name: self._stats[name] for name in STAT_NAMES}

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()

    def set_faults(self, faults: FaultConfig) -> None:
        with self._lock:
            self.faults = dataclasses.replace(faults)

    def set_webhooks(self, url: str | None, faults: WebhookFaults | None = None) -> dict[str, Any]:
        """Send the world's changes to ``url`` (None: stop sending) with ``faults``; returns the settings."""
        with self._lock:
            self.webhooks.configure(url, faults)
            subscribed = self.webhooks.submit in self.world.on_change
            if url is not None and not subscribed:
                self.world.on_change.append(self.webhooks.submit)
            elif url is None and subscribed:
                self.world.on_change.remove(self.webhooks.submit)
            return self.webhooks.settings()

    def webhook_stats(self) -> dict[str, Any]:
        return {**self.webhooks.settings(), **self.webhooks.stats()}

    def draw_faults(self) -> tuple[bool, int | None]:
        """(drop the connection?, injected status or None) for the next request.

        Always two draws per request, so the sequence depends only on the request count.
        """
        with self._lock:
            drop_draw, error_draw = self._fault_rng.random(), self._fault_rng.random()
            drop = drop_draw < self.faults.drop_connection_rate
            if drop or error_draw >= self.faults.error_rate:
                return drop, None
            self._injected += 1
            return False, 500 if self._injected % 2 else 503

    def admit(self, key: str) -> JSONResponse | None:
        """Count the call against the key's quota and window, or say why it is refused."""
        now = self.clock()
        with self._lock:
            moment = dt.datetime.fromtimestamp(now, dt.UTC)
            month = (key, moment.year, moment.month)
            quota = self.config.monthly_quota
            if quota is not None and self._monthly[month] >= quota:
                # The real over-quota answer is undocumented; a 429 with the wait until the
                # month turns over lets a client tell it from the per-minute throttle.
                days = calendar.monthrange(moment.year, moment.month)[1]
                month_end = moment.replace(day=days, hour=0, minute=0, second=0, microsecond=0)
                wait = (month_end + dt.timedelta(days=1) - moment).total_seconds()
                return _message(
                    429,
                    "Monthly API call quota exceeded",
                    {"Retry-After": str(max(1, math.ceil(wait))), "X-Quota-Exceeded": "true"},
                )
            limit = self.config.rate_limit_per_minute
            if limit is not None:
                window = int(now // _RATE_WINDOW_SECONDS)
                current, used = self._windows.get(key, (window, 0))
                if current != window:
                    used = 0
                if used >= limit:
                    wait = (window + 1) * _RATE_WINDOW_SECONDS - now
                    return _message(429, "Too many requests", {"Retry-After": str(max(1, math.ceil(wait)))})
                self._windows[key] = (window, used + 1)
            self._monthly[month] += 1
            return None


class Tenants:
    """Each tenant's world and API state, built on first use so a thousand tenants start at once."""

    def __init__(self, config: SimulatorConfig, first_world: World | None = None) -> None:
        self.config = config
        self._count = config.tenants
        self._by_key = {key: i for i, key in enumerate(config.api_keys(), start=1)}
        self._lock = threading.Lock()
        # A single tenant keeps the caller's own config object, exactly as before tenants existed.
        first_config = config if config.tenants == 1 else config.for_tenant(1)
        first = first_world or World(first_config)
        self._states: dict[int, ApiState] = {1: ApiState(first, first_config)}

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Stop every built tenant's webhook thread."""
        with self._lock:
            states = list(self._states.values())
        for state in states:
            state.webhooks.stop()

    @property
    def api_keys(self) -> list[str]:
        return self.config.api_keys()

    def state(self, tenant: int) -> ApiState:
        with self._lock:
            state = self._states.get(tenant)
            if state is None:
                tenant_config = self.config.for_tenant(tenant)  # refuses a tenant out of range
                state = self._states[tenant] = ApiState(World(tenant_config), tenant_config)
            return state

    def by_key(self, key: str | None) -> ApiState | None:
        if self._count == 1:
            # Read live, as before tenants existed: tests switch config.api_key on a running simulator.
            return self.state(1) if key and key == self.config.api_key else None
        tenant = self._by_key.get(key) if key else None
        return None if tenant is None else self.state(tenant)

    def from_param(self, raw: object) -> ApiState:
        """The tenant an admin request names (``tenant=i``), tenant 1 when it names none."""
        if raw is None or raw == "":
            return self.state(1)
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError(f"tenant must be a number from 1 to {len(self)}, got {raw!r}")
        try:
            tenant = int(raw)
        except ValueError:
            raise ValueError(f"tenant must be a number from 1 to {len(self)}, got {raw!r}") from None
        return self.state(tenant)


Handler = Callable[[ApiState, Request, dict[str, str]], Awaitable[Response]]
# (offset, limit) -> (total, rows): the records of one list query, as a page needs them.
Lister = Callable[[int, int], tuple[int, list[dict[str, Any]]]]


def _int_param(params: dict[str, str], name: str, default: int | None) -> int | None:
    raw = params.get(name.lower())
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise BadRequest(f"The value '{raw}' is not valid for {name}.") from exc


def _date_param(params: dict[str, str], name: str) -> int | None:
    value = _int_param(params, name, None)
    if value is None:
        return None
    try:
        from_int_date(value)
    except ValueError as exc:
        raise BadRequest(f"The value '{value}' is not a valid yyyyMMdd date for {name}.") from exc
    return value


def _paging(params: dict[str, str], max_page_size: int) -> tuple[int, int]:
    """(Page, PageSize) as the API reads them: 1-based, the size capped by the server."""
    page = _int_param(params, "Page", 1) or 0
    size = _int_param(params, "PageSize", DEFAULT_PAGE_SIZE) or 0
    if page < 1:
        raise BadRequest("Page must be 1 or greater.")
    if size < 1:
        raise BadRequest("PageSize must be 1 or greater.")
    return page, min(size, max_page_size)


def _date_span(first: int | None, last: int | None, what: str) -> tuple[dt.date, dt.date] | None:
    """The [first, last] dates to generate (None: nothing to generate); a span over the limit is refused."""
    bounds = [d for d in (first, last) if d is not None]
    if not bounds:
        return None
    # A one-sided range generates only its given day; further days are seen once generated.
    lo, hi = from_int_date(bounds[0]), from_int_date(bounds[-1])
    if (hi - lo).days > MAX_DATE_SPAN_DAYS:
        raise BadRequest(f"The {what} range may not exceed {MAX_DATE_SPAN_DAYS} days.")
    return (lo, hi) if lo <= hi else None


def _bool_param(params: dict[str, str], name: str, default: bool) -> bool:
    raw = params.get(name.lower())
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise BadRequest(f"The value '{raw}' is not valid for {name}.")


def create_app(world: World | None, config: SimulatorConfig) -> Starlette:
    """The app for ``config.tenants`` tenants; ``world``, if given, is tenant 1's."""
    tenants = Tenants(config, world)

    def api(name: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            key = request.headers.get("x-api-key") or request.query_params.get("api-key")
            tenant = tenants.by_key(key)
            # The key is read first only to pick whose counters and faults apply; it is still
            # refused at its usual place in the order, after the faults.
            state = tenant or tenants.state(1)
            state.count("total")
            faults = state.faults
            if faults.latency_ms:
                await asyncio.sleep(faults.latency_ms / 1000)
            drop, injected = state.draw_faults()
            if drop:
                state.count("dropped")
                return _DroppedResponse()
            if faults.down:
                state.count("errors")
                return _message(503, "Service Unavailable")
            if tenant is None or key is None:
                state.count("unauthorized")
                return _message(401, "Unauthorized: missing or invalid API key")
            refused = state.admit(key)
            if refused is not None:
                state.count("rate_limited")
                return refused
            if injected is not None:
                state.count("errors")
                return _message(injected, "An unexpected error occurred" if injected == 500 else "Service Unavailable")
            fixed = faults.endpoint_status.get(name) if name else None
            if fixed is not None:
                state.count("errors")
                return _message(fixed, HTTPStatus(fixed).phrase if fixed in _KNOWN_STATUSES else "Error")
            if name:
                state.count(name)
            # ASP.NET binds query parameters case-insensitively; so does this.
            params = {k.lower(): v for k, v in request.query_params.items()}
            try:
                return await handler(state, request, params)
            except (BadRequest, NotFound) as exc:
                return _message(400, str(exc))

        return endpoint

    async def ping(state: ApiState, request: Request, params: dict[str, str]) -> Response:
        return JSONResponse({"message": "pong"})

    async def customers(state: ApiState, request: Request, params: dict[str, str]) -> Response:
        world, config = state.world, state.config
        page, size = _paging(params, config.max_page_size)
        first = _date_param(params, "FromServiceDate")
        last = _date_param(params, "ToServiceDate")
        include = _bool_param(params, "IncludeOpportunityInfo", first is not None or last is not None)
        span = _date_span(first, last, "service date")
        if span:
            world.ensure_dates(*span)
        if page == 1 and config.churn > 0:
            world.evolve()
        return _page(
            _drifted(
                state,
                lambda offset, limit: world.list_customers(first, last, include, offset=offset, limit=limit),
                shapes.customer,
            ),
            page,
            size,
            state.faults,
        )

    async def leads(state: ApiState, request: Request, params: dict[str, str]) -> Response:
        world = state.world
        page, size = _paging(params, state.config.max_page_size)
        first, last = _date_param(params, "From"), _date_param(params, "To")
        span = _date_span(first, last, "date")
        if span:
            world.ensure_lead_dates(*span)
        return _page(
            _drifted(
                state, lambda offset, limit: world.list_leads(first, last, offset=offset, limit=limit), shapes.lead
            ),
            page,
            size,
            state.faults,
        )

    async def lead(state: ApiState, request: Request, params: dict[str, str]) -> Response:
        found = state.world.lead_detail(request.path_params["id"])
        return JSONResponse(shapes.lead(found) if state.drift else found)

    async def opportunity(state: ApiState, request: Request, params: dict[str, str]) -> Response:
        found = state.world.opportunity_detail(request.path_params["id"])
        return JSONResponse(shapes.opportunity(found) if state.drift else found)

    async def opportunity_jobs(state: ApiState, request: Request, params: dict[str, str]) -> Response:
        found = state.world.opportunity_jobs(request.path_params["id"])
        return JSONResponse(shapes.opportunity_jobs(found) if state.drift else found)

    async def branches(state: ApiState, request: Request, params: dict[str, str]) -> Response:
        return JSONResponse(state.world.branches())

    async def unknown(state: ApiState, request: Request, params: dict[str, str]) -> Response:
        return _message(404, "Not found")

    routes = [
        Route("/v1/api/ping", api("ping", ping)),
        Route("/v1/api/customers", api("customers", customers)),
        Route("/v1/api/opportunities/{id}", api("opportunity", opportunity)),
        Route("/v1/api/opportunities/{id}/jobs", api("opportunity_jobs", opportunity_jobs)),
        Route("/v1/api/branches", api("branches", branches)),
        Route("/v1/api/leads", api("leads", leads)),
        Route("/v1/api/leads/{id}", api("lead", lead)),
        Route("/v1/api/{rest:path}", api("", unknown)),
        *_admin_routes(tenants),
    ]
    app = Starlette(routes=routes)
    # Tenant 1's state, as when there was only one; app.state.tenants reaches the others.
    app.state.api = tenants.state(1)
    app.state.tenants = tenants
    return app


def _envelope(
    page: int, size: int, total: int, rows: list[dict[str, Any]], total_pages: int | None = None
) -> dict[str, Any]:
    """SmartMoving's paging envelope."""
    pages = math.ceil(total / size) if total_pages is None else total_pages
    return {
        "pageNumber": page,
        "pageSize": size,
        "lastPage": page >= pages,
        "totalPages": pages,
        "totalResults": total,
        "totalThisPage": len(rows),
        # The live API answers null rather than [] when nothing matches.
        "pageResults": rows if total else None,
    }


def _page(lister: Lister, page: int, size: int, faults: FaultConfig) -> Response:
    """One page of any list endpoint, with the page-level faults (duplicates, incomplete, malformed)."""
    # A customer inserted ahead of the cursor between pages 1 and 2 slides the last record of
    # page 1 onto page 2, where it is served twice.
    shifted = faults.duplicate_across_pages and page > 1
    start = (page - 1) * size - (1 if shifted else 0)
    total, page_rows = lister(start, size)
    if faults.duplicate_across_pages and total > size:
        total_pages = 1 + math.ceil((total - size + 1) / size)
    else:
        total_pages = math.ceil(total / size)
    if page in faults.incomplete_pages:
        for row in page_rows:
            row.pop("id", None)
    body = _envelope(page, size, total, page_rows, total_pages)
    if page in faults.malformed_pages:
        text = json.dumps(body, ensure_ascii=False)
        return Response(text[: len(text) // 2], media_type="application/json")
    return JSONResponse(body)


def _drifted(
    state: ApiState, fetch: Callable[[int, int], tuple[int, list[Any]]], reshape: Callable[[dict[str, Any]], Any]
) -> Callable[[int, int], tuple[int, list[Any]]]:
    """``fetch`` (a page of the world's list) with each record in its drifted shape while drift is on."""

    def page(offset: int, limit: int) -> tuple[int, list[Any]]:
        total, rows = fetch(offset, limit)
        if not state.drift:
            return total, rows
        return total, [reshape(row) if isinstance(row, dict) else row for row in rows]

    return page


AdminHandler = Callable[[ApiState, dict[str, Any]], Any]


def _admin_routes(tenants: Tenants) -> list[Route]:
    def admin(handler: AdminHandler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                if request.method == "POST":
                    raw = await request.body()
                    body = json.loads(raw) if raw.strip() else {}
                    if not isinstance(body, dict):
                        raise ValueError("expected a JSON object")
                else:
                    body = dict(request.query_params)
                # Popped so that handlers which refuse unknown fields (faults) never see it.
                in_body = body.pop("tenant", None)
                state = tenants.from_param(request.query_params.get("tenant", in_body))
                return JSONResponse(handler(state, body))
            except NotFound as exc:
                return _message(404, str(exc))
            except (ValueError, KeyError, TypeError) as exc:
                return _message(400, f"{type(exc).__name__}: {exc}")

        return endpoint

    def day(value: Any) -> dt.date:
        return dt.date.fromisoformat(str(value))

    def reset_stats(state: ApiState, body: dict[str, Any]) -> dict[str, int]:
        state.reset_stats()
        return state.stats()

    def set_faults(state: ApiState, body: dict[str, Any]) -> dict[str, object]:
        state.set_faults(FaultConfig.from_dict(body))
        return state.faults.to_dict()

    def evolve(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        steps = int(body.get("steps", 1))
        if steps < 0:
            raise ValueError("steps must be >= 0")
        return {"steps": steps, "mutations": state.world.evolve(steps)}

    def reschedule(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        to_date = day(body["to_date"])
        state.world.reschedule_job(str(body["job_id"]), to_date)
        return {"job_id": body["job_id"], "jobDate": to_int_date(to_date)}

    def cancel(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        state.world.cancel_opportunity(str(body["opportunity_id"]))
        return {"opportunity_id": body["opportunity_id"], "status": 20}

    def delete(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        state.world.delete_opportunity(str(body["opportunity_id"]))
        return {"deleted": body["opportunity_id"]}

    def rename(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        state.world.rename_customer(str(body["customer_id"]), str(body["name"]))
        return {"customer_id": body["customer_id"], "name": body["name"]}

    def add(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        extra = {"status": int(body["status"])} if body.get("status") is not None else {}
        return state.world.add_booking(day(body["service_date"]), body.get("branch_name"), **extra)

    def convert_lead(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        return {"opportunity_id": state.world.convert_lead(str(body["lead_id"]))}

    def patch_lead(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        fields = body.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError("fields must be a JSON object")
        state.world.patch_lead(str(body["lead_id"]), fields)
        return {"patched": body["lead_id"]}

    def patch(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        state.world.patch(
            str(body["opportunity_id"]),
            opportunity=body.get("opportunity"),
            customer=body.get("customer"),
            job=body.get("job"),
        )
        return {"opportunity_id": body["opportunity_id"]}

    def opportunities(state: ApiState, body: dict[str, Any]) -> list[str]:
        return state.world.opportunity_ids_on(day(body["date"]))

    def close_day(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        closed = day(body["date"])
        return {"date": closed.isoformat(), "changes": state.world.close_day(closed)}

    def set_date_filter(state: ApiState, body: dict[str, Any]) -> dict[str, str]:
        state.world.set_date_filter(body["date_filter"])
        return {"date_filter": state.world.date_filter}

    def get_date_filter(state: ApiState, body: dict[str, Any]) -> dict[str, str]:
        return {"date_filter": state.world.date_filter}

    def get_faults(state: ApiState, body: dict[str, Any]) -> dict[str, object]:
        return state.faults.to_dict()

    def set_webhooks(state: ApiState, body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - {"url", "faults"})
        if unknown:
            raise ValueError(f"unknown webhook settings {unknown}; known: ['faults', 'url']")
        faults = body.get("faults")
        faults = {} if faults is None else faults
        if not isinstance(faults, dict):
            raise ValueError("faults must be a JSON object")
        return state.set_webhooks(body["url"], WebhookFaults.from_dict(faults))

    async def webhooks(request: Request) -> Response:
        return await admin((lambda state, body: state.webhook_stats()) if request.method == "GET" else set_webhooks)(
            request
        )

    def set_drift(state: ApiState, body: dict[str, Any]) -> dict[str, bool]:
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise BadRequest(f"enabled must be true or false, got {enabled!r}")
        state.drift = enabled
        return {"drift": state.drift}

    async def drift(request: Request) -> Response:
        return await admin((lambda state, body: {"drift": state.drift}) if request.method == "GET" else set_drift)(
            request
        )

    async def date_filter(request: Request) -> Response:
        return await admin(get_date_filter if request.method == "GET" else set_date_filter)(request)

    async def faults(request: Request) -> Response:
        return await admin(get_faults if request.method == "GET" else set_faults)(request)

    async def tenant_list(request: Request) -> Response:
        config = tenants.config
        return JSONResponse(
            {
                "tenants": len(tenants),
                "api_key_fingerprints": config.api_key_fingerprints(),
                "seeds": [config.seed + i for i in range(len(tenants))],
            }
        )

    return [
        Route("/_admin/tenants", tenant_list, methods=["GET"]),
        Route("/_admin/stats", admin(lambda state, body: state.stats()), methods=["GET"]),
        Route("/_admin/stats/reset", admin(reset_stats), methods=["POST"]),
        Route("/_admin/faults", faults, methods=["GET", "POST"]),
        Route("/_admin/evolve", admin(evolve), methods=["POST"]),
        Route("/_admin/reschedule", admin(reschedule), methods=["POST"]),
        Route("/_admin/cancel", admin(cancel), methods=["POST"]),
        Route("/_admin/delete", admin(delete), methods=["POST"]),
        Route("/_admin/rename", admin(rename), methods=["POST"]),
        Route("/_admin/add", admin(add), methods=["POST"]),
        Route("/_admin/patch", admin(patch), methods=["POST"]),
        Route("/_admin/convert-lead", admin(convert_lead), methods=["POST"]),
        Route("/_admin/patch-lead", admin(patch_lead), methods=["POST"]),
        Route("/_admin/opportunities", admin(opportunities), methods=["GET"]),
        Route("/_admin/close-day", admin(close_day), methods=["POST"]),
        Route("/_admin/date-filter", date_filter, methods=["GET", "POST"]),
        Route("/_admin/drift", drift, methods=["GET", "POST"]),
        Route("/_admin/webhooks", webhooks, methods=["GET", "POST"]),
    ]
