"""Fan-out that sends: deliveries created claimed in the fan-out transaction, sent by the same task.

Real database and a real HTTP sink on 127.0.0.1; ``jobs.fan_out_and_deliver`` is what ``webhooks.fan_out`` runs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from domain.platform.database import unit_of_work
from domain.platform.models import utcnow
from domain.platform.settings import Settings
from domain.platform.task_names import WEBHOOKS_DELIVER
from domain.webhooks import delivery, fan_out, jobs
from domain.webhooks.models import WebhookEndpoint
from domain.webhooks.transport import SendResult
from tests.conftest import World
from tests.domain.webhooks.test_delivery import attempts_of, run_until_settled
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import deliveries, meta_events, reconfigure, register, wait_until
from workers import webhook_tasks


def test_fan_out_sends_the_first_deliveries_and_leaves_the_rest_to_deliver(
        settings: Settings, world: World, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_INLINE_DELIVERIES="2")
    hooks = [register(sink.on(f"/inline/{i}", Reply(200))) for i in range(3)]
    events = meta_events(world, count=2)

    report = jobs.fan_out_and_deliver(events)
    result = report.fanned_out
    assert result.events == 2 and len(result.delivery_ids) == 6
    assert [c.delivery_id for c in result.claims] == result.delivery_ids[:2]
    assert report.delivered.claimed == 2 and report.delivered.outcomes == {"succeeded": 2}
    assert result.unclaimed_ids == result.delivery_ids[2:]
    received = [r for i in range(3) for r in sink.at(f"/inline/{i}")]
    assert len(received) == 2
    secrets = {f"/inline/{i}": hook.secret for i, hook in enumerate(hooks)}
    for request in received:  # signed as any delivery is: a consumer verifies it with the library
        Webhook(secrets[request.path]).verify(request.body, request.headers)

    by_id = {row.id: row for row in deliveries()}
    assert [by_id[i].status for i in result.delivery_ids] == ["succeeded"] * 2 + ["pending"] * 4
    assert [by_id[i].attempts for i in result.delivery_ids] == [1, 1, 0, 0, 0, 0]
    assert {r.headers["webhook-id"] for r in received} == {by_id[i].msg_id for i in result.delivery_ids[:2]}

    assert jobs.deliver(result.unclaimed_ids).outcomes == {"succeeded": 4}
    assert len({r.headers["webhook-id"] for r in sink.received}) == 6  # one message per delivery, no repeats
    assert jobs.fan_out_and_deliver(events).fanned_out.events == 0  # a re-rung event is a no-op


def test_with_no_inline_deliveries_fan_out_only_creates_rows(settings: Settings, world: World, sink: Sink,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_INLINE_DELIVERIES="0")
    register(sink.on("/hook", Reply(200)))
    report = jobs.fan_out_and_deliver(meta_events(world))
    assert report.fanned_out.claims == [] and report.delivered.claimed == 0
    assert report.fanned_out.unclaimed_ids == report.fanned_out.delivery_ids
    assert sink.received == [] and [row.status for row in deliveries()] == ["pending"]


def test_a_worker_lost_after_fan_out_leaves_leased_rows_that_are_retried(settings: Settings, world: World,
                                                                        sink: Sink, master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    events = meta_events(world)
    terms = delivery.ClaimTerms(master_key, lease_seconds=1.0)
    with unit_of_work() as session:  # fan-out commits its claimed rows, then the worker dies before sending
        result = fan_out.fan_out(session, events, claim_first=1, terms=terms)
    [claimed] = result.claims
    assert jobs.deliver(result.delivery_ids).claimed == 0  # leased: no second sender meanwhile
    assert jobs.sweep_deliveries() == []  # the lease still runs
    wait_until(jobs.sweep_deliveries, timeout=5, interval=0.1, message="the lease to run out")
    [row] = run_until_settled(result.delivery_ids)
    assert row.status == "succeeded" and row.attempts == 2
    assert [a.outcome for a in attempts_of(row.id)] == ["lost", "success"]
    [request] = sink.at("/hook")
    assert request.headers["webhook-id"] == claimed.msg_id == row.msg_id  # the same message, retried


def test_the_task_rings_the_unclaimed_rest_before_it_sends(settings: Settings, world: World, sink: Sink,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_INLINE_DELIVERIES="1")
    for i in range(3):
        register(sink.on(f"/rest/{i}", Reply(200)))
    rung: list[tuple[str, list[int], int]] = []

    class RecordingDoorbell:
        def ring(self, task_name: str, ids: list[int], request_id: str | None = None) -> None:
            rung.append((task_name, list(ids), len(sink.received)))  # what had been sent by then

    monkeypatch.setattr(webhook_tasks, "doorbell", RecordingDoorbell)
    webhook_tasks.fan_out(meta_events(world))
    by_status = {row.id: row.status for row in deliveries()}
    [(task_name, ids, sent_before)] = rung
    assert task_name == WEBHOOKS_DELIVER and sent_before == 0  # the rest never waits for this task's POSTs
    assert len(ids) == 2 and all(by_status[i] == "pending" for i in ids)
    assert len(sink.received) == 1 and sorted(by_status.values()) == ["pending", "pending", "succeeded"]


def test_recording_attempts_never_blocks_fan_out_and_never_misses_a_failure_streak(
        settings: Settings, world: World, sink: Sink) -> None:
    hook = register(sink.on("/hook", Reply(200)))
    created = jobs.fan_out_events(meta_events(world, count=4))
    with unit_of_work() as session:
        claims = delivery.claim(session, created, jobs.claim_terms(settings))
    policy = jobs.retry_policy(settings)

    def record(session: Session, claim: delivery.Claim, status: int) -> None:
        delivery.record_many(session, [(claim, SendResult(utcnow(), 3, status_code=status))], policy)

    def in_other_transaction(work: Callable[[Session], object]) -> bool:
        """False when the work had to wait for a row lock (lock_timeout)."""
        with unit_of_work() as other:
            other.execute(text("SET LOCAL lock_timeout = '500ms'"))
            try:
                work(other)
            except OperationalError:
                return False
            return True

    def fan_out_more(session: Session) -> None:  # inserts for this endpoint: the foreign key's KEY SHARE
        assert len(fan_out.fan_out(session, meta_events(world)).delivery_ids) == 1

    with unit_of_work() as recording:  # successes share the endpoint and let fan-out insert
        record(recording, claims[0], 200)
        assert in_other_transaction(lambda other: record(other, claims[1], 200))
        assert in_other_transaction(fan_out_more)

    with unit_of_work() as recording:  # a failure being recorded (it starts a failure streak) …
        record(recording, claims[2], 500)
        assert in_other_transaction(fan_out_more)  # … still lets fan-out insert,
        assert not in_other_transaction(lambda other: record(other, claims[3], 200))  # but a success waits
    with unit_of_work() as session:
        assert session.scalar(select(WebhookEndpoint.failing_since).where(WebhookEndpoint.id == hook.id))
    assert in_other_transaction(lambda other: record(other, claims[3], 200))  # … and then ends the streak
    with unit_of_work() as session:
        assert session.scalar(select(WebhookEndpoint.failing_since).where(WebhookEndpoint.id == hook.id)) is None
