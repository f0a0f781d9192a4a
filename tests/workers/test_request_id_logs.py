"""The request id of an API request follows its work into the audit and webhook log lines.

A real scenario, without a broker: create-meta requests through the in-process app with known
``X-Request-Id`` headers, then the audit and webhook task bodies (which call ``domain.events.audit.record_events``,
``jobs.fan_out_and_deliver`` and ``jobs.deliver``) with the message context a worker binds before each task
(``task_prerun``), delivering to a real HTTP sink on 127.0.0.1. structlog is configured as in production
(JSON to stderr, here at debug level) and stderr is captured.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from celery import signals
from sqlalchemy import delete, select, update
from starlette.testclient import TestClient

from domain.events.models import OutboxEvent
from domain.platform.database import unit_of_work
from domain.platform.logs import configure_logging
from domain.platform.settings import Settings, get_settings
from domain.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.api.conftest import ENDPOINT
from tests.conftest import make_world
from tests.logcapture import uncache_loggers
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import WEBHOOK_ENV, reconfigure, register
from workers import audit_tasks, webhook_tasks


class RecordingDoorbell:
    def __init__(self) -> None:
        self.rung: list[tuple[str, list[int], str | None]] = []

    def ring(self, task_name: str, ids: list[int], request_id: str | None = None) -> None:
        self.rung.append((task_name, list(ids), request_id))


@pytest.fixture
def json_logs(settings: Settings, monkeypatch: pytest.MonkeyPatch,
              capfd: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """JSON logs at debug level on the captured stderr. Call ``start_json_logs`` in the test body: the
    capture's stderr object during fixture setup is not the one of the test call."""
    saved = structlog.get_config()
    reconfigure(monkeypatch, KEYMETA_LOG_FORMAT="json", KEYMETA_LOG_LEVEL="debug", **WEBHOOK_ENV)
    yield capfd
    structlog.configure(**saved)  # not left writing to this test's captured stderr
    uncache_loggers()
    structlog.contextvars.clear_contextvars()


def start_json_logs() -> None:
    configure_logging(get_settings())
    uncache_loggers()


def lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    captured = capfd.readouterr()
    parsed = []
    for line in (captured.err + captured.out).splitlines():
        if line.startswith("{"):
            parsed.append(json.loads(line))
    return parsed


def run_task(task: Any, *args: Any) -> None:
    """As a worker runs it: ``task_prerun`` binds the message's request id (none here: a batch), then the body."""
    signals.task_prerun.send(sender=task, task_id=uuid.uuid4().hex, task=task, args=args, kwargs={})
    task(*args)


def create_meta(client: TestClient, request_id: str) -> int:
    world = make_world()
    response = client.post(ENDPOINT, data=world.form(), headers={"X-Request-Id": request_id})
    assert response.json()["response"]["code"] == 453
    assert response.headers["x-request-id"] == request_id
    with unit_of_work() as session:
        return session.scalars(select(OutboxEvent.id).where(OutboxEvent.request_id == request_id)).one()


def test_audit_and_webhook_attempt_lines_carry_the_request_id(client: TestClient, json_logs: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    start_json_logs()
    sink = Sink()
    try:
        with unit_of_work() as session:
            session.execute(delete(WebhookEndpoint))  # only this test's sink receives
        register(sink.on("/hook", Reply(500), Reply(200)))
        doorbell = RecordingDoorbell()
        monkeypatch.setattr(webhook_tasks, "doorbell", lambda: doorbell)

        first, second = f"req-{uuid.uuid4().hex[:12]}", f"req-{uuid.uuid4().hex[:12]}"
        first_event, second_event = create_meta(client, first), create_meta(client, second)
        lines(json_logs)  # the API's own lines are not the point here

        # One audit batch holding both requests' events (as a coalesced doorbell or the sweeper sends it).
        run_task(audit_tasks.record, [first_event, second_event])
        logged = lines(json_logs)
        per_event = {line["event_id"]: line for line in logged if line["event"] == "audit.event_recorded"}
        assert per_event[first_event]["request_id"] == first and per_event[first_event]["level"] == "debug"
        assert per_event[second_event]["request_id"] == second
        [summary] = [line for line in logged if line["event"] == "audit.recorded"]
        assert summary["request_ids"] == [first, second] and summary["appended"] == 2
        assert summary["request_id"] is None  # a batch of several requests names them in request_ids

        # Webhooks: fan-out of the first request's event alone, which sends attempt 1 itself (500); then
        # webhooks.deliver, as the sweeper rings it, makes attempt 2 (200).
        run_task(webhook_tasks.fan_out, [first_event])
        assert doorbell.rung == []  # sent by the fan-out task: nothing left for webhooks.deliver
        fan_out_lines = lines(json_logs)
        [fanned] = [line for line in fan_out_lines if line["event"] == "webhooks.fanned_out"]
        assert fanned["request_id"] == first and fanned["request_ids"] == [first]
        assert fanned["deliveries"] == 1 and fanned["sent"] == 1 and fanned["pending"] == 1
        with unit_of_work() as session:
            delivery_ids = list(session.scalars(select(WebhookDelivery.id)
                                                .where(WebhookDelivery.event_id == first_event)))
        with unit_of_work() as session:  # the retry is due in 0.2 s: make it due now
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids))
                            .values(next_attempt_at=WebhookDelivery.created_at))
        run_task(webhook_tasks.deliver, delivery_ids)
        logged = fan_out_lines + lines(json_logs)
        attempts = [line for line in logged if line["event"] == "webhooks.attempt"]
        assert [(a["attempt_no"], a["outcome"], a["status_code"], a["delivery_status"]) for a in attempts] == [
            (1, "failure", 500, "pending"), (2, "success", 200, "succeeded")]
        for attempt in attempts:
            assert attempt["request_id"] == first
            assert attempt["delivery_id"] == delivery_ids[0] and isinstance(attempt["duration_ms"], int)
            assert "endpoint_id" in attempt
        assert attempts[0]["level"] == "warning" and attempts[1]["level"] == "info"
        [delivered] = [line for line in logged if line["event"] == "webhooks.delivered"]
        assert delivered["request_id"] == first and delivered["succeeded"] == 1

        # What an attempt line never holds: the URL, the secret, the signature, the body.
        received = sink.received[-1]
        text = json.dumps(attempts)
        for secret in (sink.url("/hook"), "/hook", received.headers["webhook-signature"], "whsec_",
                       received.body.decode()):
            assert secret not in text
        assert len(sink.received) == 2
    finally:
        sink.close()

