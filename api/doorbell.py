"""The API's doorbell: a Celery *producer* only (it sends by task name; it never imports the workers)."""

from __future__ import annotations

from celery import Celery

from domain.events.doorbell import QueuedDoorbell
from domain.platform.settings import Settings
from messaging.celery_config import celery_config, route_for


def make_doorbell(settings: Settings) -> QueuedDoorbell:
    producer = Celery("keymeta-api")
    producer.config_from_object(celery_config(settings))
    timeout = settings.doorbell_timeout_seconds

    def send(task_name: str, ids: list[int], request_id: str | None) -> None:
        producer.send_task(
            task_name, args=[ids], queue=route_for(settings, task_name),
            headers={"request_id": request_id} if request_id else None,
            retry=False, timeout=timeout,
            # Celery would otherwise saferepr() every id list for its logs: the costliest step of a send.
            argsrepr=f"[<{len(ids)} ids: {ids[0]}…{ids[-1]}>]",
        )

    return QueuedDoorbell(send, linger_seconds=settings.doorbell_linger_seconds)
