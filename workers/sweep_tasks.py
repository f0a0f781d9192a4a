"""sweep.outbox (beat): re-ring the bell for outbox events left behind. Safe to run as often as you like."""

from __future__ import annotations

from domain.events.sweeper import overdue_events
from domain.platform.database import unit_of_work
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.platform.settings import get_settings
from domain.platform.task_names import AUDIT_RECORD, SWEEP_OUTBOX, WEBHOOKS_FAN_OUT
from workers.app import celery_app, send_now

log = get_logger("keymeta.workers.sweep")


@celery_app.task(name=SWEEP_OUTBOX)
def sweep_outbox() -> None:
    settings = get_settings()
    with unit_of_work() as session:
        overdue = overdue_events(session, utcnow(), settings.sweep_grace_seconds)
    # A re-ring that is itself delayed past a few sweeps is stale: a newer one covers the same rows.
    expires = settings.sweep_interval_seconds * 5
    if overdue.audit:
        send_now(AUDIT_RECORD, overdue.audit, expires=expires)
    if overdue.fan_out:
        send_now(WEBHOOKS_FAN_OUT, overdue.fan_out, expires=expires)
    if overdue.audit or overdue.fan_out:
        log.info("sweep.rerung", audit=len(overdue.audit), fan_out=len(overdue.fan_out))
