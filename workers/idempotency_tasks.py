"""idempotency.sweep (beat): delete expired idempotency keys, a batch per run. Safe to run as often as you like."""

from __future__ import annotations

import datetime as dt

from domain.idempotency.store import sweep_expired
from domain.platform.database import unit_of_work
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.platform.task_names import IDEMPOTENCY_SWEEP
from workers.app import celery_app

log = get_logger("keymeta.workers.idempotency")

SWEEP_BATCH = 10_000  # rows per run; a larger backlog is taken by the next runs


def sweep_keys(now: dt.datetime) -> int:
    with unit_of_work() as session:
        deleted = sweep_expired(session, now, SWEEP_BATCH)
    if deleted:
        log.info("idempotency.swept", deleted=deleted)
    return deleted


@celery_app.task(name=IDEMPOTENCY_SWEEP)
def sweep() -> int:
    return sweep_keys(utcnow())
