"""The simulator's SmartMoving webhooks, received by a real HTTP server on loopback."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from lgm_pipeline.cli.main import build_parser
from lgm_pipeline.simulator import (
    SimulatorConfig,
    WebhookFaults,
    WebhookSender,
    World,
    parse_webhook_fault_options,
)
from lgm_pipeline_tests.simulator.conftest import MakeSimulator

DAY = dt.date(2026, 3, 2)
SECRET = "whk-0123456789abcdef"
BOOKED, COMPLETED, CLOSED, CANCELLED = 4, 10, 11, 20


class Receiver:
    """Records every POST; answers the statuses queued in ``answers`` first, then 200."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.requests: list[tuple[str, int, dict[str, Any]]] = []  # (path, status answered, body)
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with receiver._changed:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.requests.append((self.path, status, body))
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # its request lines hold the path, which the log tests look for

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # A short poll keeps close() (shutdown waits for a poll) from slowing every test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str = f"/hooks/{SECRET}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """The bodies answered with a 2xx, in arrival order."""
        with self._changed:
            return [body for _, status, body in self.requests if 200 <= status < 300]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.requests) >= count, timeout), self.requests

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def make_sender() -> Iterator[Callable[..., WebhookSender]]:
    senders: list[WebhookSender] = []

    def make(url: str | None, seed: int = 7, **faults: Any) -> WebhookSender:
        sender = WebhookSender(url, WebhookFaults(**faults), seed=seed)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        sender.stop()


def _events(count: int) -> list[dict[str, Any]]:
    return [
        {"event-type": "opportunity-changed", "opportunity-id": f"opp-{i}", "customer-id": "c"} for i in range(count)
    ]


def _ids(bodies: list[dict[str, Any]]) -> list[str]:
    return [body["opportunity-id"] for body in bodies]


# ---- what each change sends ---------------------------------------------------------------------


def test_each_admin_change_sends_smartmovings_payload(make_simulator: MakeSimulator, receiver: Receiver) -> None:
    sim = make_simulator()
    sim.set_webhooks(receiver.url())
    with httpx.Client(base_url=sim.admin_url, timeout=10) as admin:
        added = admin.post("/add", json={"service_date": DAY.isoformat()}).json()
        opp, customer = added["opportunity_id"], added["customer_id"]
        other = admin.post("/add", json={"service_date": DAY.isoformat()}).json()
        admin.post("/reschedule", json={"job_id": added["job_ids"][0], "to_date": "2026-03-03"}).raise_for_status()
        admin.post("/patch", json={"opportunity_id": opp, "opportunity": {"volume": 1}}).raise_for_status()
        admin.post("/rename", json={"customer_id": customer, "name": "Renée Tremblay"}).raise_for_status()
        admin.post("/cancel", json={"opportunity_id": opp}).raise_for_status()
        admin.post("/delete", json={"opportunity_id": other["opportunity_id"]}).raise_for_status()
        lead = sim.world.lead_ids_on(DAY)[0]
        converted = admin.post("/convert-lead", json={"lead_id": lead}).json()["opportunity_id"]
    assert sim.flush_webhooks(5)

    lead_customer = sim.world.opportunity_detail(converted)["customer"]["id"]
    assert receiver.delivered == [
        {"event-type": "customer-created", "customer-id": customer},
        {
            "event-type": "opportunity-created",
            "opportunity-id": opp,
            "opportunity-status": BOOKED,
            "customer-id": customer,
        },
        {"event-type": "customer-created", "customer-id": other["customer_id"]},
        {
            "event-type": "opportunity-created",
            "opportunity-id": other["opportunity_id"],
            "opportunity-status": BOOKED,
            "customer-id": other["customer_id"],
        },
        {"event-type": "opportunity-changed", "opportunity-id": opp, "customer-id": customer},
        {"event-type": "opportunity-changed", "opportunity-id": opp, "customer-id": customer},
        {"event-type": "customer-updated", "customer-id": customer},
        {
            "event-type": "opportunity-status-changed",
            "opportunity-id": opp,
            "opportunity-status": CANCELLED,
            "customer-id": customer,
        },
        {"event-type": "opportunity-deleted", "opportunity-id": other["opportunity_id"]},
        {"event-type": "customer-created", "customer-id": lead_customer},
        {
            "event-type": "opportunity-created",
            "opportunity-id": converted,
            "opportunity-status": BOOKED,
            "customer-id": lead_customer,
        },
    ]
    stats = sim.webhook_stats()
    assert (stats["sent"], stats["delivered"], stats["attempts"], stats["pending"]) == (11, 11, 11, 0)


def test_closing_a_day_sends_a_status_change_per_opportunity_it_completes_or_closes(
    make_simulator: MakeSimulator, receiver: Receiver
) -> None:
    sim = make_simulator()
    booked = sim.world.add_booking(DAY)
    sim.set_webhooks(receiver.url())
    changes = sim.world.close_day(DAY) + sim.world.close_day(DAY + dt.timedelta(days=1))
    assert sim.flush_webhooks(5)

    expected = []
    for line in changes:  # "status <id> <from>-><to>"
        _, opp_id, move = line.split()
        customer = sim.world.opportunity_detail(opp_id)["customer"]["id"]
        expected.append(
            {
                "event-type": "opportunity-status-changed",
                "opportunity-id": opp_id,
                "opportunity-status": int(move.split("->")[1]),
                "customer-id": customer,
            }
        )
    assert receiver.delivered == expected
    mine = [e["opportunity-status"] for e in expected if e["opportunity-id"] == booked["opportunity_id"]]
    assert mine[0] == COMPLETED and set(mine) <= {COMPLETED, CLOSED}


def _expected_from_evolution(world: World, lines: list[str]) -> list[dict[str, Any]]:
    """The events each line of ``World.evolve``'s log stands for, in order."""

    def customer_of(opp_id: str) -> str:
        return world.opportunity_detail(opp_id)["customer"]["id"]

    def created(opp_id: str) -> list[dict[str, Any]]:
        customer = customer_of(opp_id)
        return [
            {"event-type": "customer-created", "customer-id": customer},
            {
                "event-type": "opportunity-created",
                "opportunity-id": opp_id,
                "opportunity-status": BOOKED,
                "customer-id": customer,
            },
        ]

    expected: list[dict[str, Any]] = []
    for line in lines:
        kind, subject, *rest = line.split()
        if kind in ("status", "cancel"):
            status = int(rest[0].split("->")[1]) if kind == "status" else CANCELLED
            expected.append(
                {
                    "event-type": "opportunity-status-changed",
                    "opportunity-id": subject,
                    "opportunity-status": status,
                    "customer-id": customer_of(subject),
                }
            )
        elif kind == "reschedule":
            opp_id = next(o for o, opp in world.opportunities.items() if any(j["id"] == subject for j in opp["jobs"]))
            expected.append(
                {"event-type": "opportunity-changed", "opportunity-id": opp_id, "customer-id": customer_of(opp_id)}
            )
        elif kind == "book":
            expected.extend(created(subject))
        elif kind == "convert":
            expected.extend(created(rest[-1]))
        else:
            assert kind in ("email", "phone"), line
            expected.append({"event-type": "customer-updated", "customer-id": subject})
    return expected


def test_evolution_sends_an_event_per_change_it_logs() -> None:
    world = World(SimulatorConfig(customers_per_day=40, churn=0.2))
    world.ensure_dates(DAY, DAY)
    world.ensure_lead_dates(DAY, DAY)
    received: list[dict[str, Any]] = []
    world.on_change.append(received.append)
    lines = world.evolve(3)

    kinds = {line.split()[0] for line in lines}
    assert {"status", "reschedule", "book", "convert"} <= kinds and kinds & {"email", "phone"}
    assert received == _expected_from_evolution(world, lines)


def test_generating_dates_and_reading_send_nothing(make_simulator: MakeSimulator, receiver: Receiver) -> None:
    sim = make_simulator()
    sim.set_webhooks(receiver.url())
    with httpx.Client(base_url=sim.base_url, headers={"x-api-key": sim.api_key}, timeout=10) as api:
        params = {"FromServiceDate": 20260302, "ToServiceDate": 20260303, "IncludeOpportunityInfo": "true"}
        assert api.get("/api/customers", params=params).json()["totalResults"] > 0
    sim.world.ensure_lead_dates(DAY, DAY)
    assert sim.flush_webhooks(5)
    assert sim.webhook_stats()["sent"] == 0 and receiver.requests == []


def test_without_a_url_nothing_is_sent_nor_built(make_simulator: MakeSimulator, receiver: Receiver) -> None:
    sim = make_simulator(churn=0.3)
    sim.world.ensure_dates(DAY, DAY)
    assert sim.world.on_change == []
    sim.world.evolve(2)
    sim.world.add_booking(DAY)

    sim.set_webhooks(receiver.url())
    sim.set_webhooks(None)  # cleared: the world stops calling the sender
    assert sim.world.on_change == []
    sim.world.add_booking(DAY)
    assert sim.flush_webhooks(5)
    assert receiver.requests == []
    assert sim.webhook_stats()["sent"] == 0


# ---- delivery: retries ----------------------------------------------------------------------------


def test_a_503_is_retried_and_the_event_delivered_once(make_sender: Any, receiver: Receiver) -> None:
    receiver.answers = [503, 503]
    sender = make_sender(receiver.url())
    sender.submit(_events(1)[0])
    assert sender.flush(5)
    assert [status for _, status, _ in receiver.requests] == [503, 503, 200]
    assert _ids(receiver.delivered) == ["opp-0"]
    stats = sender.stats()
    assert (stats["delivered"], stats["failed"], stats["attempts"], stats["pending"]) == (1, 0, 3, 0)


def test_a_429_and_a_408_are_retried(make_sender: Any, receiver: Receiver) -> None:
    receiver.answers = [429, 408]
    sender = make_sender(receiver.url())
    sender.submit(_events(1)[0])
    assert sender.flush(5)
    assert sender.stats()["delivered"] == 1 and sender.stats()["attempts"] == 3


def test_a_404_is_not_retried(make_sender: Any, receiver: Receiver) -> None:
    receiver.answers = [404]
    sender = make_sender(receiver.url())
    sender.submit(_events(1)[0])
    assert sender.flush(5)
    assert len(receiver.requests) == 1
    stats = sender.stats()
    assert (stats["delivered"], stats["failed"], stats["attempts"], stats["pending"]) == (0, 1, 1, 0)


def test_retries_stop_at_max_attempts(make_sender: Any, receiver: Receiver) -> None:
    receiver.answers = [500] * 10
    sender = make_sender(receiver.url(), max_attempts=2)
    sender.submit(_events(1)[0])
    assert sender.flush(5)
    assert len(receiver.requests) == 2
    assert (sender.stats()["failed"], sender.stats()["attempts"]) == (1, 2)


def test_a_receiver_that_is_not_there_is_retried_then_given_up(make_sender: Any, receiver: Receiver) -> None:
    url = receiver.url()
    receiver.close()  # the port now refuses connections
    sender = make_sender(url, max_attempts=2)
    sender.submit(_events(1)[0])
    assert sender.flush(5)
    assert (sender.stats()["failed"], sender.stats()["attempts"]) == (1, 2)


# ---- delivery: faults -----------------------------------------------------------------------------


def test_loss_rate_one_loses_every_event_and_counts_them(make_sender: Any, receiver: Receiver) -> None:
    sender = make_sender(receiver.url(), loss_rate=1.0)
    for event in _events(5):
        sender.submit(event)
    assert sender.flush(5)
    assert receiver.requests == []
    stats = sender.stats()
    assert (stats["sent"], stats["lost"], stats["delivered"], stats["attempts"], stats["pending"]) == (5, 5, 0, 0, 0)


def test_duplicate_rate_one_sends_every_event_twice(make_sender: Any, receiver: Receiver) -> None:
    sender = make_sender(receiver.url(), duplicate_rate=1.0)
    for event in _events(3):
        sender.submit(event)
    assert sender.flush(5)
    assert _ids(receiver.delivered) == ["opp-0", "opp-0", "opp-1", "opp-1", "opp-2", "opp-2"]
    stats = sender.stats()
    assert (stats["delivered"], stats["duplicated"], stats["attempts"]) == (3, 3, 6)


def test_reorder_rate_one_sends_each_held_event_after_the_next(make_sender: Any, receiver: Receiver) -> None:
    sender = make_sender(receiver.url(), reorder_rate=1.0)
    for event in _events(5):
        sender.submit(event)
    assert sender.flush(5)  # the last one has no successor: flush releases it
    assert _ids(receiver.delivered) == ["opp-1", "opp-0", "opp-3", "opp-2", "opp-4"]
    assert sender.stats()["delivered"] == 5


def test_delay_ms_holds_each_event_back(make_sender: Any, receiver: Receiver) -> None:
    sender = make_sender(receiver.url(), delay_ms=150)
    started = time.monotonic()
    sender.submit(_events(1)[0])
    assert sender.flush(5)
    assert time.monotonic() - started >= 0.15
    assert _ids(receiver.delivered) == ["opp-0"]


def test_mixed_faults_are_the_same_for_the_same_seed(make_sender: Any, receiver: Receiver) -> None:
    faults = {"loss_rate": 0.2, "duplicate_rate": 0.2, "reorder_rate": 0.2}

    def run(path: str, seed: int) -> list[str]:
        sender = make_sender(receiver.url(path), seed=seed, **faults)
        for event in _events(30):
            sender.submit(event)
        assert sender.flush(5)
        stats = sender.stats()
        assert stats["sent"] == stats["delivered"] + stats["lost"] == 30
        return [body["opportunity-id"] for p, _, body in receiver.requests if p == path]

    first, again, other = run("/a", 7), run("/b", 7), run("/c", 8)
    assert first == again
    assert first != other
    # Each fault showed at least once in 30 events: one missing, one twice, one out of order.
    assert len(set(first)) < 30 and len(first) != len(set(first)) and first != sorted(first, key=lambda i: int(i[4:]))


# ---- stopping, the admin API, configuration and logs ----------------------------------------------


def test_stopping_with_events_pending_returns_promptly(make_simulator: MakeSimulator, receiver: Receiver) -> None:
    receiver.answers = [503] * 1000
    sim = make_simulator()
    sim.set_webhooks(receiver.url(), WebhookFaults(delay_ms=50))
    for _ in range(20):
        sim.world.add_booking(DAY)
    receiver.wait_for(1)
    assert sim.webhook_stats()["pending"] > 0

    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    assert not sim.flush_webhooks(0.1)  # stopped: what was pending stays pending


def test_the_admin_api_sets_reads_and_clears_webhooks_per_tenant(
    make_simulator: MakeSimulator, receiver: Receiver
) -> None:
    sim = make_simulator(tenants=2)
    with httpx.Client(base_url=sim.admin_url, timeout=10) as admin:
        settings = admin.post(
            "/webhooks?tenant=2", json={"url": receiver.url(), "faults": {"duplicate_rate": 1.0}}
        ).json()
        # the receiver's origin only: the URL's path holds the token
        assert settings == {
            "url": receiver.url(""),
            "faults": {"duplicate_rate": 1.0, "reorder_rate": 0.0, "delay_ms": 0, "loss_rate": 0.0, "max_attempts": 5},
        }
        admin.post("/add?tenant=2", json={"service_date": DAY.isoformat()}).raise_for_status()
        admin.post("/add", json={"service_date": DAY.isoformat()}).raise_for_status()  # tenant 1: no URL
        assert sim.flush_webhooks(5, tenant=2)
        stats = admin.get("/webhooks", params={"tenant": 2}).json()
        assert {k: stats[k] for k in ("sent", "delivered", "failed", "lost", "duplicated", "attempts", "pending")} == {
            "sent": 2,
            "delivered": 2,
            "failed": 0,
            "lost": 0,
            "duplicated": 2,
            "attempts": 4,
            "pending": 0,
        }
        assert stats["url"] == receiver.url("") and stats["faults"]["duplicate_rate"] == 1.0
        assert SECRET not in json.dumps(stats)
        assert admin.get("/webhooks").json()["url"] is None  # tenant 1's own
        assert sim.webhook_stats(tenant=1)["sent"] == 0

        unknown = admin.post("/webhooks", json={"url": receiver.url(), "faults": {"dupliate_rate": 1}})
        assert unknown.status_code == 400 and "dupliate_rate" in unknown.text
        bad_rate = admin.post("/webhooks", json={"url": receiver.url(), "faults": {"loss_rate": 2}})
        assert bad_rate.status_code == 400
        not_http = admin.post("/webhooks", json={"url": f"ftp://127.0.0.1/{SECRET}"})
        assert not_http.status_code == 400 and SECRET not in not_http.text

        cleared = admin.post("/webhooks", json={"tenant": 2, "url": None}).json()
        assert cleared["url"] is None
        admin.post("/add?tenant=2", json={"service_date": DAY.isoformat()}).raise_for_status()
        assert admin.get("/webhooks?tenant=2").json()["sent"] == 2
    assert len(receiver.requests) == 4


def test_a_configured_url_names_each_tenant(make_simulator: MakeSimulator, receiver: Receiver) -> None:
    sim = make_simulator(
        tenants=2, webhook_url=receiver.url("/t{tenant}/" + SECRET), webhook_faults=WebhookFaults(max_attempts=2)
    )
    sim.tenant_world(2).add_booking(DAY)
    sim.world.add_booking(DAY)
    assert sim.flush_webhooks(5, tenant=2) and sim.flush_webhooks(5, tenant=1)
    paths = [path for path, _, _ in receiver.requests]
    assert sorted(paths) == [f"/t1/{SECRET}"] * 2 + [f"/t2/{SECRET}"] * 2
    assert sim.webhook_stats(tenant=2)["faults"]["max_attempts"] == 2


def test_the_url_path_is_never_logged(
    make_simulator: MakeSimulator,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.answers = [503, 404, 500, 500]
    sim = make_simulator()
    sim.set_webhooks(receiver.url(), WebhookFaults(max_attempts=2))
    # Six events: the first meets a 503 then a final 404, the second two 500s; four are delivered.
    for _ in range(3):
        sim.world.add_booking(DAY)
    assert sim.flush_webhooks(5)
    sim.set_webhooks(f"http://127.0.0.1:1/refused/{SECRET}", WebhookFaults(max_attempts=1))
    sim.world.add_booking(DAY)
    assert sim.flush_webhooks(5)
    stats = sim.webhook_stats()
    assert (stats["delivered"], stats["failed"]) == (4, 4)

    out, err = capsys.readouterr()
    logged = caplog.text + out + err
    assert f"127.0.0.1:{receiver.port}" in logged  # the origin is named ...
    assert SECRET not in logged and "/hooks" not in logged  # ... never the path


def test_webhook_faults_refuse_unknown_or_out_of_range_values() -> None:
    assert WebhookFaults.from_dict({"loss_rate": 0.5}).to_dict()["loss_rate"] == 0.5
    assert WebhookFaults.from_dict(WebhookFaults(delay_ms=3).to_dict()) == WebhookFaults(delay_ms=3)
    with pytest.raises(ValueError, match="unknown webhook fault fields"):
        WebhookFaults.from_dict({"loss": 0.5})
    with pytest.raises(ValueError, match="max_attempts"):
        WebhookFaults(max_attempts=0)
    with pytest.raises(ValueError, match="duplicate_rate"):
        WebhookFaults(duplicate_rate=1.5)


def test_the_cli_takes_a_webhook_url_and_faults(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        [
            "simulator",
            "--webhook-url",
            f"http://127.0.0.1:9000/hooks/{SECRET}",
            "--webhook-fault",
            "duplicate_rate=0.1",
            "--webhook-fault",
            "max_attempts=3",
        ]
    )
    assert args.webhook_url.endswith(SECRET)
    assert parse_webhook_fault_options(args.webhook_fault) == WebhookFaults(duplicate_rate=0.1, max_attempts=3)
    assert parse_webhook_fault_options([]) == WebhookFaults()
    with pytest.raises(ValueError, match="unknown webhook fault fields"):
        parse_webhook_fault_options(["loss=0.1"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_webhook_fault_options(["loss_rate"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulator", "--help"])
    text = capsys.readouterr().out
    assert "--webhook-url" in text and "--webhook-fault" in text
