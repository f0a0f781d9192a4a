"""The outbox ledger: event types and how rows are written (always inside the caller's transaction)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from domain.events.models import OutboxEvent
from domain.platform.models import utcnow

META_CREATED = "license_key_meta.created"
META_CREATE_REFUSED = "license_key_meta.create_refused"
# Signing-key lifecycle (domain.signing.rotation); subject_id is the signing key's row id.
SIGNING_KEY_CREATED = "signing_key.created"
SIGNING_KEY_ACTIVATED = "signing_key.activated"
SIGNING_KEY_RETIRED = "signing_key.retired"
SIGNING_KEY_REVOKED = "signing_key.revoked"
SIGNING_KEY_EVENT_TYPES = (SIGNING_KEY_CREATED, SIGNING_KEY_ACTIVATED, SIGNING_KEY_RETIRED, SIGNING_KEY_REVOKED)

# Event types a webhook endpoint may subscribe to; others are audit-only.
WEBHOOK_EVENT_TYPES: frozenset[str] = frozenset({META_CREATED, *SIGNING_KEY_EVENT_TYPES})


def needs_fan_out(event_type: str) -> bool:
    return event_type in WEBHOOK_EVENT_TYPES


def event_values(event_type: str, payload: dict[str, Any], *, request_id: str | None = None,
                 subject_id: int | None = None, outcome_code: int | None = None,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    return {
        "type": event_type,
        "subject_id": subject_id,
        "outcome_code": outcome_code,
        "payload": payload,
        "request_id": request_id,
        "created_at": now,
        # Audit-only events have nothing to fan out: mark them done at birth.
        "fanned_out_at": None if needs_fan_out(event_type) else now,
    }


async def add_event_async(conn: AsyncConnection, event_type: str, payload: dict[str, Any],
                          **fields: Any) -> int:
    result = await conn.execute(
        insert(OutboxEvent).values(event_values(event_type, payload, **fields)).returning(OutboxEvent.id)
    )
    return int(result.scalar_one())


def add_event(session: Session, event_type: str, payload: dict[str, Any], **fields: Any) -> int:
    result = session.execute(
        insert(OutboxEvent).values(event_values(event_type, payload, **fields)).returning(OutboxEvent.id)
    )
    return int(result.scalar_one())
