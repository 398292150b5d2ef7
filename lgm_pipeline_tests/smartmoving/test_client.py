"""Unit tests of SmartMovingClient against httpx.MockTransport, with simulated time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import httpx
import pytest

from lgm_pipeline.smartmoving.client import SmartMovingClient, calls_in_process
from lgm_pipeline.smartmoving.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigurationError,
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
from lgm_pipeline_tests.smartmoving.conftest import TEST_KEY, FakeTime, Handler, envelope

MakeClient = Callable[..., SmartMovingClient]
DAY = date(2026, 11, 25)


def customer(cid: str, name: str = "") -> dict[str, Any]:
    return {"id": cid, "name": name or f"Customer {cid}", "opportunities": []}


def opportunity(oid: str, jobs: int = 1) -> dict[str, Any]:
    return {"id": oid, "status": 4, "jobs": [{"id": f"{oid}-job{i}", "jobDate": 20261125} for i in range(jobs)]}


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


def sequence(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """A handler answering each request with the next response (or raising the next exception)."""
    remaining = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = remaining.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler


# ---- paging -------------------------------------------------------------------------------------


def test_pages_until_last_page_with_documented_params(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []
    pages = {1: [customer("a"), customer("b")], 2: [customer("c")], 3: [customer("d")]}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        page = int(request.url.params["Page"])
        return ok(envelope(pages[page], page, last=page == 3))

    client = make_client(handler, page_size=2)
    result = list(client.iter_customer_pages(DAY, date(2026, 11, 26)))

    assert [(page, [c["id"] for c in records]) for page, records in result] == [
        (1, ["a", "b"]),
        (2, ["c"]),
        (3, ["d"]),
    ]
    assert len(seen) == 3
    for number, request in enumerate(seen, start=1):
        assert request.url.path == "/v1/api/customers"
        assert dict(request.url.params) == {
            "Page": str(number),
            "PageSize": "2",
            "FromServiceDate": "20261125",
            "ToServiceDate": "20261126",
            "IncludeOpportunityInfo": "true",
        }
        assert request.headers["x-api-key"] == TEST_KEY
        assert "api-key" not in request.url.params
    assert client.calls["customers"] == 3


def test_default_page_size_is_large(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok(envelope([customer(str(i)) for i in range(185)], 1, last=True))

    assert len(make_client(handler).list_customers(DAY, DAY)) == 185
    assert seen[0].url.params["PageSize"] == "500"
    assert len(seen) == 1


def test_null_page_results_is_an_empty_last_page(make_client: MakeClient) -> None:
    client = make_client(sequence(ok(envelope(None, 1, last=True))))
    assert client.list_customers(DAY, DAY) == []


def test_customer_seen_on_two_pages_is_kept_once_as_the_later_copy(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(
        sequence(
            ok(envelope([customer("a"), {"id": "b", "name": "Bea (old)"}], 1, last=False)),
            ok(envelope([{"id": "b", "name": "Bea (new)"}, customer("c")], 2, last=True)),
        )
    )
    with caplog.at_level(logging.WARNING):
        customers = client.list_customers(DAY, DAY)

    assert [c["id"] for c in customers] == ["a", "b", "c"]
    assert customers[1]["name"] == "Bea (new)"
    assert any("b seen again on page 2" in r.getMessage() for r in caplog.records)


def test_empty_page_that_is_not_last_is_refused_rather_than_paged_forever(make_client: MakeClient) -> None:
    client = make_client(sequence(ok(envelope([], 1, last=False))))
    with pytest.raises(MalformedPayloadError) as err:
        client.list_customers(DAY, DAY)
    assert err.value.field == "lastPage"


# ---- failures that must not be retried ----------------------------------------------------------


def test_bad_key_fails_at_once_without_retry(make_client: MakeClient, fake_time: FakeTime) -> None:
    client = make_client(sequence(httpx.Response(401, json={"message": "Unauthorized"})))
    with pytest.raises(AuthenticationError, match=r"rejected the API key \(401\)"):
        client.list_customers(DAY, DAY)
    assert client.calls["customers"] == 1
    assert fake_time.sleeps == []


def test_forbidden_is_an_authorization_error_without_retry(make_client: MakeClient) -> None:
    client = make_client(sequence(httpx.Response(403, json={"message": "Premium only"})))
    with pytest.raises(AuthorizationError, match="Premium only"):
        client.list_branches()
    assert client.calls["branches"] == 1


def test_not_found_answered_as_400_is_not_found(make_client: MakeClient) -> None:
    client = make_client(sequence(httpx.Response(400, json={"message": "Opportunity not found"})))
    with pytest.raises(NotFoundError, match="Opportunity not found"):
        client.get_opportunity("0b7c")
    assert client.calls["opportunity"] == 1


@pytest.mark.parametrize("status", [400, 404])
def test_other_client_errors_are_not_retried(make_client: MakeClient, status: int) -> None:
    client = make_client(sequence(httpx.Response(status, json={"message": "Bad request"})))
    with pytest.raises(SmartMovingError, match=f"HTTP {status}"):
        client.get_opportunity("x1")
    assert client.calls["opportunity"] == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(429, json={"message": "Monthly API quota exceeded"}),
        httpx.Response(429, headers={"X-Quota-Exceeded": "true", "Retry-After": "3600"}),
    ],
    ids=["message", "header"],
)
def test_quota_exhausted_is_raised_without_a_retry_storm(
    make_client: MakeClient, fake_time: FakeTime, response: httpx.Response
) -> None:
    client = make_client(sequence(response))
    with pytest.raises(QuotaExhaustedError):
        client.list_customers(DAY, DAY)
    assert client.calls["customers"] == 1
    assert fake_time.sleeps == []


# ---- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate_limit", [None, 120])
def test_429_waits_the_retry_after_seconds(
    make_client: MakeClient, fake_time: FakeTime, rate_limit: int | None
) -> None:
    client = make_client(
        sequence(
            httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "Too many requests"}),
            httpx.Response(429, headers={"Retry-After": "2"}, json={"message": "Too many requests"}),
            ok(envelope([customer("a")], 1, last=True)),
        ),
        rate_limit_per_minute=rate_limit,
        backoff_base_seconds=0.5,
    )
    assert [c["id"] for c in client.list_customers(DAY, DAY)] == ["a"]
    # Backoff ceilings are 0.5 s and 1 s, below what the server asked, so the server's figure wins;
    # with the rate budget on, the pause must not add any wait on top.
    assert fake_time.sleeps == [7.0, 2.0]
    assert client.calls["customers"] == 3


def test_retry_after_shorter_than_backoff_waits_the_backoff(make_client: MakeClient, fake_time: FakeTime) -> None:
    responses = [httpx.Response(503) for _ in range(4)]
    responses.append(httpx.Response(429, headers={"Retry-After": "0"}))
    client = make_client(sequence(*responses, ok([])), backoff_base_seconds=1.0, backoff_max_seconds=100)
    client.list_branches()
    assert len(fake_time.sleeps) == 5
    for attempt, slept in enumerate(fake_time.sleeps):
        assert 0.0 <= slept <= 2.0**attempt


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_with_capped_full_jitter_backoff(
    make_client: MakeClient, fake_time: FakeTime, status: int
) -> None:
    client = make_client(
        sequence(*[httpx.Response(status) for _ in range(4)], ok(opportunity("o1"))),
        backoff_base_seconds=0.5,
        backoff_max_seconds=2.0,
    )
    assert client.get_opportunity("o1")["id"] == "o1"
    assert client.calls["opportunity"] == 5
    ceilings = [0.5, 1.0, 2.0, 2.0]
    assert len(fake_time.sleeps) == 4
    assert all(0.0 <= slept <= cap for slept, cap in zip(fake_time.sleeps, ceilings, strict=True))


def test_jitter_spreads_the_waits(make_client: MakeClient, fake_time: FakeTime) -> None:
    client = make_client(
        sequence(*[httpx.Response(500) for _ in range(40)], ok([])),
        max_retries=40,
        backoff_base_seconds=10.0,
        backoff_max_seconds=10.0,
        deadline_seconds=None,
    )
    client.list_branches()
    assert len(set(fake_time.sleeps)) > 30


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_errors_are_retried(make_client: MakeClient, error: httpx.TransportError) -> None:
    client = make_client(sequence(error, error, ok([{"id": "b1", "name": "Toronto"}])))
    assert client.list_branches() == [{"id": "b1", "name": "Toronto"}]
    assert client.calls["branches"] == 3


def test_gives_up_after_max_retries(make_client: MakeClient, fake_time: FakeTime) -> None:
    client = make_client(sequence(*[httpx.Response(503) for _ in range(4)]), max_retries=3)
    with pytest.raises(UpstreamUnavailableError, match=r"unavailable after 4 attempts: customers: HTTP 503"):
        client.list_customers(DAY, DAY)
    assert client.calls["customers"] == 4
    assert len(fake_time.sleeps) == 3


def test_gives_up_naming_the_last_transport_error(make_client: MakeClient) -> None:
    client = make_client(sequence(*[httpx.ConnectError("refused") for _ in range(3)]), max_retries=2)
    with pytest.raises(UpstreamUnavailableError, match="after 3 attempts: branches: ConnectError: refused") as err:
        client.list_branches()
    # The httpx exception (which holds the request and its headers) is not chained.
    assert err.value.__cause__ is None
    assert err.value.__context__ is None


def test_retry_is_logged_with_status_attempt_and_wait(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(sequence(httpx.Response(502), ok(envelope([], 1, last=True))))
    with caplog.at_level(logging.INFO):
        client.list_customers(DAY, DAY)
    messages = [r.getMessage() for r in caplog.records if r.name == "lgm_pipeline.smartmoving.client"]
    assert any("customers page 1: HTTP 502; retry 1 of 5 in" in m for m in messages)
    assert any(m.startswith("SmartMoving customers page 1: 0 records in") for m in messages)


# ---- deadline -----------------------------------------------------------------------------------


def test_deadline_stops_a_retry_loop(make_client: MakeClient, fake_time: FakeTime) -> None:
    always_busy = sequence(*[httpx.Response(503, headers={"Retry-After": "100"}) for _ in range(10)])
    client = make_client(always_busy, deadline_seconds=250, max_retries=10)
    with pytest.raises(DeadlineExceededError, match="customers did not finish within its 250 s deadline"):
        client.list_customers(DAY, DAY)
    assert client.calls["customers"] == 3
    assert sum(fake_time.sleeps) <= 250


def test_deadline_is_per_operation(make_client: MakeClient, fake_time: FakeTime) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        fake_time.sleep(40)  # every request takes 40 s of simulated time
        return ok([])

    client = make_client(handler, deadline_seconds=50)
    for _ in range(5):
        client.list_branches()
    assert fake_time.now - 1000 == 200


# ---- malformed payloads -------------------------------------------------------------------------


def test_invalid_json_is_retried_once_then_raised(make_client: MakeClient) -> None:
    garbage = httpx.Response(200, text="<html>gateway</html>")
    client = make_client(sequence(garbage, garbage, ok([])))
    with pytest.raises(MalformedPayloadError, match="branches") as err:
        client.list_branches()
    assert err.value.field == "body"
    assert client.calls["branches"] == 2


def test_a_record_without_an_id_is_passed_on_counted_and_not_fatal(make_client: MakeClient) -> None:
    # A lead: the transform keeps it raw and quarantines it naming the field; failing the pull would hide it.
    client = make_client(
        sequence(
            ok(envelope([customer("z")], 1, last=False)),
            ok(envelope([customer("a"), {"name": "no id"}, customer("a")], 2, last=True)),
        )
    )
    leads = client.list_leads(DAY, DAY)
    assert [c.get("id") for c in leads] == ["z", None, "a"]
    assert (client.received["leads"], client.duplicates["leads"]) == (4, 1)


def test_a_customer_without_an_id_fails_the_pull_naming_page_and_field(make_client: MakeClient) -> None:
    # Its opportunities are found through it: quarantined, its journeys would leave the board.
    client = make_client(
        sequence(ok(envelope([customer("z")], 1, last=False)), ok(envelope([customer("a"), {"name": "x"}], 2, True)))
    )
    with pytest.raises(MalformedPayloadError) as err:
        client.list_customers(DAY, DAY)
    assert (err.value.endpoint, err.value.page, err.value.field) == ("customers", 2, "pageResults[1].id")


def test_invalid_json_once_is_survived(make_client: MakeClient) -> None:
    client = make_client(sequence(httpx.Response(200, text="{trunc"), ok(envelope([customer("a")], 1, True))))
    assert len(client.list_customers(DAY, DAY)) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lastPage": True}, "pageResults"),
        ({"pageResults": []}, "lastPage"),
        ({"pageResults": {"id": "a"}, "lastPage": True}, "pageResults"),
        ([customer("a")], "body"),
    ],
)
def test_malformed_customer_page_names_endpoint_page_and_field(make_client: MakeClient, body: Any, field: str) -> None:
    client = make_client(sequence(ok(envelope([customer("z")], 1, last=False)), ok(body)))
    with pytest.raises(MalformedPayloadError) as err:
        client.list_customers(DAY, DAY)
    assert (err.value.endpoint, err.value.page, err.value.field) == ("customers", 2, field)
    assert f"customers page 2: field {field!r}" in str(err.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": 4, "jobs": []}, "id"),
        ({"id": "o1", "status": 4}, "jobs"),
        ({"id": "o1", "jobs": None}, "jobs"),
        ({"id": "o1", "jobs": [{"id": "j1"}, {"jobNumber": "248238-2"}]}, "jobs[1].id"),
        ({"id": "other", "jobs": []}, "id"),
    ],
)
def test_malformed_opportunity_names_the_field(make_client: MakeClient, body: Any, field: str) -> None:
    client = make_client(sequence(ok(body)))
    with pytest.raises(MalformedPayloadError) as err:
        client.get_opportunity("o1")
    assert (err.value.endpoint, err.value.field) == ("opportunity", field)


def test_opportunity_jobs_are_validated(make_client: MakeClient) -> None:
    client = make_client(sequence(ok([{"id": "j1"}]), ok([{"id": "j1"}, {"type": 1}])))
    assert client.get_opportunity_jobs("o1") == [{"id": "j1"}]
    with pytest.raises(MalformedPayloadError, match=r"\[1\]\.id"):
        client.get_opportunity_jobs("o1")
    assert client.calls["opportunity_jobs"] == 2


def test_ids_cannot_escape_their_path_segment(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return ok([])

    make_client(handler).get_opportunity_jobs("../branches?x=1")
    assert seen[0].url.raw_path.split(b"?")[0] == b"/v1/api/opportunities/..%2Fbranches%3Fx%3D1/jobs"


def test_malformed_payload_error_pickles() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(MalformedPayloadError("customers", 3, "lastPage", "missing")))
    assert (error.endpoint, error.page, error.field, str(error)) == (
        "customers",
        3,
        "lastPage",
        "malformed SmartMoving payload from customers page 3: field 'lastPage' (missing)",
    )


# ---- concurrency --------------------------------------------------------------------------------


def test_get_opportunities_bounded_concurrency_and_dedup() -> None:
    lock = threading.Lock()
    in_flight = 0
    peak = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.005)
        with lock:
            in_flight -= 1
        return ok(opportunity(request.url.path.rsplit("/", 1)[1]))

    ids = [f"o{i}" for i in range(40)] + ["o3", "o7"]
    with SmartMovingClient(
        "https://sm.example.test/v1",
        TEST_KEY,
        max_concurrency=3,
        rate_limit_per_minute=None,
        transport=httpx.MockTransport(handler),
    ) as client:
        details = client.get_opportunities(ids)

    assert list(details) == [f"o{i}" for i in range(40)]
    assert all(details[oid]["id"] == oid for oid in details)
    assert client.calls["opportunity"] == 40
    assert 1 < peak <= 3


def test_get_opportunities_raises_the_first_error_and_cancels_the_rest() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        oid = request.url.path.rsplit("/", 1)[1]
        if oid == "o2":
            return httpx.Response(401)
        time.sleep(0.01)
        return ok(opportunity(oid))

    with (
        SmartMovingClient(
            "https://sm.example.test/v1",
            TEST_KEY,
            max_concurrency=2,
            rate_limit_per_minute=None,
            transport=httpx.MockTransport(handler),
        ) as client,
        pytest.raises(AuthenticationError),
    ):
        client.get_opportunities([f"o{i}" for i in range(200)])
    assert client.calls["opportunity"] < 20


def test_a_batch_raises_the_siblings_failure_even_when_a_stopped_sibling_finishes_first() -> None:
    """The failing request's own future can complete after the siblings it stopped: the error raised is its
    (the quota, the key), never the internal stop, which Dagster would take for a retryable crash."""

    class SlowToFail(SmartMovingClient):
        def _get_opportunity_or_stop(self, op: Any, opportunity_id: str) -> dict:
            try:
                return super()._get_opportunity_or_stop(op, opportunity_id)
            except SmartMovingError:
                time.sleep(0.3)  # the siblings, stopped by now, finish first
                raise

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/o1"):
            time.sleep(0.05)  # o2 is in its retry wait when o1 fails
            return httpx.Response(429, json={"message": "Monthly API call quota exceeded"})
        return httpx.Response(503)

    with (
        SlowToFail(
            "https://sm.example.test/v1",
            TEST_KEY,
            max_concurrency=2,
            rate_limit_per_minute=None,
            backoff_base_seconds=5.0,
            transport=httpx.MockTransport(handler),
        ) as client,
        pytest.raises(QuotaExhaustedError),
    ):
        client.get_opportunities(["o1", "o2"])


def test_get_opportunities_shares_one_deadline(make_client: MakeClient, fake_time: FakeTime) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        fake_time.sleep(10)
        return ok(opportunity(request.url.path.rsplit("/", 1)[1]))

    client = make_client(handler, deadline_seconds=55, max_concurrency=1)
    with pytest.raises(DeadlineExceededError, match="opportunities"):
        client.get_opportunities([f"o{i}" for i in range(10)])
    assert client.calls["opportunity"] == 6


def test_call_counts_include_retries_per_endpoint(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/ping"):
            return httpx.Response(200, text="pong")
        if path.endswith("/branches"):
            return ok(envelope([{"id": "b1", "name": "Toronto"}], 1, last=True))
        return ok(opportunity(path.rsplit("/", 1)[1]))

    flaky = {"count": 0}

    def flaky_handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/o1") and flaky["count"] == 0:
            flaky["count"] += 1
            return httpx.Response(500)
        return handler(request)

    client = make_client(flaky_handler)
    assert isinstance(client.ping(), float)
    assert [b["name"] for b in client.list_branches()] == ["Toronto"]
    client.get_opportunities(["o1", "o2"])
    assert client.calls == {"ping": 1, "branches": 1, "opportunity": 3}


# ---- the key never leaks ------------------------------------------------------------------------


def test_repr_shows_base_url_only(make_client: MakeClient) -> None:
    client = make_client(sequence())
    assert repr(client) == "SmartMovingClient(base_url='https://sm.example.test/v1')"


def test_key_never_appears_in_logs_messages_or_reprs(make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    import traceback

    echo = {"message": f"bad key {TEST_KEY}"}
    scenarios: list[httpx.Response | Exception] = [
        httpx.Response(401, json=echo),
        httpx.Response(403, json=echo),
        httpx.Response(400, json={"message": f"Customer not found for {TEST_KEY}"}),
        httpx.Response(400, text=TEST_KEY),
        httpx.Response(429, json={"message": f"quota spent by {TEST_KEY}"}),
        httpx.Response(200, text=f"not json {TEST_KEY}"),
        httpx.ConnectError(f"refused {TEST_KEY}"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(503, json=echo),
    ]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for logger in ("httpx", "httpcore", "lgm_pipeline"):
            logging.getLogger(logger).setLevel(logging.DEBUG)
        for scenario in scenarios:
            client = make_client(sequence(*[scenario] * 3), max_retries=2)
            texts.append(repr(client))
            for call in (
                lambda c=client: c.list_customers(DAY, DAY),
                lambda c=client: c.get_opportunity("o1"),
            ):
                client = make_client(sequence(*[scenario] * 3), max_retries=2)
                with pytest.raises(SmartMovingError) as err:
                    call(client)
                texts += [str(err.value), repr(err.value), *traceback.format_exception(err.value)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    assert len(caplog.records) > 10
    leaks = [text for text in texts if TEST_KEY in text]
    assert leaks == []


def test_opportunity_deleted_since_the_list_is_left_out_not_fatal(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        oid = request.url.path.rsplit("/", 1)[-1]
        if oid == "gone":
            return httpx.Response(400, json={"message": "Opportunity not found"})
        return httpx.Response(200, json={"id": oid, "jobs": []})

    client = make_client(handler)
    details = client.get_opportunities(["a", "gone", "b"])
    assert sorted(details) == ["a", "b"]
    assert client.calls["opportunity"] == 3  # one call each, no retry of the missing one


def test_base_url_without_scheme_fails_at_once(fake_time) -> None:
    client = SmartMovingClient("SMARTMOVING_BASE_URL", TEST_KEY, rate_limit_per_minute=None, sleep=fake_time.sleep)
    with pytest.raises(SmartMovingError, match="base URL is not usable"):
        client.ping()
    assert fake_time.sleeps == []
    client.close()


def _paged(pulls: list[list[list[dict]]], total: int) -> tuple[Handler, list[int]]:
    """Serves pull after pull (each a list of pages); every envelope claims ``total`` customers."""
    served: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["Page"])
        if page == 1:
            served.append(1)
        pages = pulls[min(len(served), len(pulls)) - 1]
        body = envelope(pages[page - 1], page, page == len(pages)) | {"totalResults": total}
        return httpx.Response(200, json=body)

    return handler, served


def test_customer_lost_between_pages_is_pulled_again(make_client: MakeClient) -> None:
    a, b, c, d = ({"id": x, "name": x} for x in "abcd")
    # First pull: c was renamed while we paged and fell between page 1 and page 2.
    handler, pulls = _paged([[[a, b], [d]], [[a, b], [c, d]]], total=4)
    customers = make_client(handler).list_customers(date(2026, 11, 25), date(2026, 11, 25))
    assert sorted(x["id"] for x in customers) == ["a", "b", "c", "d"]
    assert len(pulls) == 2


def test_list_short_twice_fails_instead_of_dropping_a_customer(make_client: MakeClient) -> None:
    a, b, d = ({"id": x, "name": x} for x in "abd")
    handler, _ = _paged([[[a, b], [d]]], total=4)
    with pytest.raises(SmartMovingError, match="received 3 of 4"):
        make_client(handler).list_customers(date(2026, 11, 25), date(2026, 11, 25))


# ---- what retrying cannot heal ------------------------------------------------------------------


@pytest.mark.parametrize("call", ["customers", "branches", "leads", "ping"])
def test_404_on_a_list_endpoint_is_a_configuration_error_at_once(make_client: MakeClient, fake_time, call) -> None:
    client = make_client(lambda request: httpx.Response(404, text="Not Found"))
    calls = {
        "customers": lambda: client.list_customers(DAY, DAY),
        "branches": client.list_branches,
        "leads": lambda: client.list_leads(DAY, DAY),
        "ping": client.ping,
    }
    with pytest.raises(EndpointNotFoundError, match="404 Not Found for ") as raised:
        calls[call]()
    assert isinstance(raised.value, ConfigurationError)
    assert "?" not in str(raised.value)  # the URL tried, without its query string
    assert sum(client.calls.values()) == 1 and fake_time.sleeps == []


def _customers_answer_then(status: int) -> Handler:
    """SmartMoving with the base URL right: the customers list answers, every other endpoint ``status``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/customers"):
            return ok(envelope([customer("c1")], 1, True))
        return httpx.Response(status, json={"message": "Forbidden" if status == 403 else "Not Found"})

    return handler


@pytest.mark.parametrize("status", [403, 404])
def test_a_404_or_403_after_another_endpoint_answered_is_that_endpoints_alone(
    make_client: MakeClient, fake_time, status: int
) -> None:
    client = make_client(_customers_answer_then(status))
    client.list_customers(DAY, DAY)
    with pytest.raises(EndpointUnavailableError) as raised:
        client.list_leads(DAY, DAY)
    error = raised.value
    assert not isinstance(error, ConfigurationError)  # no setting to fix, no "check SMARTMOVING_BASE_URL"
    assert (error.path, error.status, error.answered) == ("/api/leads", status, ("customers",))
    expected = "may not include /api/leads" if status == 404 else "refused access to /api/leads (403)"
    assert expected in str(error) and "customers answered" in str(error)
    assert client.calls["leads"] == 1 and fake_time.sleeps == []
    import pickle

    again = pickle.loads(pickle.dumps(error))  # Dagster carries a step's error across processes
    assert (type(again), str(again), again.status) == (EndpointUnavailableError, str(error), status)


def test_endpoints_noted_from_earlier_steps_count_as_answered(make_client: MakeClient) -> None:
    """A step's fresh client told what answered earlier in the run (the leads after the pull)."""
    client = make_client(lambda request: httpx.Response(404, text="Not Found"))
    client.note_answered(["customers", "opportunity"])
    with pytest.raises(EndpointUnavailableError, match=r"customers and opportunity answered from the same base URL"):
        client.list_branches()


@pytest.mark.parametrize(("status", "error"), [(404, EndpointNotFoundError), (403, AuthorizationError)])
def test_the_first_endpoint_refusing_is_still_the_settings(make_client: MakeClient, status: int, error: type) -> None:
    # Only the endpoint itself answered before (an earlier page): nothing proves the base URL or key right.
    client = make_client(lambda request: httpx.Response(status, text="Not Found"))
    client.note_answered(["leads"])
    with pytest.raises(error):
        client.list_leads(DAY, DAY)


def test_a_404_on_a_record_after_the_list_answered_is_still_a_vanished_record(make_client: MakeClient) -> None:
    client = make_client(_customers_answer_then(404))
    client.list_customers(DAY, DAY)
    with pytest.raises(NotFoundError):
        client.get_opportunity("gone")


def test_404_on_one_opportunity_is_a_vanished_record_not_a_configuration_error(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        oid = request.url.path.rsplit("/", 1)[-1]
        return (
            httpx.Response(404, text="Not Found")
            if oid == "gone"
            else httpx.Response(200, json={"id": oid, "jobs": []})
        )

    client = make_client(handler)
    assert sorted(client.get_opportunities(["a", "gone"])) == ["a"]


@pytest.mark.parametrize("base_url", ["http://sm.test:notaport/v1", "https:///v1"])
def test_a_malformed_base_url_is_a_configuration_error(fake_time, base_url: str) -> None:
    # A host-less URL fails at construction, an invalid port at the first request: never a retry.
    with (
        pytest.raises(UnusableBaseURLError, match="base URL is not usable"),
        SmartMovingClient(base_url, TEST_KEY, rate_limit_per_minute=None, sleep=fake_time.sleep) as client,
    ):
        client.ping()
    assert fake_time.sleeps == []


def test_transient_errors_keep_their_retries(make_client: MakeClient, fake_time) -> None:
    client = make_client(sequence(httpx.Response(503), httpx.Response(502), ok([])))
    assert client.list_branches() == []
    assert client.calls["branches"] == 3 and len(fake_time.sleeps) == 2


def test_every_attempt_counts_in_the_process_including_failed_ones(make_client: MakeClient) -> None:
    before = calls_in_process()
    client = make_client(lambda request: httpx.Response(401))
    with pytest.raises(AuthenticationError):
        client.list_branches()
    spent = calls_in_process()
    spent.subtract(before)
    assert spent["branches"] == 1


def test_a_retry_wait_of_a_cancelled_batch_ends_at_once() -> None:
    client = SmartMovingClient("http://sm.test/v1", TEST_KEY, rate_limit_per_minute=None)
    operation = client._operation("opportunities")
    threading.Timer(0.1, operation.cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Exception, match="") as raised:
        client._wait(operation, 30.0)
    assert type(raised.value).__name__ == "_Cancelled"
    assert time.monotonic() - started < 5
    client.close()
