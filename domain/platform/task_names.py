"""Task names and queues: the contract between producers (API, sweeper) and workers.

Producers send by *name*; neither side imports the other. One queue per concern, so operators scale and
isolate them separately (a slow webhook consumer never delays the audit log).
"""

from __future__ import annotations

AUDIT_RECORD = "audit.record"  # args: (event_ids: list[int])
WEBHOOKS_FAN_OUT = "webhooks.fan_out"  # args: (event_ids: list[int])
WEBHOOKS_DELIVER = "webhooks.deliver"  # args: (delivery_ids: list[int])
KEYS_ADVANCE = "keys.advance"  # args: ()
SWEEP_OUTBOX = "sweep.outbox"  # args: ()
SWEEP_DELIVERIES = "sweep.deliveries"  # args: () — rings webhooks.deliver for due delivery rows
IDEMPOTENCY_SWEEP = "idempotency.sweep"  # args: () — deletes expired idempotency keys

QUEUES = ("audit", "webhooks", "keys", "sweep")
# Concerns without a queue of their own: their housekeeping runs beside the sweepers.
_SHARED_QUEUES = {"idempotency": "sweep"}


def queue_for(task_name: str) -> str:
    """``"concern.verb"`` runs on the queue of its concern (or the one its concern shares)."""
    concern = task_name.split(".", 1)[0]
    queue = _SHARED_QUEUES.get(concern, concern)
    if queue not in QUEUES:
        raise ValueError(f"task {task_name!r} has no queue")
    return queue


def queue_name(queue: str, prefix: str) -> str:
    """Physical queue name; a prefix lets several deployments (or test runs) share one broker."""
    return f"{prefix}{queue}"
