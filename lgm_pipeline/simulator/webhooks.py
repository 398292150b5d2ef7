"""SmartMoving's webhooks, as the simulator sends them: thin, unsigned JSON POSTs of the world's changes.

SmartMoving (Premium) POSTs a small body per change to one configured URL, e.g.
``{"event-type": "opportunity-status-changed", "opportunity-id": ..., "opportunity-status": 3,
"customer-id": ...}``; the receiver fetches the record itself. A ``WebhookSender`` (one per tenant)
takes the world's events (``World.on_change``) into a bounded queue and POSTs them from a thread of
its own, so the world never waits on the network. Delivery is retried: a connection error, a 5xx, a
408 or a 429 is tried again after 0.2 s, 0.4 s, ... up to ``max_attempts`` tries in all; any other
4xx is final. ``WebhookFaults`` makes delivery misbehave as a real sender may, drawn from a
generator seeded by the tenant's seed, three draws per event, so a seed and a sequence of events
always meet the same faults: a lost event, an event sent twice, an event held back and sent after
the next one.

The URL usually carries a secret token in its path or query: logs name only its origin
(scheme://host:port).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import threading
import time
from typing import Any

import httpx

from lgm_pipeline.simulator.config import WebhookFaults

logger = logging.getLogger(__name__)

Event = dict[str, Any]
_Held = tuple[Event, int]  # an event held back to be overtaken, and how many copies of it to send

COUNTER_NAMES = ("sent", "delivered", "failed", "lost", "duplicated", "attempts", "pending", "overflowed")
QUEUE_SIZE = 10_000
TIMEOUT_SECONDS = 2.0
BACKOFF_SECONDS = 0.2
# A held-back event waits this long for a successor to overtake it before it goes out anyway.
HOLD_SECONDS = 0.5
_STOP_JOIN_SECONDS = 1.0
_NOT_RETRIED_4XX = frozenset(range(400, 500)) - {408, 429}
_WAKE = object()  # queued by flush(): release a held-back event now instead of waiting for a successor


def origin(url: str | None) -> str:
    """What of a webhook URL may be logged: scheme://host:port, never the path or query that hold its token."""
    if url is None:
        return "nowhere"
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
    except (httpx.InvalidURL, TypeError):
        return "an unreadable URL"


def check_url(url: object) -> str | None:
    """``url`` if it is an http(s) URL with a host (None clears); the error never repeats the URL's secret parts."""
    if url is None:
        return None
    if not isinstance(url, str):
        raise ValueError(f"webhook url must be a string or null, got {type(url).__name__}")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ValueError("webhook url is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"webhook url must be http(s)://host[:port]/path, got scheme {parsed.scheme!r}")
    return url


class WebhookSender:
    """One tenant's webhook deliveries: ``submit`` queues, a daemon thread POSTs.

    The thread starts with the first URL; ``stop`` ends it promptly (a POST in flight is abandoned
    to its short timeout). ``stats`` counts events: ``sent`` were handed over, each then settles as
    ``delivered``, ``failed`` (retries exhausted, a final 4xx, the URL cleared), ``lost`` (the loss
    fault) or ``overflowed`` (the queue was full); ``pending`` are not settled yet. ``duplicated``
    counts the extra copies sent, ``attempts`` every POST tried.
    """

    def __init__(
        self,
        url: str | None = None,
        faults: WebhookFaults | None = None,
        seed: int = 7,
        *,
        timeout_seconds: float = TIMEOUT_SECONDS,
        backoff_seconds: float = BACKOFF_SECONDS,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._seed = seed
        self._timeout = httpx.Timeout(timeout_seconds).as_dict()
        self._backoff = backoff_seconds
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._faults = WebhookFaults()
        self._rng = random.Random()
        self.configure(url, faults)

    @property
    def url(self) -> str | None:
        return self._url

    @property
    def faults(self) -> WebhookFaults:
        return self._faults

    def configure(self, url: str | None, faults: WebhookFaults | None = None) -> None:
        """Point at ``url`` (None: send nothing more) with ``faults`` (None: none); takes effect with the next event.

        The fault generator restarts from the seed, so what follows meets the same faults whatever came before.
        """
        url = check_url(url)
        with self._lock:
            changed = url != self._url
            self._url = url
            self._faults = faults or WebhookFaults()
            self._rng = random.Random(f"webhooks:{self._seed}")
            start = url is not None and self._thread is None and not self._stopping.is_set()
            if start:
                self._thread = threading.Thread(target=self._run, name="smartmoving-webhooks", daemon=True)
        if start:
            assert self._thread is not None
            self._thread.start()
        if changed:
            logger.info("simulator webhooks: %s", f"to {origin(url)}" if url else "off")

    def settings(self) -> dict[str, Any]:
        """The receiver (scheme://host:port: the URL's path holds its token) and the faults."""
        with self._lock:
            return {"url": origin(self._url) if self._url else None, "faults": self._faults.to_dict()}

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def submit(self, event: Event) -> None:
        """Queue ``event`` for delivery; never blocks (the world calls it with its lock held)."""
        with self._lock:
            if self._url is None or self._stopping.is_set():
                return
            self._counts["sent"] += 1
            self._counts["pending"] += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            logger.warning("simulator webhooks: queue full (%d events), an event is dropped", self._queue.maxsize)
            self._settle("overflowed")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until no event is pending (a held-back one is released at once); False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._counts["pending"]:
                return True
        try:
            self._queue.put(_WAKE, timeout=timeout)
        except queue.Full:
            return False
        with self._settled:
            while self._counts["pending"]:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    return False
                self._settled.wait(left)
            return True

    def stop(self) -> None:
        """Stop the thread; pending events are abandoned. Returns within about a second."""
        self._stopping.set()
        with self._settled:
            self._settled.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive():
            # Wakes a thread waiting on an empty queue; a full one is read, and _stopping checked, at once anyway.
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_WAKE)
            thread.join(timeout=_STOP_JOIN_SECONDS)

    # ---- the thread ---------------------------------------------------------------------------

    def _settle(self, outcome: str) -> None:
        with self._settled:
            self._counts[outcome] += 1
            self._counts["pending"] -= 1
            self._settled.notify_all()

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _run(self) -> None:
        transport = httpx.HTTPTransport(retries=0)
        held: _Held | None = None
        try:
            while not self._stopping.is_set():
                try:
                    item = self._queue.get(timeout=HOLD_SECONDS if held is not None else 0.1)
                except queue.Empty:
                    item = _WAKE if held is not None else None
                if item is None:
                    continue
                if item is _WAKE:
                    if held is not None and self._queue.empty():
                        self._deliver(transport, *held)
                        held = None
                    continue
                held = self._handle(transport, item, held)
        finally:
            transport.close()

    def _handle(self, transport: httpx.HTTPTransport, event: Event, held: _Held | None) -> _Held | None:
        """Apply this event's faults and send it; returns the event now held back, if any."""
        with self._lock:
            faults = self._faults
            # Always three draws, so which event meets which fault depends on the count of events alone.
            lose, duplicate, reorder = self._rng.random(), self._rng.random(), self._rng.random()
        if lose < faults.loss_rate:
            self._settle("lost")
            return held
        copies = 2 if duplicate < faults.duplicate_rate else 1
        if held is None and reorder < faults.reorder_rate:
            return event, copies
        self._deliver(transport, event, copies)
        if held is not None:
            self._deliver(transport, *held)
        return None

    def _deliver(self, transport: httpx.HTTPTransport, event: Event, copies: int) -> None:
        with self._lock:
            faults = self._faults
        if faults.delay_ms and self._stopping.wait(faults.delay_ms / 1000):
            return
        if copies > 1:
            self._count("duplicated")
        delivered = [self._post(transport, event, faults.max_attempts) for _ in range(copies)]
        if self._stopping.is_set() and not any(delivered):
            return  # abandoned by stop(): neither delivered nor given up on
        self._settle("delivered" if any(delivered) else "failed")

    def _post(self, transport: httpx.HTTPTransport, event: Event, max_attempts: int) -> bool:
        """POST until a 2xx, a final 4xx or ``max_attempts`` tries; True if delivered."""
        body = json.dumps(event).encode()
        for attempt in range(1, max_attempts + 1):
            url = self._url
            if url is None or self._stopping.is_set():
                return False
            self._count("attempts")
            # The transport, not an httpx.Client: the client logs every request's full URL, token and all.
            request = httpx.Request(
                "POST",
                url,
                content=body,
                headers={"content-type": "application/json", "user-agent": "smartmoving-simulator-webhooks"},
                extensions={"timeout": self._timeout},
            )
            try:
                response = transport.handle_request(request)
                try:
                    response.read()
                finally:
                    response.close()
                status: int | None = response.status_code
            except httpx.TransportError as exc:
                status = None
                problem = type(exc).__name__
            if status is not None and 200 <= status < 300:
                return True
            if status in _NOT_RETRIED_4XX:
                logger.warning("simulator webhooks: %s answered %d; the event is not retried", origin(url), status)
                return False
            if status is not None:
                problem = f"HTTP {status}"
            if attempt == max_attempts:
                logger.warning(
                    "simulator webhooks: %s failed %d times (last: %s); the event is dropped",
                    origin(url),
                    attempt,
                    problem,
                )
                return False
            if self._stopping.wait(self._backoff * 2 ** (attempt - 1)):
                return False
        return False
