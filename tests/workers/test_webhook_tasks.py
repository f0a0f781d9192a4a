"""Webhooks on real processes: uvicorn API, Celery workers (webhooks, sweep) and beat, a real HTTP sink.

Runs with the embedded (filesystem) broker and, when configured, RabbitMQ and Redis, each on a fresh PostgreSQL
database (tests/integration/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from standardwebhooks.webhooks import Webhook

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.conftest import make_world
from tests.integration.conftest import ALL_STACKS, BrokerStack, make_stack
from tests.integration.helpers import cli, create_many
from tests.processes import wait_until
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import WEBHOOK_ENV, register


@pytest.fixture
def settings(webhook_settings: Settings) -> Settings:
    """Webhook timings and allow-list of tests/webhook_support.py."""
    return webhook_settings

pytestmark = pytest.mark.integration


def _stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, master_key_text: str,
           **env: str) -> Iterator[BrokerStack]:
    for name, value in {**WEBHOOK_ENV, "KEYMETA_WEBHOOK_SWEEP_INTERVAL_SECONDS": "0.3", **env}.items():
        monkeypatch.setenv(name, value)  # before the stack copies the environment for its processes
    for stack in make_stack(request, tmp_path, monkeypatch, master_key_text):
        with unit_of_work() as session:
            session.execute(delete(WebhookEndpoint))
        yield stack


@pytest.fixture(params=ALL_STACKS)
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          master_key_text: str) -> Iterator[BrokerStack]:
    yield from _stack(request, tmp_path, monkeypatch, master_key_text)


@pytest.fixture(params=ALL_STACKS)
def slow_stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               master_key_text: str) -> Iterator[BrokerStack]:
    """Long enough timeouts that a worker can be killed while it waits for the consumer's answer."""
    yield from _stack(request, tmp_path, monkeypatch, master_key_text,
                      KEYMETA_WEBHOOK_CONNECT_TIMEOUT_SECONDS="0.5", KEYMETA_WEBHOOK_READ_TIMEOUT_SECONDS="4",
                      KEYMETA_WEBHOOK_TOTAL_TIMEOUT_SECONDS="4.5", KEYMETA_WEBHOOK_LEASE_SECONDS="1")


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    yield server
    server.close()


def all_deliveries() -> list[WebhookDelivery]:
    with unit_of_work() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def attempt_outcomes(delivery_id: int) -> list[str]:
    with unit_of_work() as session:
        return list(session.scalars(select(WebhookAttempt.outcome).where(WebhookAttempt.delivery_id == delivery_id)
                                    .order_by(WebhookAttempt.attempt_no)))


def test_api_to_consumer_with_retries_through_real_workers(stack: BrokerStack, sink: Sink) -> None:
    world = make_world()
    steady = register(sink.on("/steady", Reply(200)))
    flaky = register(sink.on("/flaky", Reply(500, b"not yet"), Reply(503, b"", headers={"Retry-After": "0"}),
                             Reply(200)))
    stack.worker("webhooks", name="webhooks", concurrency=2)
    stack.worker("sweep", name="sweep")
    stack.beat()
    _, base = stack.api()

    responses = create_many(base, world, 6)
    meta_ids = sorted(r.json()["response"]["meta_id"] for r in responses)
    assert len(meta_ids) == 6

    def settled() -> bool:
        rows = all_deliveries()
        return len(rows) == 12 and all(r.status == "succeeded" for r in rows)

    wait_until(settled, timeout=60, message="12 deliveries to succeed")
    for endpoint, path in ((steady, "/steady"), (flaky, "/flaky")):
        received = sink.at(path)
        payloads = [Webhook(endpoint.secret).verify(r.body, r.headers) for r in received]
        assert sorted({p["data"]["meta_id"] for p in payloads}) == meta_ids
        assert {p["data"]["license_key"] for p in payloads} == {world.license_key}
        assert len({r.headers["webhook-id"] for r in received}) == 6  # one message per meta, retries reuse it
    assert len(sink.at("/steady")) == 6
    assert len(sink.at("/flaky")) == 8  # two failures retried on the row-driven schedule
    flaky_rows = [r for r in all_deliveries() if r.endpoint_id == flaky.id]
    assert sum(r.attempts for r in flaky_rows) == 8
    retried = [r for r in flaky_rows if r.attempts > 1]
    assert sorted(outcome for r in retried for outcome in attempt_outcomes(r.id)).count("failure") == 2

    # The operator CLI replays through the same workers: the consumer sees the same webhook-id again.
    replayed = cli("webhooks", "replay", "--delivery", str(retried[0].id), "--json", env=stack.env)
    assert replayed.returncode == 0, replayed.stderr
    wait_until(lambda: len(sink.at("/flaky")) == 9, timeout=30, message="the replayed message")
    assert sink.at("/flaky")[-1].headers["webhook-id"] == retried[0].msg_id


def test_worker_killed_mid_attempt_the_lease_expires_and_another_worker_delivers(slow_stack: BrokerStack,
                                                                                  sink: Sink) -> None:
    world = make_world()
    endpoint = register(sink.on("/slow", Reply(200, delay=30), Reply(200)))
    doomed = slow_stack.worker("webhooks", name="doomed")
    slow_stack.worker("sweep", name="sweep")
    slow_stack.beat()
    _, base = slow_stack.api()
    assert create_many(base, world, 1)[0].json()["response"]["code"] == 453

    wait_until(lambda: sink.at("/slow"), timeout=60, message="the first attempt to reach the consumer")
    doomed.kill()  # mid-request (the consumer holds the answer for 30 s): no answer read, nothing recorded
    [row] = all_deliveries()
    assert row.status == "in_progress", doomed.output()[-3000:]

    heir = slow_stack.worker("webhooks", name="heir")
    try:  # the lease (≥ 2 × the 5 s attempt cap) runs out, sweep.deliveries re-rings, the heir delivers
        wait_until(lambda: all_deliveries()[0].status == "succeeded", timeout=60, message="the heir to deliver")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{all_deliveries()[0].__dict__}\n{heir.output()[-3000:]}") from None
    assert attempt_outcomes(row.id) == ["lost", "success"]
    first, second = sink.at("/slow")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # the consumer can deduplicate
    Webhook(endpoint.secret).verify(second.body, second.headers)
