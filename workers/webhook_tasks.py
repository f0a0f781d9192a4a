"""webhooks.fan_out, webhooks.deliver and sweep.deliveries: thin wrappers over domain.webhooks.jobs.

webhooks.fan_out sends the first deliveries of its events itself (created claimed, see
``jobs.fan_out_and_deliver``) and rings webhooks.deliver for the rest. A task waits at most
``TASK_WAIT_SECONDS`` for its attempts to be recorded: a slow consumer's attempts go on in the background
(their rows stay leased), never holding a worker thread.

Each is idempotent (status checks and unique constraints in the domain code), so acks_late redelivery
is harmless. Retries live in the delivery rows (``next_attempt_at``), driven by sweep.deliveries, never by
broker ETAs or countdowns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task

from domain.platform.database import unit_of_work
from domain.platform.logs import get_logger, request_id_fields
from domain.platform.settings import get_settings
from domain.platform.task_names import AUDIT_RECORD, SWEEP_DELIVERIES, WEBHOOKS_DELIVER, WEBHOOKS_FAN_OUT
from domain.webhooks import fan_out as fan_out_rows
from domain.webhooks import jobs, replay
from workers.app import celery_app, doorbell, send_now
from workers.validation import row_ids

log = get_logger("keymeta.workers.webhooks")
TASK_WAIT_SECONDS = 2.0


def _audit_ringer(request_id: str | None) -> Callable[[list[int]], None]:
    """Rings the audit events that recording attempts creates (an endpoint disabled, a delivery exhausted)."""
    def ring(event_ids: list[int]) -> None:
        doorbell().ring(AUDIT_RECORD, event_ids, request_id)
    return ring


def _still_sending(report: jobs.DeliverReport) -> dict[str, int]:
    return {"sending": report.sending} if report.sending else {}


def _request_id(task: Task) -> str | None:
    value = getattr(task.request, "request_id", None)
    return value if isinstance(value, str) else None


@celery_app.task(name=WEBHOOKS_FAN_OUT, bind=True)
def fan_out(self: Task, event_ids: Any) -> None:
    ids = row_ids(WEBHOOKS_FAN_OUT, event_ids)
    if not ids:
        return
    request_id = _request_id(self)

    def hand_on(result: fan_out_rows.FanOutResult) -> None:
        nonlocal request_id  # events of one request: pass its id on even when this message carried none
        request_id = request_id or (result.request_ids[0] if len(result.request_ids) == 1 else None)
        if result.unclaimed_ids:
            doorbell().ring(WEBHOOKS_DELIVER, result.unclaimed_ids, request_id)

    report = jobs.fan_out_and_deliver(ids, hand_on=hand_on, wait=TASK_WAIT_SECONDS, on_audit=_audit_ringer(request_id))
    result, delivered = report.fanned_out, report.delivered
    log.info("webhooks.fanned_out", events=len(ids), deliveries=len(result.delivery_ids),
             sent=delivered.claimed, **delivered.outcomes, **_still_sending(delivered),
             **request_id_fields(result.request_ids))


@celery_app.task(name=WEBHOOKS_DELIVER, bind=True)
def deliver(self: Task, delivery_ids: Any) -> None:
    ids = row_ids(WEBHOOKS_DELIVER, delivery_ids)
    if not ids:
        return
    request_id = _request_id(self)

    report = jobs.deliver(ids, wait=TASK_WAIT_SECONDS, on_audit=_audit_ringer(request_id))
    if report.claimed:
        log.info("webhooks.delivered", claimed=report.claimed, **report.outcomes, **_still_sending(report),
                 **request_id_fields(report.request_ids))


@celery_app.task(name=SWEEP_DELIVERIES)
def sweep_deliveries() -> None:
    settings = get_settings()
    due = jobs.sweep_deliveries(settings)
    if not due:
        return
    try:
        # A ring still queued after several re-ring intervals is stale: newer rings cover the same rows.
        send_now(WEBHOOKS_DELIVER, due, expires=max(settings.webhook_rering_seconds * 10, 60.0))
    except Exception as exc:  # noqa: BLE001 - the broker is down: un-mark so the next sweep tries again
        with unit_of_work() as session:
            replay.clear_rung(session, due)
        log.warning("sweep.deliveries_ring_failed", count=len(due), error=str(exc))
        return
    log.info("sweep.deliveries_rung", count=len(due))
