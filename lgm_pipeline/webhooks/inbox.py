"""The inbox, ``webhook_events``: storing a delivery before the receiver answers, and counting what waits."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Engine

from lgm_pipeline.storage.tables import tenant_options, webhook_events
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline.webhooks.events import ReadEvent

#: The predicate of ``ux_webhook_events_pending_delivery``, as literal SQL: PostgreSQL infers the partial index
#: of ON CONFLICT only from a predicate it can prove, and a bound parameter (``state = $1``) it cannot.
_PENDING = sa.text("state = 'pending'")


def delivery_hash(body: bytes) -> str:
    """SHA-256 of the body as delivered: the same delivery sent again has the same hash."""
    return hashlib.sha256(body).hexdigest()


def store_event(engine: Engine, tenant: Tenant, body: bytes, event: ReadEvent) -> bool:
    """Insert one delivery, committed on return; False when the same body already waits (pending).

    SmartMoving retries what it thinks failed: a copy of a pending event would only make its refresh run
    twice, so the partial unique index on pending deliveries keeps one. Once served, the same body is a
    new event again (the opportunity may have changed back and forth)."""
    t = webhook_events
    stmt = insert(t).values(
        delivery_hash=delivery_hash(body),
        event_type=event.event_type,
        opportunity_id=event.opportunity_id,
        customer_id=event.customer_id,
        payload=event.payload,
        state=event.state,
        reason=event.reason,
    )
    # A copy arriving while the first waits is one row, but the row says it came again: a refresh that
    # fetched the details before this copy arrived leaves it pending (the copy may announce a later change).
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.delivery_hash], index_where=_PENDING, set_={"last_received_at": sa.func.now()}
    ).returning(sa.literal_column("xmax = 0"))  # true for a row this statement inserted
    with engine.begin() as conn:
        return bool(conn.execution_options(**tenant_options(tenant)).execute(stmt).scalar_one())


@dataclass(frozen=True)
class InboxCounts:
    received: int
    pending: int
    done: int
    ignored: int
    unreadable: int
    failed: int
    #: How long the oldest pending event has waited (None: nothing pending).
    oldest_pending_age: dt.timedelta | None


def inbox_counts(engine: Engine, tenant: Tenant, now: dt.datetime) -> InboxCounts:
    """Every event the inbox holds, by state, and the age of the oldest one still waiting."""
    t = webhook_events
    by_state = sa.select(t.c.state, sa.func.count()).group_by(t.c.state)
    oldest = sa.select(sa.func.min(t.c.received_at)).where(t.c.state == "pending")
    with engine.connect() as conn:
        scoped = conn.execution_options(**tenant_options(tenant))
        counts = {state: int(n) for state, n in scoped.execute(by_state)}
        oldest_at = scoped.execute(oldest).scalar_one()
    return InboxCounts(
        received=sum(counts.values()),
        pending=counts.get("pending", 0),
        done=counts.get("done", 0),
        ignored=counts.get("ignored", 0),
        unreadable=counts.get("unreadable", 0),
        failed=counts.get("failed", 0),
        # A clock behind the database's could make it negative: a wait is never less than nothing.
        oldest_pending_age=None if oldest_at is None else max(now - oldest_at, dt.timedelta(0)),
    )
