"""What the sweeper re-rings: outbox events no consumer has taken after a grace period."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.events.models import OutboxEvent
from domain.events.outbox import WEBHOOK_EVENT_TYPES

BATCH = 1000


@dataclass(frozen=True)
class Overdue:
    audit: list[int]
    fan_out: list[int]


def overdue_events(session: Session, now: dt.datetime, grace_seconds: float, limit: int = BATCH) -> Overdue:
    cutoff = now - dt.timedelta(seconds=grace_seconds)
    audit = session.scalars(
        select(OutboxEvent.id).where(OutboxEvent.audited_at.is_(None), OutboxEvent.created_at <= cutoff)
        .order_by(OutboxEvent.id).limit(limit)).all()
    fan_out = session.scalars(
        select(OutboxEvent.id).where(OutboxEvent.fanned_out_at.is_(None), OutboxEvent.created_at <= cutoff,
                                     OutboxEvent.type.in_(WEBHOOK_EVENT_TYPES))
        .order_by(OutboxEvent.id).limit(limit)).all()
    return Overdue(audit=list(audit), fan_out=list(fan_out))
