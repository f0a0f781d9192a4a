"""Fairness between endpoints on one worker process: each endpoint's share (attempts at once, attempts per
second), against a real HTTP sink on 127.0.0.1 and the real database."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import jobs, recorder
from domain.webhooks.dispatch import Throttle
from domain.webhooks.models import WebhookEndpoint
from tests.conftest import World
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import deliveries, meta_events, reconfigure, register, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_spaces_starts_at_the_rate() -> None:
    clock = FakeClock()
    throttle = Throttle(4.0, clock)
    assert [throttle.reserve() for _ in range(3)] == [0.0, 0.25, 0.5]
    clock.now += 2.0  # idle for a while: no burst is saved up, the next start goes at once
    assert throttle.reserve() == 0.0
    assert throttle.reserve() == 0.25


def set_share(endpoint_id: int, max_in_flight: int, rate_limit: float | None = None) -> None:
    with unit_of_work() as session:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                        .values(max_in_flight=max_in_flight, rate_limit=rate_limit))


def test_a_slow_endpoint_does_not_hold_up_a_fast_one(settings: Settings, world: World, sink: Sink,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Long enough timeouts that the slow consumer's 10 s answer is an answer, not a timeout.
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_READ_TIMEOUT_SECONDS="15", KEYMETA_WEBHOOK_TOTAL_TIMEOUT_SECONDS="20",
                KEYMETA_WEBHOOK_LEASE_SECONDS="120")
    slow = register(sink.on("/slow", Reply(200, delay=10)))
    fast = register(sink.on("/fast", Reply(200)))
    set_share(slow.id, max_in_flight=2)
    created = jobs.fan_out_events(meta_events(world, 12))  # slow and fast interleaved, slow first
    assert len(created) == 24
    worker = threading.Thread(target=jobs.deliver, args=(created,))
    worker.start()
    try:
        def fast_done() -> list[str] | None:
            rows = [r for r in deliveries() if r.endpoint_id == fast.id]
            return [r.status for r in rows] if all(r.status == "succeeded" for r in rows) else None

        wait_until(fast_done, timeout=60, message="every delivery to the fast endpoint to succeed")
        # Every fast delivery is recorded while the slow consumer has answered none, and it only ever got its
        # share: two attempts at once, the other ten still waiting in their own queue.
        slow_rows = [r for r in deliveries() if r.endpoint_id == slow.id]
        assert [r.status for r in slow_rows] == ["in_progress"] * 12
        assert len(sink.at("/slow")) == 2
        assert len(sink.at("/fast")) == 12
    finally:
        sink.release()
        worker.join(60)
    assert not worker.is_alive()
    assert [r.status for r in deliveries()] == ["succeeded"] * 24
    assert len(sink.at("/slow")) == 12


def test_a_caller_that_stops_waiting_leaves_the_attempts_to_finish_and_be_recorded(
        settings: Settings, world: World, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_READ_TIMEOUT_SECONDS="15", KEYMETA_WEBHOOK_TOTAL_TIMEOUT_SECONDS="20",
                KEYMETA_WEBHOOK_LEASE_SECONDS="120")
    register(sink.on("/slow", Reply(200, delay=10)))
    created = jobs.fan_out_events(meta_events(world, 3))
    report = jobs.deliver(created, wait=0)  # a task thread is free again at once
    assert (report.claimed, report.sending, report.outcomes) == (3, 3, {})
    assert [r.status for r in deliveries()] == ["in_progress"] * 3
    sink.release()
    wait_until(lambda: [r.status for r in deliveries()] == ["succeeded"] * 3, timeout=30,
               message="the background attempts to be recorded")
    assert len(sink.at("/slow")) == 3


def test_a_worker_finishing_waits_for_the_attempts_still_running(settings: Settings, world: World, sink: Sink,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_READ_TIMEOUT_SECONDS="15", KEYMETA_WEBHOOK_TOTAL_TIMEOUT_SECONDS="20",
                KEYMETA_WEBHOOK_LEASE_SECONDS="120")
    register(sink.on("/slow", Reply(200, delay=10)))
    created = jobs.fan_out_events(meta_events(world, 2))
    jobs.deliver(created, wait=0)
    assert recorder.drain(timeout=0) == 2  # both still waiting for the consumer
    sink.release()
    assert jobs.finish_sending() == 0
    assert [r.status for r in deliveries()] == ["succeeded"] * 2
