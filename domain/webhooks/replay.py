"""Replay (re-queue finished deliveries) and the delivery log as operators see it."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.platform.models import utcnow
from domain.webhooks import audit_events
from domain.webhooks.audit_events import Actor
from domain.webhooks.endpoints import EndpointError, EndpointNotFound, get_endpoint
from domain.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from domain.webhooks.states import FINISHED_STATUSES, DeliveryStatus

MAX_LIST = 500


class DeliveryNotFound(EndpointNotFound):
    pass


def _requeue_values(now: dt.datetime) -> dict[str, Any]:
    # rung_at NULL: the next sweep rings it, unless the caller rings it first (and the sweeper then waits).
    return {"status": DeliveryStatus.PENDING, "retry_step": 0, "next_attempt_at": now, "locked_until": None,
            "rung_at": None, "completed_at": None, "updated_at": now}


def replay_delivery(session: Session, delivery_id: int, actor: Actor, *, endpoint_id: int | None = None,
                    now: dt.datetime | None = None) -> WebhookDelivery:
    """Send this delivery again (same ``webhook-id``, same body, a fresh retry schedule)."""
    now = now or utcnow()
    row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                          .with_for_update()).first()
    if row is None or (endpoint_id is not None and row.endpoint_id != endpoint_id):
        raise DeliveryNotFound(f"no webhook delivery with id {delivery_id}")
    if row.status == DeliveryStatus.IN_PROGRESS:
        raise EndpointError(f"delivery {delivery_id} is being attempted right now")
    endpoint = session.get(WebhookEndpoint, row.endpoint_id)
    if endpoint is None or not endpoint.enabled:
        raise EndpointError(f"endpoint {row.endpoint_id} is disabled; enable it before replaying")
    previous = row.status
    for name, value in _requeue_values(now).items():
        setattr(row, name, value)
    session.flush()
    audit_events.record(session, audit_events.DELIVERIES_REPLAYED, actor, row.id,
                        {"delivery_ids": [row.id], "previous_status": previous, "endpoint_id": row.endpoint_id})
    return row


def replay_since(session: Session, since: dt.datetime, actor: Actor, *, until: dt.datetime | None = None,
                 endpoint_id: int | None = None, now: dt.datetime | None = None) -> list[int]:
    """Re-queue every finished delivery created in [since, until) to an enabled endpoint; pending rows are
    already queued and in-progress rows are left alone."""
    now = now or utcnow()
    if endpoint_id is not None:
        get_endpoint(session, endpoint_id)
    query = (select(WebhookDelivery.id)
             .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
             .where(WebhookDelivery.created_at >= since, WebhookDelivery.status.in_(FINISHED_STATUSES),
                    WebhookEndpoint.enabled.is_(True))
             .order_by(WebhookDelivery.id))
    if until is not None:
        query = query.where(WebhookDelivery.created_at < until)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    ids = list(session.scalars(query.with_for_update(of=WebhookDelivery)))
    for start in range(0, len(ids), 500):
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids[start:start + 500]))
                        .values(_requeue_values(now)))
    session.flush()
    audit_events.record(session, audit_events.DELIVERIES_REPLAYED, actor, endpoint_id, {
        "since": since.isoformat(), "until": until.isoformat() if until else None, "endpoint_id": endpoint_id,
        "count": len(ids)})
    return ids


def mark_rung(session: Session, delivery_ids: list[int], now: dt.datetime | None = None) -> None:
    """The caller is about to ring these (after commit): the sweeper leaves them alone for a while."""
    if delivery_ids:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids))
                        .values(rung_at=now or utcnow()))


def attempt_view(row: WebhookAttempt) -> dict[str, Any]:
    return {"attempt_no": row.attempt_no, "started_at": row.started_at, "duration_ms": row.duration_ms,
            "outcome": row.outcome, "status_code": row.status_code, "address": row.address, "error": row.error,
            "response_excerpt": row.response_excerpt, "response_truncated": row.response_truncated}


def delivery_view(row: WebhookDelivery, attempts: list[WebhookAttempt] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id, "endpoint_id": row.endpoint_id, "event_id": row.event_id, "msg_id": row.msg_id,
        "event_type": row.event_type, "status": row.status, "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at, "last_status_code": row.last_status_code,
        "last_error": row.last_error, "created_at": row.created_at, "completed_at": row.completed_at}
    if attempts is not None:
        view["attempt_log"] = [attempt_view(a) for a in attempts]
    return view


def list_deliveries(session: Session, *, endpoint_id: int | None = None, status: str | None = None,
                    limit: int = 50, before_id: int | None = None,
                    with_attempts: bool = True) -> list[dict[str, Any]]:
    """Newest first; page with ``before_id`` (the smallest id of the previous page)."""
    if status is not None and status not in set(DeliveryStatus):
        raise EndpointError(f"unknown delivery status {status!r} (one of: {', '.join(DeliveryStatus)})")
    if not 1 <= limit <= MAX_LIST:
        raise EndpointError(f"limit must be between 1 and {MAX_LIST}")
    if endpoint_id is not None:
        get_endpoint(session, endpoint_id)
    query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    rows = list(session.scalars(query))
    attempts: dict[int, list[WebhookAttempt]] = defaultdict(list)
    if with_attempts and rows:
        for attempt in session.scalars(select(WebhookAttempt)
                                       .where(WebhookAttempt.delivery_id.in_([r.id for r in rows]))
                                       .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt_no)):
            attempts[attempt.delivery_id].append(attempt)
    return [delivery_view(r, attempts[r.id] if with_attempts else None) for r in rows]


def clear_rung(session: Session, delivery_ids: list[int]) -> None:
    """A ring that did not reach the broker: let the next sweep ring these again."""
    if delivery_ids:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids)).values(rung_at=None))
