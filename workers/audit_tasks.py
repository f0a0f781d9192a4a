"""audit.record: turn outbox events into audit-chain records (idempotent on event id)."""

from __future__ import annotations

from typing import Any

from domain.events.audit import record_events
from domain.platform.database import unit_of_work
from domain.platform.logs import get_logger, request_id_fields
from domain.platform.task_names import AUDIT_RECORD
from workers.app import celery_app
from workers.validation import row_ids

log = get_logger("keymeta.workers.audit")


@celery_app.task(name=AUDIT_RECORD)
def record(event_ids: Any) -> None:
    ids = row_ids(AUDIT_RECORD, event_ids)
    if not ids:
        return
    with unit_of_work() as session:
        outcome = record_events(session, ids)
    log.info("audit.recorded", appended=outcome.appended, already_done=outcome.already_done,
             poison=outcome.poison, unknown=outcome.unknown, **request_id_fields(outcome.request_ids))
