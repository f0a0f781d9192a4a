"""The worker's consumer asks kombu for prompt reconnects to a broker that went away."""

from __future__ import annotations

import inspect
from typing import Any

from kombu import Connection

from workers.app import celery_app
from workers.consumer import RECONNECT_MAX_SECONDS, PromptConsumer


class RecordingConnection:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def ensure_connection(self, *args: Any, **kwargs: Any) -> RecordingConnection:
        # As kombu would take them: a misspelled or unknown argument fails here.
        bound = inspect.signature(Connection._ensure_connection).bind(self, *args, **kwargs)
        self.calls.append(bound.arguments)
        return self


def test_the_worker_app_uses_the_prompt_consumer() -> None:
    assert celery_app.conf.worker_consumer == "workers.consumer:PromptConsumer"
    assert celery_app.conf.broker_connection_max_retries is None  # it never gives up on the broker


def test_reconnects_are_tried_at_least_every_two_seconds() -> None:
    consumer = PromptConsumer.__new__(PromptConsumer)  # only what ensure_connected reads
    consumer.app = celery_app
    consumer.first_connection_attempt = False
    consumer.broker_connection_retry_attempt = 0
    conn = RecordingConnection()
    assert consumer.ensure_connected(conn) is conn
    [call] = conn.calls
    assert call["interval_max"] == RECONNECT_MAX_SECONDS == 2.0
    assert call["interval_start"] <= call["interval_max"] and 0 < call["interval_step"] <= call["interval_max"]
