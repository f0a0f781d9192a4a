"""The broker a bench run rings: none of its own (embedded), or a local RabbitMQ or Redis, on scratch queues."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from kombu import Connection, Queue

from domain.platform.task_names import QUEUES, queue_name

BROKER_URLS = {
    "embedded": "",  # the filesystem broker under the run's own var dir
    "rabbitmq": os.environ.get("KEYMETA_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "redis": os.environ.get("KEYMETA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
}


@contextmanager
def scratch_queues(broker_url: str, prefix: str) -> Iterator[None]:
    """Queues named ``prefix…`` are deleted afterwards, with whatever messages they still hold."""
    try:
        yield
    finally:
        if broker_url:
            try:
                with Connection(broker_url, connect_timeout=5) as connection:
                    channel = connection.default_channel
                    for queue in QUEUES:
                        Queue(queue_name(queue, prefix)).bind(channel).delete()
            except Exception as exc:  # noqa: BLE001 — leftover queues must not turn a measured run into a failure
                print(f"bench: could not delete the scratch queues {prefix}*: {exc}", file=sys.stderr)
