"""The outbox ledger: event types and how rows are written (always inside the caller's transaction)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from domain.events.models import OutboxEvent
from domain.platform.models import utcnow

# The metadata family: one event per request. The three webhook types carry ``data``, the webhook payload's
# snapshot taken by the write statement; every other type is an audit record only.
META_CREATED = "license_key_meta.created"
META_UPDATED = "license_key_meta.updated"  # the value changed
META_DELETED = "license_key_meta.deleted"
META_WEBHOOK_EVENT_TYPES = (META_CREATED, META_UPDATED, META_DELETED)
META_CREATE_REFUSED = "license_key_meta.create_refused"
META_UPDATE_REFUSED = "license_key_meta.update_refused"
META_UPDATE_UNCHANGED = "license_key_meta.update_unchanged"  # 353 with the value it had: nothing changed
META_DELETE_REFUSED = "license_key_meta.delete_refused"
META_READ = "license_key_meta.read"
META_READ_REFUSED = "license_key_meta.read_refused"
META_AUDIT_EVENT_TYPES = (META_CREATE_REFUSED, META_UPDATE_REFUSED, META_UPDATE_UNCHANGED, META_DELETE_REFUSED,
                          META_READ, META_READ_REFUSED)
# Signing-key lifecycle (domain.signing.rotation); subject_id is the signing key's row id.
SIGNING_KEY_CREATED = "signing_key.created"
SIGNING_KEY_ACTIVATED = "signing_key.activated"
SIGNING_KEY_RETIRED = "signing_key.retired"
SIGNING_KEY_REVOKED = "signing_key.revoked"
SIGNING_KEY_EVENT_TYPES = (SIGNING_KEY_CREATED, SIGNING_KEY_ACTIVATED, SIGNING_KEY_RETIRED, SIGNING_KEY_REVOKED)

# Event types a webhook endpoint may subscribe to; others are audit-only.
WEBHOOK_EVENT_TYPES: frozenset[str] = frozenset({*META_WEBHOOK_EVENT_TYPES, *SIGNING_KEY_EVENT_TYPES})


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
