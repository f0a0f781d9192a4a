"""A test event on request: one ``webhook.test`` delivery to one endpoint, never fanned out to the others.

The request is audited first (``webhook_endpoint.test_sent``, an audit-only event) and that event's id is the
delivery's ``event_id``, so every test event is its own (event, endpoint) pair. Services only flush. Like a
replay, the row is left for the next sweep to ring, unless the caller marks it rung (``replay.mark_rung``) and
rings ``webhooks.deliver`` itself after commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from domain.events.catalog import WEBHOOK_TEST
from domain.platform.models import utcnow
from domain.webhooks import audit_events
from domain.webhooks.audit_events import Actor
from domain.webhooks.endpoints import EndpointError, get_endpoint
from domain.webhooks.fan_out import encode_body, iso_z, new_msg_id
from domain.webhooks.models import WebhookDelivery
from domain.webhooks.states import DeliveryStatus

TEST_SENT = "webhook_endpoint.test_sent"  # the audit action: a test event was queued on request
TEST_MESSAGE = "A test event sent on request; it reports no change."


@dataclass(frozen=True)
class TestSent:
    __test__ = False  # a result, not a pytest test class

    delivery_id: int
    msg_id: str
    body: str


def send_test_event(session: Session, endpoint_id: int, actor: Actor, *,
                    now: dt.datetime | None = None) -> TestSent:
    """Queue a ``webhook.test`` delivery to this endpoint only (same body and ``webhook-id`` on every attempt)."""
    now = now or utcnow()
    endpoint = get_endpoint(session, endpoint_id, for_update=True)
    if not endpoint.enabled:
        raise EndpointError(f"endpoint {endpoint_id} is disabled; enable it before sending a test event")
    body = encode_body({"type": WEBHOOK_TEST, "timestamp": iso_z(now),
                        "data": {"endpoint_id": endpoint.id, "message": TEST_MESSAGE}})
    msg_id = new_msg_id()
    event_id = audit_events.record(session, TEST_SENT, actor, endpoint.id,
                                   {"msg_id": msg_id, "url": endpoint.url})
    row = WebhookDelivery(event_id=event_id, endpoint_id=endpoint.id, msg_id=msg_id, event_type=WEBHOOK_TEST,
                          body=body, status=DeliveryStatus.PENDING, attempts=0, retry_step=0, next_attempt_at=now,
                          locked_until=None, rung_at=None, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return TestSent(row.id, msg_id, body)
