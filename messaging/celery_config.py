"""Celery configuration as plain data, shared by the producer in the API and by the workers.

No Celery import here (the dependency rule): adapters do ``Celery().config_from_object(celery_config(s))``.
"""

from __future__ import annotations

from typing import Any

from domain.platform.settings import Settings
from domain.platform.task_names import QUEUES, queue_for, queue_name
from messaging.embedded_broker import SCHEME


def broker_url(settings: Settings) -> str:
    """kombu's plain ``filesystem://`` is swapped for the atomic-publish variant (messaging.embedded_broker)."""
    url = settings.effective_broker_url
    if url.startswith("filesystem://"):
        return f"{SCHEME}://" + url.removeprefix("filesystem://")
    return url


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    url = broker_url(settings)
    if url.startswith(f"{SCHEME}://"):
        # The embedded default: message files under ./var/broker, no server. It cannot redeliver a message
        # a killed worker had taken; the outbox ledger and the sweeper make that harmless.
        folder = settings.broker_dir / "messages"
        processed = settings.broker_dir / "processed"
        folder.mkdir(parents=True, exist_ok=True)
        processed.mkdir(parents=True, exist_ok=True)
        control = settings.broker_dir / "control"  # broadcast (remote control) messages
        staging = settings.broker_dir / "staging"  # messages being written, renamed into place when complete
        control.mkdir(parents=True, exist_ok=True)
        staging.mkdir(parents=True, exist_ok=True)
        return {"data_folder_in": str(folder), "data_folder_out": str(folder), "processed_folder": str(processed),
                "store_processed": False, "control_folder": str(control), "staging_folder": str(staging),
                # A server-less transport can only poll: the interval bounds how long a message waits.
                "polling_interval": 0.05}
    if url.startswith(("redis://", "rediss://")):
        # Unacked messages come back after this long; keep it above the longest task.
        return {"visibility_timeout": 3600}
    return {}


def route_for(settings: Settings, task_name: str) -> str:
    return queue_name(queue_for(task_name), settings.queue_prefix)


def celery_config(settings: Settings) -> dict[str, Any]:
    settings.var_dir.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule file there
    return {
        "broker_url": broker_url(settings),
        "broker_transport_options": broker_transport_options(settings),
        "broker_connection_retry_on_startup": True,
        # A worker whose broker went away keeps trying (every 2 s: workers.consumer), however long it is gone.
        "broker_connection_max_retries": None,
        "broker_connection_timeout": 2.0,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        # Tasks are idempotent (keyed by the rows they work on), so redelivery is safe: ack after work.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # On a lost broker connection, running tasks finish: their acks fail and the broker redelivers them,
        # which is safe (they are idempotent). Cancelling them instead is beyond the webhook worker's thread pool.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # No prefetch reduction after a reconnect: restoring it runs basic.qos from the tasks' own threads, and
        # in a thread pool two of those on one channel deadlock the worker (it consumes nothing more).
        "worker_enable_prefetch_count_reduction": False,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": queue_name("sweep", settings.queue_prefix),
        "task_create_missing_queues": True,
        "task_queue_names": [queue_name(q, settings.queue_prefix) for q in QUEUES],
        # The remote-control (pidbox) queue of a worker must survive a broker blip: exclusive, it stays locked
        # by the dead connection until the broker notices, and the reconnecting worker dies on RESOURCE_LOCKED.
        # Non-exclusive with an expiry, an orphan disappears a minute after its worker did.
        "control_queue_exclusive": False,
        "control_queue_expires": 60.0,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "beat_schedule_filename": str((settings.var_dir / "celerybeat-schedule").resolve()),
    }
