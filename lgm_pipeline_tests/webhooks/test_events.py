"""Reading SmartMoving's webhook payloads: what is served, what is ignored, what is unreadable and why."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lgm_pipeline.storage.tables import WEBHOOK_STATES
from lgm_pipeline.webhooks.events import EVENT_KINDS, MalformedBody, ReadEvent, read_event


def _read(payload: Any) -> ReadEvent:
    return read_event(json.dumps(payload).encode())


def test_the_documented_kebab_case_payload_is_pending() -> None:
    event = _read({"event-type": "opportunity-status-changed", "opportunity-id": " 6f1c-42 ", "opportunity-status": 3})
    assert (event.event_type, event.opportunity_id, event.customer_id) == (
        "opportunity-status-changed",
        "6f1c-42",
        None,
    )
    assert (event.state, event.reason) == ("pending", None)
    assert event.payload["opportunity-status"] == 3  # the payload is kept whole


@pytest.mark.parametrize(
    "payload",
    [
        {"eventType": "opportunity-created", "opportunityId": "o1", "customerId": "c1"},
        {"event_type": "opportunity-created", "opportunity_id": "o1", "customer_id": "c1"},
        {"EventType": "opportunityCreated", "OpportunityId": "o1", "CustomerId": "c1"},
        {"event-type": "opportunity_created", "opportunity-id": "o1", "customer-id": "c1"},
        # the same field twice, with the same value: nothing to choose between
        {"event-type": "opportunity-created", "opportunity-id": "o1", "opportunityId": "o1", "customer-id": "c1"},
    ],
)
def test_camel_and_snake_case_read_the_same(payload: dict[str, Any]) -> None:
    event = _read(payload)
    assert (event.event_type, event.opportunity_id, event.customer_id, event.state) == (
        "opportunity-created",
        "o1",
        "c1",
        "pending",
    )


def test_integer_ids_are_read_as_text() -> None:
    event = _read({"event-type": "job-finalized", "opportunity-id": 123456, "customer-id": 98})
    assert (event.opportunity_id, event.customer_id, event.state) == ("123456", "98", "pending")


def test_every_opportunity_and_job_kind_is_a_refresh_and_customer_kinds_the_cycle() -> None:
    for name, kind in EVENT_KINDS.items():
        expected = "refresh" if name.startswith(("opportunity-", "job-")) else "cycle"
        assert kind.service == expected, name
    assert {"customer-created", "customer-updated"} == {n for n, k in EVENT_KINDS.items() if k.service == "cycle"}


def test_an_unknown_event_type_is_stored_ignored() -> None:
    event = _read({"event-type": "invoice-paid", "opportunity-id": "o1"})
    assert (event.event_type, event.opportunity_id, event.state) == ("invoice-paid", "o1", "ignored")
    assert event.reason == "unknown event type 'invoice-paid': stored, not served"


def test_a_customer_event_without_an_opportunity_is_left_to_the_cycle() -> None:
    event = _read({"event-type": "customer-updated", "customer-id": "c1"})
    assert (event.customer_id, event.state) == ("c1", "ignored")
    assert "2-hour cycle" in (event.reason or "")


def test_a_customer_event_naming_an_opportunity_is_served() -> None:
    event = _read({"event-type": "customer-created", "customer-id": "c1", "opportunity-id": "o1"})
    assert (event.opportunity_id, event.state) == ("o1", "pending")


@pytest.mark.parametrize(
    ("value", "shown"),
    [({"a": 1}, "{'a': 1}"), ("", "''"), ("   ", "'   '"), (True, "True"), (1.5, "1.5"), (["o1"], "['o1']")],
)
def test_an_unreadable_opportunity_id_names_the_field_and_the_value(value: Any, shown: str) -> None:
    event = _read({"event-type": "opportunity-changed", "opportunity-id": value})
    assert event.state == "unreadable"
    assert event.reason == f"opportunity-id: expected an id, got {shown}"
    assert event.event_type == "opportunity-changed" and event.opportunity_id is None


def test_an_unreadable_id_is_not_taken_for_a_missing_one() -> None:
    # a customer event without an opportunity is ignored; with an unreadable one it is not
    event = _read({"event-type": "customer-updated", "customerId": "c1", "opportunityId": False})
    assert event.state == "unreadable"
    assert event.reason == "opportunityId: expected an id, got False"
    assert event.customer_id == "c1"  # what could be read is kept


def test_one_field_given_twice_with_different_values_is_unreadable() -> None:
    event = _read({"event-type": "job-created", "opportunity-id": "o1", "opportunityId": "o2"})
    assert event.state == "unreadable"
    assert event.reason == "opportunity-id: given twice with different values (opportunity-id='o1', opportunityId='o2')"


def test_a_refresh_kind_naming_no_opportunity_is_unreadable() -> None:
    for payload in ({"event-type": "job-closed"}, {"event-type": "job-closed", "opportunity-id": None}):
        event = _read(payload)
        assert event.state == "unreadable"
        assert (event.reason or "").startswith("opportunity-id: missing")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"opportunity-id": "o1"}, "event-type: missing"),
        ({"event-type": 7, "opportunity-id": "o1"}, "event-type: expected an event type, got 7"),
        ({"eventType": None}, "eventType: expected an event type, got None"),
        (
            {"event-type": True, "customer-id": ""},
            "event-type: expected an event type, got True; customer-id: expected an id, got ''",
        ),
    ],
)
def test_a_missing_or_odd_event_type_is_unreadable(payload: dict[str, Any], reason: str) -> None:
    event = _read(payload)
    assert (event.event_type, event.state, event.reason) == (None, "unreadable", reason)


@pytest.mark.parametrize(
    ("body", "kind"), [(b"[1, 2]", "list"), (b'"opportunity-created"', "str"), (b"null", "null"), (b"42", "int")]
)
def test_json_that_is_not_an_object_is_unreadable(body: bytes, kind: str) -> None:
    event = read_event(body)
    assert (event.state, event.reason) == ("unreadable", f"expected a JSON object, got a {kind}")
    assert event.payload == json.loads(body)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not JSON"),
        (b"{'event-type': 'x'}", "not JSON"),
        (b'{"event-type": "x"', "not JSON"),
        (b"event-type=opportunity-created&opportunity-id=1", "not JSON"),
        (b'{"event-type": "\xff"}', "not UTF-8"),
        (b'{"opportunity-id": NaN}', "not a JSON number"),
        (b'{"opportunity-id": 1e400}', "too large"),
        (b'{"event-type": "a\\u0000b"}', "\\u0000"),
        (b"[" * 100_000, "nests too deeply"),
    ],
)
def test_a_body_that_is_not_json_is_malformed(body: bytes, says: str) -> None:
    with pytest.raises(MalformedBody) as raised:
        read_event(body)
    assert says in raised.value.reason


def test_every_state_read_is_an_inbox_state() -> None:
    bodies = [b'{"event-type": "job-created", "opportunity-id": 1}', b'{"event-type": "x"}', b"[]"]
    assert {read_event(b).state for b in bodies} == {"pending", "ignored", "unreadable"} <= set(WEBHOOK_STATES)


def test_an_unpaired_surrogate_is_a_malformed_body_not_a_storage_error() -> None:
    # valid JSON that PostgreSQL's jsonb refuses: a 400 the sender can see, not a 500 it retries forever
    with pytest.raises(MalformedBody, match="surrogate"):
        read_event(b'{"event-type": "opportunity-changed", "opportunity-id": "\\ud800"}')
