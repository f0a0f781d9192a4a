"""The beat schedule, in one place. Beat runs as a singleton."""

from __future__ import annotations

from typing import Any

from domain.platform.settings import Settings
from domain.platform.task_names import IDEMPOTENCY_SWEEP, KEYS_ADVANCE, SWEEP_DELIVERIES, SWEEP_OUTBOX

# Expired idempotency keys are absent to the API already (it checks expires_at): deleting them only frees space.
IDEMPOTENCY_SWEEP_INTERVAL_SECONDS = 300.0


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "sweep-outbox": {"task": SWEEP_OUTBOX, "schedule": settings.sweep_interval_seconds},
        "sweep-deliveries": {"task": SWEEP_DELIVERIES, "schedule": settings.webhook_sweep_interval_seconds,
                             "options": {"expires": settings.webhook_sweep_interval_seconds * 5}},
        # Signing-key rotation; a run that is late by a whole interval is superseded by the next one.
        "keys-advance": {"task": KEYS_ADVANCE, "schedule": settings.key_check_interval_seconds,
                         "options": {"expires": settings.key_check_interval_seconds}},
        "idempotency-sweep": {"task": IDEMPOTENCY_SWEEP, "schedule": IDEMPOTENCY_SWEEP_INTERVAL_SECONDS,
                              "options": {"expires": IDEMPOTENCY_SWEEP_INTERVAL_SECONDS}},
    }
