"""Synchronous, thread-safe client for the SmartMoving public API v1.

The key travels only in the ``x-api-key`` header (never the ``api-key`` query form, because httpx
logs request URLs at INFO), and no message, log line or repr built here includes it. What the server
sends back is redacted before use (:mod:`lgm_pipeline.smartmoving.redaction`): the key, in any case,
reversed or any piece of 8+ characters of it, leaves error bodies and 2xx bodies as ``[redacted]``.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from lgm_pipeline.smartmoving.errors import (
    AuthenticationError,
    AuthorizationError,
    DeadlineExceededError,
    EndpointNotFoundError,
    EndpointUnavailableError,
    MalformedPayloadError,
    NotFoundError,
    QuotaExhaustedError,
    SmartMovingError,
    UnusableBaseURLError,
    UpstreamUnavailableError,
)
from lgm_pipeline.smartmoving.ratelimit import TokenBucket
from lgm_pipeline.smartmoving.redaction import Redactor

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_MESSAGE_CHARS = 200


_request_log = logging.getLogger(__name__)

#: Endpoints of one record: a 404 there means the record is gone (deleted since it was listed). A 404
#: on any other endpoint (the lists, ping) means the base URL does not point at the API, unless another
#: endpoint has answered from it (then the key's plan may not include that one).
RECORD_ENDPOINTS = frozenset({"opportunity", "lead", "opportunity_jobs"})

# Every attempt of every client of this process, failed ones included: ``lgm sync`` runs its Dagster
# runs in this process and reads the calls a run spent here, whether its steps succeeded or not
# (a failed step records no output metadata, and its earlier attempts record nothing at all).
_process_calls: collections.Counter[str] = collections.Counter()
_process_calls_lock = threading.Lock()


def calls_in_process() -> collections.Counter[str]:
    """A copy of the calls (attempts, by endpoint) made by every client of this process so far."""
    with _process_calls_lock:
        return collections.Counter(_process_calls)


def service_date_param(day: date) -> int:
    """SmartMoving takes dates as integers yyyyMMdd."""
    return day.year * 10000 + day.month * 100 + day.day


class _Cancelled(Exception):
    """A sibling request in the same batch failed; this worker stops quietly."""


@dataclass
class _Operation:
    """One top-level call: it owns the deadline shared by every request it makes."""

    name: str
    deadline: float | None
    cancel: threading.Event = field(default_factory=threading.Event)


#: Lists whose records without an id fail the pull (previous data kept) instead of being quarantined:
#: a customer is how its opportunities are found, so one the pipeline cannot key would take its
#: journeys off the board until the next pull. Other lists (leads) pass such records on to quarantine.
ID_REQUIRED_LISTS = frozenset({"customers"})


class SmartMovingClient:
    """One API key's client, safe to share between threads.

    Every attempt, retries included, takes a token from the rate budget and counts in ``calls``.
    ``deadline_seconds`` bounds each public call as a whole (all pages, all details, all waits).
    ``max_retries`` counts retries, so a request is attempted at most ``max_retries + 1`` times.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        page_size: int = 500,
        max_concurrency: int = 4,
        rate_limit_per_minute: int | None = 120,
        rate_limit_headroom: float = 0.9,
        max_retries: int = 5,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        timeout_seconds: float = 30.0,
        deadline_seconds: float | None = 900.0,
        transport: httpx.BaseTransport | None = None,
        logger: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_key:
            raise ValueError("SmartMoving API key is empty")
        if page_size < 1 or max_concurrency < 1 or max_retries < 0:
            raise ValueError("page_size and max_concurrency must be >= 1, max_retries >= 0")
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.timeout_seconds = timeout_seconds
        self.deadline_seconds = deadline_seconds
        self.calls: collections.Counter[str] = collections.Counter()
        #: List records served per endpoint (every page, before de-duplication) and ids seen twice.
        self.received: collections.Counter[str] = collections.Counter()
        self.duplicates: collections.Counter[str] = collections.Counter()
        # Endpoints known to answer from this base URL with this key: a later 404/403 elsewhere is that endpoint's.
        self._answered: set[str] = set()
        self._api_key = api_key
        self._redactor = Redactor([api_key])
        self._log = logger or logging.getLogger(__name__)
        self._sleep = sleep
        self._clock = clock
        self._random = random.Random()
        self._lock = threading.Lock()
        self._bucket = (
            None
            if rate_limit_per_minute is None
            else TokenBucket.for_limit(rate_limit_per_minute, rate_limit_headroom, clock=clock, sleep=sleep)
        )
        try:
            self._http = httpx.Client(
                base_url=f"{self.base_url}/api",
                headers={"x-api-key": api_key, "accept": "application/json"},
                timeout=timeout_seconds,
                transport=transport,
                limits=httpx.Limits(max_connections=max(10, max_concurrency * 2)),
            )
        except (httpx.InvalidURL, TypeError) as exc:
            raise UnusableBaseURLError(f"SmartMoving base URL is not usable: {self._redact(str(exc))}") from None
        if self._http.base_url.scheme in ("http", "https") and not self._http.base_url.host:
            # httpx would only fail at connect time, like an outage (retried for minutes).
            raise UnusableBaseURLError("SmartMoving base URL is not usable: it names no host")

    def __repr__(self) -> str:
        return f"SmartMovingClient(base_url={self.base_url!r})"

    def __enter__(self) -> SmartMovingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def note_answered(self, endpoints: Iterable[str]) -> None:
        """Endpoints that answered from this base URL in earlier steps of the cycle (another client's calls).

        With them known, a 404 on another list endpoint, or a 403 on any, is that endpoint's problem
        (:class:`EndpointUnavailableError`), not the base URL's or the key's.
        """
        with self._lock:
            self._answered.update(endpoints)

    @property
    def answered(self) -> frozenset[str]:
        """Endpoints that answered 2xx through this client, or were noted by :meth:`note_answered`."""
        with self._lock:
            return frozenset(self._answered)

    # ---- public API -------------------------------------------------------------------------

    def ping(self) -> float:
        """Round trip of the successful ping attempt, in seconds (retries and waits excluded)."""
        _, elapsed = self._request(self._operation("ping"), "ping", "/ping", expect_json=False)
        return elapsed

    def iter_customer_pages(self, from_date: date, to_date: date) -> Iterator[tuple[int, list[dict]]]:
        """Customers with service dates in [from_date, to_date], one page at a time, until lastPage."""
        op = self._operation("customers")
        for page, records, _ in self._iter_pages(
            op, "customers", "/customers", self._customer_filters(from_date, to_date)
        ):
            yield page, records

    def list_customers(self, from_date: date, to_date: date) -> list[dict]:
        """Every customer of the date range, with opportunity info, each id once.

        Pages are offsets into a list ordered by name: a customer removed or renamed while we page
        shifts the rest, and one customer can fall between two pages unseen. Its journeys would then
        be deleted by the merge, so a pull that received fewer customers than the list's
        ``totalResults`` is done again, and fails (previous data kept) if it is short twice.
        """
        return self._list_all("customers", "/customers", self._customer_filters(from_date, to_date))

    def list_leads(self, from_date: date, to_date: date) -> list[dict]:
        """Every lead created in [from_date, to_date] (SmartMoving's creation dates), each id once."""
        filters = {"From": service_date_param(from_date), "To": service_date_param(to_date)}
        return self._list_all("leads", "/leads", filters)

    @staticmethod
    def _customer_filters(from_date: date, to_date: date) -> dict[str, Any]:
        return {
            "FromServiceDate": service_date_param(from_date),
            "ToServiceDate": service_date_param(to_date),
            "IncludeOpportunityInfo": "true",
        }

    def _list_all(self, endpoint: str, path: str, filters: dict[str, Any]) -> list[dict]:
        for attempt in (1, 2):
            records, total = self._pull_all(endpoint, path, filters)
            if total is None or len(records) >= total:
                return records
            self._log.warning(
                "SmartMoving %s: received %d of the %d listed (the list changed while paging)%s",
                endpoint,
                len(records),
                total,
                "; pulling again" if attempt == 1 else "",
            )
        raise SmartMovingError(
            f"SmartMoving {endpoint} list kept changing while paging: received {len(records)} of {total}"
        )

    def _pull_all(self, endpoint: str, path: str, filters: dict[str, Any]) -> tuple[list[Any], int | None]:
        by_id: dict[Any, Any] = {}
        total: int | None = None
        self.duplicates[endpoint] = 0  # of this attempt: a list pulled again counts its own
        for page, records, listed in self._iter_pages(self._operation(endpoint), endpoint, path, filters):
            total = listed
            for index, record in enumerate(records):
                self.received[endpoint] += 1
                record_id = record.get("id") if isinstance(record, dict) else None
                if record_id is None or isinstance(record_id, dict | list):
                    if endpoint in ID_REQUIRED_LISTS:
                        raise MalformedPayloadError(endpoint, page, f"pageResults[{index}].id", "record without id")
                    # No id to key it by: kept as sent, for the transform to quarantine with its reason.
                    by_id[("unkeyed", page, index)] = record
                    continue
                if record_id in by_id:
                    # A record can slide onto the next page as the data moves; the later copy is fresher.
                    self._log.warning(
                        "SmartMoving %s: %s seen again on page %d, keeping the later copy", endpoint, record_id, page
                    )
                    self.duplicates[endpoint] += 1
                    del by_id[record_id]
                by_id[record_id] = record
        return list(by_id.values()), total

    def get_lead(self, lead_id: str) -> dict:
        op = self._operation("lead")
        lead, _ = self._request(op, "lead", f"/leads/{_segment(lead_id)}")
        if not isinstance(lead, dict) or not lead.get("id"):
            raise MalformedPayloadError("lead", None, "id", f"lead {lead_id}")
        return lead

    def get_opportunity(self, opportunity_id: str) -> dict:
        return self._get_opportunity(self._operation("opportunity"), opportunity_id)

    def get_opportunities(self, ids: Sequence[str]) -> dict[str, dict]:
        """Details for each id, ``max_concurrency`` at a time, all under one rate budget and deadline.

        An id SmartMoving no longer knows (deleted between the list and the details) is left out of
        the result rather than failing the batch; the caller compares with what it asked for.
        """
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        op = self._operation("opportunities")
        started = self._clock()
        results: dict[str, dict] = {}
        workers = min(self.max_concurrency, len(unique))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="smartmoving")
        futures = {pool.submit(self._get_opportunity_or_stop, op, oid): oid for oid in unique}
        stopped = 0
        try:
            for future in as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except NotFoundError:
                    self._log.warning("SmartMoving opportunity %s no longer exists", futures[future])
                except _Cancelled:
                    # Stopped by a sibling's failure, whose own future may complete after this one: that
                    # failure (a quota, a key) is the one to raise, not this internal stop.
                    stopped += 1
            if stopped:
                raise SmartMovingError(f"SmartMoving opportunities: {stopped} detail request(s) stopped, no cause seen")
        except Exception:
            # Stop the siblings before they spend more quota on a batch that already failed.
            op.cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except BaseException:
            # An interrupt (Ctrl-C, SIGTERM): the operator wants out now. The siblings stop at their next
            # request or wait; one still inside a request finishes it in the background, unwaited.
            op.cancel.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        self._log.info(
            "SmartMoving opportunities: fetched %d details in %.0f ms",
            len(results),
            (self._clock() - started) * 1000,
        )
        return {oid: results[oid] for oid in unique if oid in results}

    def get_opportunity_jobs(self, opportunity_id: str) -> list[dict]:
        op = self._operation("opportunity_jobs")
        jobs = self._list_resource(op, "opportunity_jobs", f"/opportunities/{_segment(opportunity_id)}/jobs")
        for index, job in enumerate(jobs):
            if not isinstance(job, dict) or not job.get("id"):
                raise MalformedPayloadError("opportunity_jobs", None, f"[{index}].id", "job without id")
        return jobs

    def list_branches(self) -> list[dict]:
        return self._list_resource(self._operation("branches"), "branches", "/branches")

    # ---- internals --------------------------------------------------------------------------

    def _operation(self, name: str) -> _Operation:
        deadline = None if self.deadline_seconds is None else self._clock() + self.deadline_seconds
        return _Operation(name, deadline)

    def _iter_pages(
        self, op: _Operation, endpoint: str, path: str, filters: dict[str, Any]
    ) -> Iterator[tuple[int, list[dict], int | None]]:
        """(page, records, the envelope's totalResults when it is a whole number) of a paged list."""
        page = 1
        while True:
            params = {"Page": page, "PageSize": self.page_size, **filters}
            envelope, elapsed = self._request(op, endpoint, path, params=params, page=page)
            # A record without a readable id is passed on as sent: the transform keeps it raw and
            # quarantines it naming the field, rather than this pull dropping it or failing whole.
            records, last_page = _unwrap_page(envelope, endpoint, page)
            self._log_page(endpoint, page, len(records), elapsed)
            total = envelope.get("totalResults")
            yield page, records, total if isinstance(total, int) and not isinstance(total, bool) else None
            if last_page:
                return
            if not records:
                # An empty page that is not the last would have us page forever.
                raise MalformedPayloadError(endpoint, page, "lastPage", "false on an empty page")
            page += 1

    def _list_resource(self, op: _Operation, endpoint: str, path: str) -> list[dict]:
        """A list endpoint that may answer a plain array or the paging envelope (both are seen)."""
        items: list[dict] = []
        page = 1
        while True:
            params = {"Page": page, "PageSize": self.page_size}
            body, elapsed = self._request(op, endpoint, path, params=params, page=page)
            if isinstance(body, list):
                self._log_page(endpoint, page, len(body), elapsed)
                self.received[endpoint] += len(body)
                return body
            records, last_page = _unwrap_page(body, endpoint, page)
            self._log_page(endpoint, page, len(records), elapsed)
            self.received[endpoint] += len(records)
            items.extend(records)
            if last_page:
                return items
            if not records:
                raise MalformedPayloadError(endpoint, page, "lastPage", "false on an empty page")
            page += 1

    def _get_opportunity_or_stop(self, op: _Operation, opportunity_id: str) -> dict:
        """In a batch, a fatal answer (bad key, quota, upstream down) stops the siblings at once,
        before they spend more quota, rather than when the caller gets round to the failure."""
        try:
            return self._get_opportunity(op, opportunity_id)
        except NotFoundError:
            raise
        except SmartMovingError:
            op.cancel.set()
            raise

    def _get_opportunity(self, op: _Operation, opportunity_id: str) -> dict:
        endpoint = "opportunity"
        detail, elapsed = self._request(op, endpoint, f"/opportunities/{_segment(opportunity_id)}")
        if not isinstance(detail, dict):
            raise MalformedPayloadError(endpoint, None, "body", f"expected an object, got {type(detail).__name__}")
        if not detail.get("id"):
            raise MalformedPayloadError(endpoint, None, "id", f"opportunity {opportunity_id}")
        if str(detail["id"]).lower() != opportunity_id.lower():
            raise MalformedPayloadError(endpoint, None, "id", f"asked for {opportunity_id}, got {detail['id']}")
        jobs = detail.get("jobs")
        if not isinstance(jobs, list):
            raise MalformedPayloadError(endpoint, None, "jobs", f"opportunity {opportunity_id}: not a list")
        for index, job in enumerate(jobs):
            if not isinstance(job, dict) or not job.get("id"):
                raise MalformedPayloadError(endpoint, None, f"jobs[{index}].id", f"opportunity {opportunity_id}")
        # One line per detail call would flood a run's event log (hundreds per date): Python logging only.
        _request_log.debug("SmartMoving opportunity %s: %d jobs, %.0f ms", opportunity_id, len(jobs), elapsed * 1000)
        return detail

    def _log_page(self, endpoint: str, page: int, records: int, elapsed: float) -> None:
        self._log.info("SmartMoving %s page %d: %d records in %.0f ms", endpoint, page, records, elapsed * 1000)

    def _count(self, endpoint: str, calls: int = 1) -> None:
        with self._lock:
            self.calls[endpoint] += calls
        with _process_calls_lock:
            _process_calls[endpoint] += calls

    def _wait(self, op: _Operation, seconds: float) -> None:
        """A retry wait that a cancelled batch (a sibling failed, the run was interrupted) cuts short."""
        if self._sleep is not time.sleep:
            self._sleep(seconds)  # simulated time (tests)
        elif op.cancel.wait(seconds):
            raise _Cancelled

    def _remaining(self, op: _Operation) -> float | None:
        if op.deadline is None:
            return None
        remaining = op.deadline - self._clock()
        if remaining <= 0:
            raise self._deadline_error(op)
        return remaining

    def _deadline_error(self, op: _Operation) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"SmartMoving {op.name} did not finish within its {self.deadline_seconds:g} s deadline"
        )

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, base * 2**attempt], capped, so parallel retries spread out."""
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2**attempt)
        return self._random.uniform(0.0, ceiling)

    def redact(self, text: str) -> str:
        """``text`` without this client's key or any piece of it (any case, reversed): for messages built elsewhere."""
        return self._redactor.redact(text)

    def _redact(self, text: str) -> str:
        # Server text is echoed into messages; a misbehaving server or proxy could echo the key, changed.
        # Redacted before it is cut: a cut could leave a piece too short to be recognised as the key's.
        return self._redactor.redact(text)[:_MAX_MESSAGE_CHARS]

    def _scrub_body(self, endpoint: str, response: httpx.Response, body: Any) -> Any:
        """A 2xx body with any echo of the key redacted, before ids, names or values reach a message,
        metadata or the database. One scan of the text; the decoded body is only rebuilt when it leaks."""
        if not self._redactor.leaks(response.text):
            return body
        self._log.warning("SmartMoving %s: the answer held part of the API key; replaced by [redacted]", endpoint)
        return self._redactor.scrub(body)

    def _request(
        self,
        op: _Operation,
        endpoint: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        page: int | None = None,
        expect_json: bool = True,
    ) -> tuple[Any, float]:
        """GET with retries; returns the decoded body and the seconds the successful attempt took."""
        attempt = 0
        json_retried = False
        while True:
            if op.cancel.is_set():
                raise _Cancelled
            remaining = self._remaining(op)
            if self._bucket is not None and not self._bucket.acquire(timeout=remaining):
                raise self._deadline_error(op)
            remaining = self._remaining(op)
            timeout = self.timeout_seconds if remaining is None else min(self.timeout_seconds, remaining)
            self._count(endpoint)
            started = self._clock()
            retry_after: float | None = None
            try:
                response = self._http.get(path, params=params, timeout=timeout)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                # A configuration mistake (base URL without http/https, malformed): retrying cannot help,
                # and nothing reached SmartMoving, so it is no call.
                self._count(endpoint, -1)
                raise UnusableBaseURLError(f"SmartMoving base URL is not usable: {self._redact(str(exc))}") from None
            except httpx.TransportError as exc:
                # Only the class name and httpx's own short text: never the request or its headers.
                problem = f"{type(exc).__name__}: {self._redact(str(exc)) or 'no detail'}"
            else:
                elapsed = self._clock() - started
                status = response.status_code
                if 200 <= status < 300:
                    with self._lock:
                        self._answered.add(endpoint)
                    if not expect_json:
                        return self._redactor.redact(response.text), elapsed
                    try:
                        return self._scrub_body(endpoint, response, response.json()), elapsed
                    except ValueError:
                        if json_retried:
                            raise MalformedPayloadError(endpoint, page, "body", "invalid JSON") from None
                        json_retried = True
                        problem = "invalid JSON on HTTP 200"
                else:
                    message = self._redact(_error_message(response))
                    self._raise_for_final_status(endpoint, response, message)
                    problem = f"HTTP {status}" + (f" ({message})" if message else "")
                    retry_after = _retry_after_seconds(response)
            attempt += 1
            if attempt > self.max_retries:
                raise UpstreamUnavailableError(
                    f"SmartMoving unavailable after {attempt} attempts: {endpoint}: {problem}"
                )
            wait = self._backoff(attempt - 1)
            if retry_after is not None:
                wait = max(wait, retry_after)
                if self._bucket is not None:
                    # The throttle is per key: every thread of this client must hold off, not just this one.
                    self._bucket.pause(wait)
            remaining = self._remaining(op)
            if remaining is not None and wait > remaining:
                raise self._deadline_error(op)
            self._log.warning(
                "SmartMoving %s%s: %s; retry %d of %d in %.2f s",
                endpoint,
                "" if page is None else f" page {page}",
                problem,
                attempt,
                self.max_retries,
                wait,
            )
            self._wait(op, wait)

    def _raise_for_final_status(self, endpoint: str, response: httpx.Response, message: str) -> None:
        """Raise for answers that retrying cannot change; return for retryable ones."""
        status = response.status_code
        # A 404/403 while another endpoint answered from this base URL: the settings are right, this endpoint is
        # out of the key's reach. Only with nothing answered yet is it the base URL (404) or the key (403).
        answered = tuple(sorted(self.answered - {endpoint}))
        if answered and (status == 403 or (status == 404 and endpoint not in RECORD_ENDPOINTS)):
            raise EndpointUnavailableError(self._api_path(response), status, answered, message if status == 403 else "")
        if status == 404:
            if endpoint in RECORD_ENDPOINTS:
                raise NotFoundError(
                    f"SmartMoving answered HTTP 404 for {response.request.url.path}"
                    + (f": {message}" if message else "")
                )
            # Without the query string: it is not secret, but it is noise in a one-line message.
            url = str(response.request.url.copy_with(query=None))
            raise EndpointNotFoundError(self._redact(url), self._redact(self.base_url))
        if status == 401:
            raise AuthenticationError("SmartMoving rejected the API key (401)")
        if status == 403:
            raise AuthorizationError(
                f"SmartMoving refused access to {response.request.url.path} (403)" + (f": {message}" if message else "")
            )
        if status == 429 and (
            "quota" in message.lower() or response.headers.get("x-quota-exceeded", "").lower() == "true"
        ):
            raise QuotaExhaustedError(
                "SmartMoving call quota exhausted for this key (429)" + (f": {message}" if message else "")
            )
        if status == 400 and "not found" in message.lower():
            raise NotFoundError(f"SmartMoving: {message} ({response.request.url.path})")
        if status not in RETRYABLE_STATUSES:
            raise SmartMovingError(
                f"SmartMoving answered HTTP {status} for {response.request.url.path}"
                + (f": {message}" if message else "")
            )

    def _api_path(self, response: httpx.Response) -> str:
        """The request's path as the API's documentation names it (``/api/leads``), without the base URL's."""
        path = response.request.url.path
        prefix = self._http.base_url.path  # the base URL's path + "/api/"
        return "/api/" + path.removeprefix(prefix) if path.startswith(prefix) else path


def _segment(value: str) -> str:
    """An id as one path segment, so a stray '/' or '?' cannot reach another resource."""
    return quote(str(value), safe="")


def _unwrap_page(envelope: Any, endpoint: str, page: int) -> tuple[list[dict], bool]:
    if not isinstance(envelope, dict):
        raise MalformedPayloadError(
            endpoint, page, "body", f"expected the paging envelope, got {type(envelope).__name__}"
        )
    if "pageResults" not in envelope:
        raise MalformedPayloadError(endpoint, page, "pageResults", "missing")
    records = envelope["pageResults"]
    if records is None:
        records = []
    elif not isinstance(records, list):
        raise MalformedPayloadError(endpoint, page, "pageResults", f"expected a list, got {type(records).__name__}")
    last_page = envelope.get("lastPage")
    if not isinstance(last_page, bool):
        raise MalformedPayloadError(endpoint, page, "lastPage", "missing or not a boolean")
    return records, last_page


def _error_message(response: httpx.Response) -> str:
    """The ``message`` of a JSON error body, else the start of the text body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return response.text.strip()


def _retry_after_seconds(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        # The HTTP-date form is allowed but SmartMoving sends seconds; fall back to plain backoff.
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
