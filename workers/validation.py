"""Task arguments come off a queue: anything malformed is logged and dropped, never retried forever."""

from __future__ import annotations

from typing import Any

from domain.platform.logs import get_logger

log = get_logger("keymeta.workers")
MAX_IDS = 5000


def row_ids(task_name: str, value: Any) -> list[int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, list) or len(value) > MAX_IDS
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        log.error("task.malformed_ids_dropped", task=task_name, got=repr(value)[:200])
        return None
    return value
