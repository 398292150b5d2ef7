"""A SmartMoving public API v1 simulator: a real HTTP server on loopback for tests and demos.

The client talks to it exactly as to ``https://api-public.smartmoving.com/v1``: ``x-api-key``
header (or ``api-key`` query), integer yyyyMMdd dates, the paging envelope, 400 for an unknown
id, 429 + ``Retry-After`` from a fixed per-minute window.

Behaviour worth knowing when writing tests against it:

* Data is generated lazily per service date from ``seed`` and the date alone, so any date holds
  the same records whatever order dates are requested in (until time moves, below).
* **Time moves by itself**: each ``GET /v1/api/customers`` with ``Page=1`` (the start of a
  client's sync) first runs one ``World.evolve()`` step when ``churn > 0``: status
  progressions, a new booking, a reschedule, a cancellation, a contact fix. Pages 2.. of the same
  sync see the same data. Set ``churn=0`` for a frozen world.
* Evolution never deletes; ``POST /_admin/delete`` (``World.delete_opportunity``) does: the
  opportunity leaves every list and its details answer 400 "Opportunity not found", as a
  deleted one does in SmartMoving.
* The monthly quota's real response is undocumented; the simulator answers 429 with
  ``{"message": "Monthly API call quota exceeded"}``, ``X-Quota-Exceeded: true`` and a
  ``Retry-After`` of the seconds until the next calendar month (UTC).
* ``pageResults`` is ``null`` (not ``[]``) when nothing matches, as seen live.
* Date ranges over 366 days are refused with 400 (a simulator limit, to bound generation:
  about 30 ms a day, so a first query over a whole year takes some 10-15 s).
* The customers date filter has two readings (``SimulatorConfig.date_filter``, ``lgm simulator
  --date-filter``, ``GET/POST /_admin/date-filter``), since the vendor docs leave it open:
  ``job_date`` (default) matches a customer when an opportunity's ``serviceDate`` or any job's
  ``jobDate`` is in range; ``service_date`` matches the opportunity's ``serviceDate`` (its first
  day) alone, so the second day of a two-day move is not listed on that day. Either way the
  customer's ``opportunities`` are the matching ones, each with all its jobs.
* Rare oddities, each drawn from its own ``Random`` keyed by the record's id so every other
  record is exactly what it would be without them: about 2% of booked, completed or closed
  Moving / MovingAndPacking / StorageInBound opportunities carry an extra StorageOutBound (9) job
  with ``jobDate`` null (delivery from storage "TBD"; ``serviceDate`` null in the list summary),
  one address (the destination), its own ``estimatedCharges`` when priced, no timeline, and no
  date it is listed under. About 0.5% of jobs have a custom type (101 or 102), 0.3% the
  undocumented type 13.
* ``World.close_day(day)`` (``POST /_admin/close-day {"date": "YYYY-MM-DD"}``) ends a day at the
  office: Booked opportunities whose dated jobs all fall on or before it become Completed (with
  ``actualCharges``); Completed ones whose dated jobs all fall before it become Closed with
  probability 0.7, deterministically per opportunity and day. Call it day after day to play out
  a week.
* Leads (``GET /api/leads?From&To``, ``/api/leads/{id}``) are generated per creation date from their
  own ``Random`` (about 0.4 x ``customers_per_day`` a day), so asking for them changes no customer,
  opportunity or job. ``From``/``To`` compare the **UTC date** of ``createdAtUtc`` (the vendor docs do
  not say which timezone; a tenant's local "today" therefore spans two UTC dates). Ordered by
  ``createdAtUtc`` then ``id``. About 5% repeat the phone or email of a lead of the same day or up to
  30 days before. ``World.evolve`` converts about ``churn`` x (open leads) leads per step into bookings
  (the lead gets ``opportunityId`` and status 1); without leads ever generated, evolution is exactly
  what it was, but once conversions add opportunities, later steps sample from the larger world.
  ``POST /_admin/convert-lead`` and ``/_admin/patch-lead`` do the same on demand.
* ``/_admin`` (no key, no faults, no latency) inspects and mutates the world: see ``app.py``.
* Many tenants (``SimulatorConfig.tenants``, ``lgm simulator --tenants N``, up to 1000) share the
  one port and base URL: tenant i answers to ``<api_key>-t<i>`` (the plain key when N is 1) and has
  its own world seeded ``seed + i - 1``, rate limit, monthly quota, counters and faults. A world is
  built on its tenant's first request, its dates as ever on demand. ``/_admin`` acts on tenant 1
  unless given ``tenant=i`` (query string, or a POST's JSON body); ``GET /_admin/tenants`` lists the
  seeds and the keys' fingerprints (``sha256:`` + 12 hex digits), never the keys. In process:
  ``sim.api_keys``, ``sim.tenant_world(i)``, ``sim.worlds``, ``sim.stats(tenant=i)``.
* Webhooks (``SimulatorConfig.webhook_url``, ``lgm simulator --webhook-url``, ``POST /_admin/webhooks``,
  ``sim.set_webhooks(url)``): every change the world makes (evolution, the admin mutations, ``close_day``)
  is POSTed as SmartMoving's thin kebab-case body (``{"event-type": "opportunity-status-changed",
  "opportunity-id": ..., "opportunity-status": 3, "customer-id": ...}``), from a thread per tenant, with
  retries and seeded delivery faults (``WebhookFaults``: duplicates, reordering, delay, loss); see
  ``webhooks.py``. Generating a date sends nothing: those records were always there. No URL, no events.
"""

from lgm_pipeline.simulator.app import create_app
from lgm_pipeline.simulator.config import (
    DEMO_API_KEY,
    FaultConfig,
    SimulatorConfig,
    WebhookFaults,
    parse_fault_options,
    parse_webhook_fault_options,
)
from lgm_pipeline.simulator.server import RunningSimulator, serve_forever, start_simulator
from lgm_pipeline.simulator.webhooks import WebhookSender
from lgm_pipeline.simulator.world import World

__all__ = [
    "DEMO_API_KEY",
    "FaultConfig",
    "RunningSimulator",
    "SimulatorConfig",
    "WebhookFaults",
    "WebhookSender",
    "World",
    "create_app",
    "parse_fault_options",
    "parse_webhook_fault_options",
    "serve_forever",
    "start_simulator",
]
