"""Audit trail of webhook administration and of the delivery policy's decisions (outbox events).

The audit worker turns every outbox event into an audit record: action = event type, ``actor`` and
``detail`` from the payload (and ``api_key_id`` / ``source_ip`` when an admin API call did it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from domain.events.outbox import add_event

ENDPOINT_CREATED = "webhook_endpoint.created"
ENDPOINT_UPDATED = "webhook_endpoint.updated"
ENDPOINT_DELETED = "webhook_endpoint.deleted"
ENDPOINT_ENABLED = "webhook_endpoint.enabled"
ENDPOINT_DISABLED = "webhook_endpoint.disabled"
ENDPOINT_SECRET_ROTATED = "webhook_endpoint.secret_rotated"  # noqa: S105 - an event name
DELIVERY_EXHAUSTED = "webhook_delivery.exhausted"
DELIVERIES_REPLAYED = "webhook_delivery.replayed"


@dataclass(frozen=True)
class Actor:
    """Who did it: "cli", "api" (with the API key id, never the key), or "webhooks" (the delivery policy)."""

    label: str
    api_key_id: int | None = None
    source_ip: str | None = None
    request_id: str | None = None


CLI = Actor("cli")
POLICY = Actor("webhooks")


def record(session: Session, event_type: str, actor: Actor, subject_id: int | None,
           detail: dict[str, Any]) -> int:
    payload: dict[str, Any] = {"actor": actor.label, "detail": detail}
    if actor.api_key_id is not None:
        payload["api_key_id"] = actor.api_key_id
    if actor.source_ip is not None:
        payload["source_ip"] = actor.source_ip
    return add_event(session, event_type, payload, subject_id=subject_id, request_id=actor.request_id)
