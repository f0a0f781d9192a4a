"""Backlog figures for the ``/metrics`` scrape: a handful of single aggregate queries, each on an index.

Framework-free on purpose (no prometheus, no web framework): the API turns a :class:`Backlog` into gauges.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.models import AuditRecord, OutboxEvent
from domain.webhooks.models import WebhookDelivery

OPEN_DELIVERY_STATES = ("pending", "in_progress")


@dataclass(frozen=True)
class Backlog:
    outbox_unaudited: int
    oldest_unaudited_age_seconds: float  # 0 when nothing waits
    outbox_unfanned: int
    oldest_unfanned_age_seconds: float
    last_audit_record_age_seconds: float | None  # None: the audit log is empty
    webhook_deliveries_open: dict[str, int]  # status -> count, every open status present


def _age(now: dt.datetime, then: dt.datetime | None) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    return max(0.0, (now - then).total_seconds())


async def backlog(connection: AsyncConnection, now: dt.datetime | None = None) -> Backlog:
    now = now or dt.datetime.now(dt.UTC)
    unaudited, oldest_unaudited = (await connection.execute(
        select(func.count(), func.min(OutboxEvent.created_at)).where(OutboxEvent.audited_at.is_(None)))).one()
    unfanned, oldest_unfanned = (await connection.execute(
        select(func.count(), func.min(OutboxEvent.created_at)).where(OutboxEvent.fanned_out_at.is_(None)))).one()
    last_recorded = (await connection.execute(
        select(AuditRecord.recorded_at).order_by(AuditRecord.seq.desc()).limit(1))).scalar_one_or_none()
    open_rows = (await connection.execute(
        select(WebhookDelivery.status, func.count()).where(WebhookDelivery.status.in_(OPEN_DELIVERY_STATES))
        .group_by(WebhookDelivery.status))).all()
    deliveries = dict.fromkeys(OPEN_DELIVERY_STATES, 0)
    deliveries.update({status: int(count) for status, count in open_rows})
    return Backlog(
        outbox_unaudited=int(unaudited),
        oldest_unaudited_age_seconds=_age(now, oldest_unaudited),
        outbox_unfanned=int(unfanned),
        oldest_unfanned_age_seconds=_age(now, oldest_unfanned),
        last_audit_record_age_seconds=None if last_recorded is None else _age(now, last_recorded),
        webhook_deliveries_open=deliveries,
    )
