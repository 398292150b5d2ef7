"""Reading a SmartMoving webhook delivery: which event, which opportunity, and whether anything serves it.

SmartMoving (Premium) POSTs thin, unsigned JSON objects with kebab-case keys: ``event-type``,
``opportunity-id``, ``opportunity-status``, sometimes ``customer-id``. The same keys in camelCase or
snake_case are read too: once the dashes and underscores are gone and the case folded they name one thing.

Every delivery that is JSON is stored, read or not (``inbox.store_event``); what the reading decides is
its state in the inbox:

- ``pending``: a known kind naming a readable opportunity: a targeted refresh of that opportunity serves it;
- ``ignored``: an event type nobody serves, or a customer event naming no opportunity (the 2-hour cycle
  reconciles customers);
- ``unreadable``: not an object, no event type, or an id field holding something that is not an id. The
  reason names the field and the value: an unreadable id is never taken for a missing one, or an event
  that did name an opportunity would silently wait for the cycle.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lgm_pipeline.storage.tables import WEBHOOK_STATES

#: How a kind of event is served: a targeted refresh of the opportunity it names, or the 2-hour cycle.
Service = Literal["refresh", "cycle"]


@dataclass(frozen=True)
class EventKind:
    service: Service
    description: str


#: The event types SmartMoving documents (docs: shared/reference/smartmoving-api.md, Webhooks). Each
#: opportunity or job event changes what the opportunity's details say, so it is a refresh of that
#: opportunity; a customer event changes only the customer, which the cycle reads again anyway.
EVENT_KINDS: dict[str, EventKind] = {
    "opportunity-created": EventKind("refresh", "an opportunity was created"),
    "opportunity-status-changed": EventKind("refresh", "an opportunity's status changed"),
    "opportunity-changed": EventKind("refresh", "an opportunity was edited"),
    "opportunity-deleted": EventKind("refresh", "an opportunity was deleted"),
    "job-created": EventKind("refresh", "a job was added to an opportunity"),
    "job-deleted": EventKind("refresh", "a job was removed from an opportunity"),
    "job-finalized": EventKind("refresh", "a job was finalized"),
    "job-closed": EventKind("refresh", "a job was closed"),
    "job-reset": EventKind("refresh", "a finalized or closed job was reset"),
    "customer-created": EventKind("cycle", "a customer was created"),
    "customer-updated": EventKind("cycle", "a customer was edited"),
}

#: Fields read, by their folded name (no dashes or underscores, lower case) -> the kebab-case name.
_FIELDS = {"eventtype": "event-type", "opportunityid": "opportunity-id", "customerid": "customer-id"}
#: An id is an opaque token (SmartMoving's are GUIDs): no blanks or control characters inside, not a page.
_ID_RE = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")
_MAX_SHOWN = 80


class MalformedBody(ValueError):
    """The body is not JSON in UTF-8: nothing can be stored (JSONB holds JSON only); the sender gets a 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ReadEvent:
    event_type: str | None
    opportunity_id: str | None
    customer_id: str | None
    #: The body as delivered, decoded (any JSON value).
    payload: Any
    #: One of ``WEBHOOK_STATES``: pending, ignored or unreadable.
    state: str
    #: Why it is ignored or unreadable (None when pending).
    reason: str | None

    def __post_init__(self) -> None:
        if self.state not in WEBHOOK_STATES:
            raise ValueError(f"state {self.state!r} is not one of {WEBHOOK_STATES}")


class _Unreadable(Exception):
    """A field present but not readable; its text is the reason: ``<field as delivered>: <why>``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


def _shown(value: Any) -> str:
    """A value in a reason: its repr, cut short (a reason is a line, not a copy of the payload)."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _reject_constant(name: str) -> float:
    raise MalformedBody(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # PostgreSQL's jsonb cannot hold it: refused here rather than failing the insert.
        raise MalformedBody(f"the number {text[:40]} is too large to store")
    return value


def _check_storable(value: Any) -> None:
    """PostgreSQL's jsonb refuses NUL in strings (``\\u0000``): a body holding one cannot be stored."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise MalformedBody("a string holds \\u0000, which PostgreSQL cannot store")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise MalformedBody("a string holds an unpaired surrogate (\\ud800...), which is not text") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def decode(body: bytes) -> Any:
    """The JSON value of ``body``, or :class:`MalformedBody` saying why it has none."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedBody(f"the body is not UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except MalformedBody:
        raise
    except RecursionError:
        raise MalformedBody("the body nests too deeply to read") from None
    except ValueError as error:  # JSONDecodeError, and integers past Python's digit limit
        raise MalformedBody(f"the body is not JSON ({str(error)[:120]})") from None
    _check_storable(value)
    return value


class _Conflict:
    """A field given under two spellings with different values: which one SmartMoving meant cannot be told."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _fields(payload: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """The fields read, by kebab-case name -> (the key as delivered, its value or a :class:`_Conflict`)."""
    found: dict[str, tuple[str, Any]] = {}
    for key, value in payload.items():
        name = _FIELDS.get(key.replace("-", "").replace("_", "").lower())
        if name is None:
            continue
        if name in found and not isinstance(found[name][1], _Conflict) and found[name][1] != value:
            first_key, first = found[name]
            value = _Conflict(f"given twice with different values ({first_key}={_shown(first)}, {key}={_shown(value)})")
        elif name in found:
            continue
        found[name] = (key, value)
    return found


def _value(fields: Mapping[str, tuple[str, Any]], name: str) -> tuple[str, Any]:
    key, value = fields[name]
    if isinstance(value, _Conflict):
        raise _Unreadable(name, value.reason)
    return key, value


def _read_id(fields: Mapping[str, tuple[str, Any]], name: str) -> str | None:
    """The id under ``name``, None when the field is absent or null; anything else that is no id raises."""
    if name not in fields:
        return None
    key, value = _value(fields, name)
    if value is None:
        return None
    # bool first: it is an int to Python, and True is no opportunity.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Unreadable(key, f"expected an id, got {_shown(value)}")
    text = str(value).strip()
    if not _ID_RE.fullmatch(text):
        raise _Unreadable(key, f"expected an id, got {_shown(value)}")
    return text


def _event_type(fields: Mapping[str, tuple[str, Any]]) -> str:
    if "event-type" not in fields:
        raise _Unreadable("event-type", "missing")
    key, value = _value(fields, "event-type")
    if not isinstance(value, str) or not value.strip():
        raise _Unreadable(key, f"expected an event type, got {_shown(value)}")
    return _canonical_type(value.strip())


def _canonical_type(event_type: str) -> str:
    """``opportunityStatusChanged``, ``opportunity_status_changed`` -> ``opportunity-status-changed``."""
    kebab = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", event_type).replace("_", "-").lower()
    return kebab if kebab in EVENT_KINDS else event_type


def read_event(body: bytes) -> ReadEvent:
    """What a delivery says and how it is served; :class:`MalformedBody` when it is not JSON at all."""
    payload = decode(body)
    if not isinstance(payload, dict):
        kind = type(payload).__name__ if payload is not None else "null"
        return ReadEvent(None, None, None, payload, "unreadable", f"expected a JSON object, got a {kind}")
    fields = _fields(payload)
    problems: list[str] = []

    def attempt(read: Callable[[], str | None]) -> str | None:
        # Every field is read even after one failed: the columns keep what could be read, the reason all.
        try:
            return read()
        except _Unreadable as problem:
            problems.append(str(problem))
            return None

    event_type = attempt(lambda: _event_type(fields))
    opportunity_id = attempt(lambda: _read_id(fields, "opportunity-id"))
    customer_id = attempt(lambda: _read_id(fields, "customer-id"))
    if problems or event_type is None:
        return ReadEvent(event_type, opportunity_id, customer_id, payload, "unreadable", "; ".join(problems))
    kind = EVENT_KINDS.get(event_type)
    if kind is None:
        reason = f"unknown event type {_shown(event_type)}: stored, not served"
        return ReadEvent(event_type, opportunity_id, customer_id, payload, "ignored", reason)
    if opportunity_id is not None:
        return ReadEvent(event_type, opportunity_id, customer_id, payload, "pending", None)
    if kind.service == "cycle":
        reason = f"{event_type} names no opportunity: the 2-hour cycle reconciles the customer"
        return ReadEvent(event_type, None, customer_id, payload, "ignored", reason)
    reason = f"opportunity-id: missing, and a {event_type} event is served by refreshing its opportunity"
    return ReadEvent(event_type, None, customer_id, payload, "unreadable", reason)
