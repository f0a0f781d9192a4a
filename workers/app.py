"""The Celery app: configuration from domain settings, one queue per concern, routes by task name.

Run a worker per queue, e.g. ``celery -A workers.app worker -Q audit``; beat with ``celery -A workers.app beat``.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Celery, signals
from kombu import Queue

from domain.events.doorbell import MAX_IDS_PER_MESSAGE, QueuedDoorbell
from domain.platform.logs import configure_logging, get_logger
from domain.platform.settings import get_settings
from domain.platform.startup import ready_settings, settings_or_exit
from domain.platform.task_names import QUEUES, queue_name
from messaging.celery_config import celery_config, route_for
from workers.schedule import beat_schedule

TASK_MODULES = ["workers.audit_tasks", "workers.sweep_tasks", "workers.key_tasks", "workers.webhook_tasks",
                "workers.idempotency_tasks"]


def _route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any) -> dict[str, str]:
    return {"queue": route_for(get_settings(), name)}


def make_celery() -> Celery:
    settings = settings_or_exit()
    configure_logging(settings)
    app = Celery("keymeta", include=TASK_MODULES)
    app.config_from_object(celery_config(settings))
    app.conf.task_queues = [Queue(queue_name(q, settings.queue_prefix)) for q in QUEUES]
    app.conf.task_routes = (_route,)
    app.conf.beat_schedule = beat_schedule(settings)
    app.conf.worker_consumer = "workers.consumer:PromptConsumer"
    return app


celery_app = make_celery()


def send_now(task_name: str, ids: list[int], request_id: str | None = None, expires: float | None = None) -> None:
    """Synchronous send, in chunks (for the sweeper, which must know whether the broker took it)."""
    for start in range(0, len(ids), MAX_IDS_PER_MESSAGE):
        celery_app.send_task(task_name, args=[ids[start:start + MAX_IDS_PER_MESSAGE]], expires=expires,
                             headers={"request_id": request_id} if request_id else None)


def _send(task_name: str, ids: list[int], request_id: str | None) -> None:
    celery_app.send_task(task_name, args=[ids], headers={"request_id": request_id} if request_id else None,
                         retry=False)


_doorbell: QueuedDoorbell | None = None


def doorbell() -> QueuedDoorbell:
    """Per-process doorbell for tasks that hand work on (created lazily: prefork children each get one)."""
    global _doorbell
    if _doorbell is None:
        _doorbell = QueuedDoorbell(_send, linger_seconds=get_settings().doorbell_linger_seconds)
    return _doorbell


@signals.task_prerun.connect
def _bind_request_id(task: Any = None, **_: Any) -> None:
    request_id = getattr(task.request, "request_id", None) if task is not None else None
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task=task.name if task is not None else None,
                                           request_id=request_id)


@signals.worker_init.connect
@signals.beat_init.connect
def _reach_the_database(**_: Any) -> None:
    # At start, not at the first task: a worker that cannot reach its database says so and exits.
    ready_settings()


@signals.worker_shutdown.connect
def _finish_webhook_attempts(**_: Any) -> None:
    # Webhook attempts outlive their task (a slow consumer never holds a thread): record them before exiting.
    from domain.webhooks import jobs

    left = jobs.finish_sending()
    if left:
        get_logger("keymeta.workers.webhooks").warning("webhooks.unrecorded_at_shutdown", attempts=left)


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # A forked child must not reuse the parent's database sockets.
    from domain.platform.database import reset_engines

    reset_engines()
