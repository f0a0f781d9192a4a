"""Task names are the contract between producers and workers: every name a producer uses is registered."""

from __future__ import annotations

import domain.platform.task_names as task_names
from domain.platform.task_names import QUEUES, queue_for
from workers.app import celery_app


def _produced_names() -> set[str]:
    return {value for name, value in vars(task_names).items()
            if name.isupper() and isinstance(value, str) and "." in value}


def test_every_produced_task_name_is_registered_by_the_workers() -> None:
    celery_app.loader.import_default_modules()
    registered = set(celery_app.tasks)
    produced = _produced_names()
    assert {"audit.record", "webhooks.fan_out", "sweep.outbox"} <= produced
    assert produced - registered == set()


def test_every_task_routes_to_its_concern_queue() -> None:
    for name in _produced_names():
        assert queue_for(name) in QUEUES
        assert celery_app.amqp.router.route({}, name)["queue"].name.endswith(queue_for(name))


def test_tasks_ack_late_and_reject_on_worker_lost() -> None:
    assert celery_app.conf.task_acks_late is True
    assert celery_app.conf.task_reject_on_worker_lost is True
    assert celery_app.conf.worker_prefetch_multiplier == 1
    assert celery_app.conf.task_serializer == "json"
