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
* The monthly quota's real response is undocumented; the simulator answers 429 with
  ``{"message": "Monthly API call quota exceeded"}``, ``X-Quota-Exceeded: true`` and a
  ``Retry-After`` of the seconds until the next calendar month (UTC).
* ``pageResults`` is ``null`` (not ``[]``) when nothing matches, as seen live.
* Date ranges over 366 days are refused with 400 (a simulator limit, to bound generation:
  about 30 ms a day, so a first query over a whole year takes some 10-15 s).
* ``/_admin`` (no key, no faults, no latency) inspects and mutates the world: see ``app.py``.
"""

from lgm_pipeline.simulator.app import create_app
from lgm_pipeline.simulator.config import DEMO_API_KEY, FaultConfig, SimulatorConfig, parse_fault_options
from lgm_pipeline.simulator.server import RunningSimulator, serve_forever, start_simulator
from lgm_pipeline.simulator.world import World

__all__ = [
    "DEMO_API_KEY",
    "FaultConfig",
    "RunningSimulator",
    "SimulatorConfig",
    "World",
    "create_app",
    "parse_fault_options",
    "serve_forever",
    "start_simulator",
]
