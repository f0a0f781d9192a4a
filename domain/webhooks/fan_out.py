"""Fan-out: one delivery row per (webhook event, subscribed enabled endpoint), then one message per row.

Idempotent: the unique ``(event_id, endpoint_id)`` drops duplicates, and an event is marked
``fanned_out_at`` in the same transaction, so a re-rung event is a no-op. Endpoints registered after an
event was fanned out do not receive it (use replay for that).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Insert, Table, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from domain.catalog.models import LicenseKey
from domain.events.models import OutboxEvent
from domain.events.outbox import META_CREATED, META_WEBHOOK_EVENT_TYPES, WEBHOOK_EVENT_TYPES
from domain.license_meta.models import LicenseKeyMeta
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.webhooks.delivery import Claim, ClaimTerms, SigningSecrets, claim_of
from domain.webhooks.endpoints import subscribes
from domain.webhooks.models import WebhookDelivery, WebhookEndpoint
from domain.webhooks.states import DeliveryStatus

log = get_logger("keymeta.webhooks")
INSERT_CHUNK = 500
# Payload keys that describe who/where for the audit trail, never sent to webhook consumers.
AUDIT_ONLY_KEYS = frozenset({"actor", "detail", "api_key_id", "source_ip", "user_agent", "license_key_masked"})


def iso_z(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_msg_id() -> str:
    """The ``webhook-id``: random, stable for the delivery's life (the consumer's idempotency key)."""
    return "msg_" + base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def encode_body(payload: dict[str, Any]) -> str:
    """Compact JSON, ASCII only: the same bytes are signed and sent on every attempt."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


# The order of a meta event's data keys in the body (the stored snapshot is a JSON object, unordered).
META_DATA_ORDER = ("meta_id", "version", "license_key", "product_id", "identifier", "key", "value",
                   "previous_value", "created_at", "updated_at", "deleted_at")


def _snapshot(event: OutboxEvent) -> dict[str, Any] | None:
    """A meta event's ``data``: the snapshot its write statement took, never the row as it is now."""
    if not isinstance(event.payload, dict) or not isinstance(event.payload.get("data"), dict):
        return None
    data: dict[str, Any] = event.payload["data"]
    return {**{k: data[k] for k in META_DATA_ORDER if k in data}, **data}


def _rows_of_created(session: Session, meta_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """``created`` events without a snapshot (written by a release that took none): the row, as version 1."""
    rows = session.execute(
        select(LicenseKeyMeta, LicenseKey.key, LicenseKey.product_id)
        .join(LicenseKey, LicenseKey.id == LicenseKeyMeta.license_key_id)
        .where(LicenseKeyMeta.id.in_(meta_ids))
    ).all()
    return {
        meta.id: {"meta_id": meta.id, "version": 1, "license_key": key, "product_id": product_id,
                  "identifier": meta.identifier, "key": meta.key, "value": meta.value,
                  "created_at": iso_z(meta.created_at)}
        for meta, key, product_id in rows
    }


def _generic_data(event: OutboxEvent) -> dict[str, Any] | None:
    """Other webhook event types (e.g. signing-key lifecycle) publish their payload minus audit context."""
    if not isinstance(event.payload, dict):
        return None
    return {k: v for k, v in event.payload.items() if k not in AUDIT_ONLY_KEYS}


def build_payloads(session: Session, events: Sequence[OutboxEvent]) -> dict[int, dict[str, Any]]:
    """The webhook payload (docs/events.md) per event id; a meta event without data gets none."""
    unsnapped = [e.subject_id for e in events if e.type == META_CREATED and e.subject_id is not None
                 and _snapshot(e) is None]
    rows = _rows_of_created(session, unsnapped) if unsnapped else {}
    payloads: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.type in META_WEBHOOK_EVENT_TYPES:
            data = _snapshot(event)
            if data is None and event.type == META_CREATED and event.subject_id is not None:
                data = rows.get(event.subject_id)
        else:
            data = _generic_data(event)
        if data is None:
            log.warning("webhooks.event_without_subject", event_id=event.id, type=event.type)
            continue
        payloads[event.id] = {"type": event.type, "timestamp": iso_z(event.created_at), "data": data}
    return payloads


def _insert_ignoring_duplicates() -> Insert:
    table = cast(Table, WebhookDelivery.__table__)
    return postgresql.insert(table).on_conflict_do_nothing(index_elements=["event_id", "endpoint_id"])


@dataclass(frozen=True)
class FanOutResult:
    events: int  # events fanned out by this call
    delivery_ids: list[int]  # every new delivery
    request_ids: list[str] = field(default_factory=list)  # distinct, of the events fanned out (for logs)
    claims: list[Claim] = field(default_factory=list)  # new deliveries already claimed for the caller to send

    @property
    def unclaimed_ids(self) -> list[int]:
        """New deliveries nobody holds yet: ring ``webhooks.deliver`` for these after commit."""
        claimed = {c.delivery_id for c in self.claims}
        return [i for i in self.delivery_ids if i not in claimed]


def fan_out(session: Session, event_ids: Sequence[int], now: dt.datetime | None = None, *,
            claim_first: int = 0, terms: ClaimTerms | None = None) -> FanOutResult:
    """Create the deliveries of these events; with ``terms``, the first ``claim_first`` are created already
    claimed (attempt 1 in progress, leased as ``delivery.claim`` would lease them), so the caller can send them
    at once instead of ringing a second task that would claim them in a second transaction."""
    now = now or utcnow()
    events = list(session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.id.in_(list(event_ids)), OutboxEvent.fanned_out_at.is_(None))
        .order_by(OutboxEvent.id)
        .with_for_update()
    ))
    if not events:
        return FanOutResult(0, [])
    webhook_events = [e for e in events if e.type in WEBHOOK_EVENT_TYPES]
    endpoints = list(session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True)).order_by(WebhookEndpoint.id)))
    payloads = build_payloads(session, webhook_events) if endpoints and webhook_events else {}
    to_claim = claim_first if terms is not None else 0
    rows: list[dict[str, Any]] = []
    for event in webhook_events:
        payload = payloads.get(event.id)
        if payload is None:
            continue
        body = encode_body(payload)
        for endpoint in endpoints:
            if subscribes(endpoint, event.type):
                row: dict[str, Any] = {"event_id": event.id, "endpoint_id": endpoint.id, "msg_id": new_msg_id(),
                       "event_type": event.type, "body": body, "status": DeliveryStatus.PENDING, "attempts": 0,
                       "retry_step": 0, "next_attempt_at": now, "locked_until": None, "rung_at": now,
                       "created_at": now, "updated_at": now}
                if terms is not None and len(rows) < to_claim:
                    row.update(status=DeliveryStatus.IN_PROGRESS, attempts=1, locked_until=now + terms.lease,
                               rung_at=None)  # claimed, not rung: as ``delivery.claim`` leaves its rows
                rows.append(row)
    created: dict[tuple[int, int], int] = {}
    table = WebhookDelivery.__table__.c
    for start in range(0, len(rows), INSERT_CHUNK):
        # executemany form: one compiled statement whatever the row count (VALUES lists would compile anew).
        inserted = session.execute(
            _insert_ignoring_duplicates().returning(table.id, table.event_id, table.endpoint_id),
            rows[start:start + INSERT_CHUNK])
        created.update({(event_id, endpoint_id): int(i) for i, event_id, endpoint_id in inserted})
    session.execute(update(OutboxEvent).where(OutboxEvent.id.in_([e.id for e in events]))
                    .values(fanned_out_at=now))
    session.flush()
    delivery_ids = [created[key] for key in ((r["event_id"], r["endpoint_id"]) for r in rows) if key in created]
    claims: list[Claim] = []
    if terms is not None and to_claim:
        signing = SigningSecrets(terms.master_key, now)
        by_id = {e.id: e for e in endpoints}
        request_of = {e.id: e.request_id for e in events}
        for row in rows[:to_claim]:
            delivery_id = created.get((row["event_id"], row["endpoint_id"]))
            if delivery_id is not None:  # a duplicate (already fanned out) is not ours to send
                claims.append(claim_of(delivery_id, by_id[row["endpoint_id"]], 1, row["msg_id"], row["body"],
                                       signing, request_of[row["event_id"]]))
    return FanOutResult(len(events), delivery_ids, list(dict.fromkeys(e.request_id for e in events if e.request_id)),
                        claims)
