"""The beat schedule, in one place. Beat runs as a singleton."""

from __future__ import annotations

from typing import Any

from domain.settings import Settings
from domain.tasks import SWEEP_DELIVERIES, SWEEP_OUTBOX


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "sweep-outbox": {"task": SWEEP_OUTBOX, "schedule": settings.sweep_interval_seconds},
        "sweep-deliveries": {"task": SWEEP_DELIVERIES, "schedule": settings.webhook_sweep_interval_seconds,
                             "options": {"expires": settings.webhook_sweep_interval_seconds * 5}},
    }
