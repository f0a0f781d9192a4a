"""Fan-out, attempts and the sweeper, called directly, against the real database and a real HTTP sink."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from domain.platform.database import unit_of_work
from domain.platform.models import OutboxEvent, utcnow
from domain.platform.settings import Settings
from domain.webhooks import audit_events, delivery, runner
from domain.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.conftest import World
from tests.webhook_sink import Reply, Sink, closed_port
from tests.webhook_support import deliveries, meta_events, outbox_events, reconfigure, register, wait_until


def attempts_of(delivery_id: int) -> list[WebhookAttempt]:
    with unit_of_work() as session:
        return list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
                                    .order_by(WebhookAttempt.attempt_no)))


def endpoint_row(endpoint_id: int) -> WebhookEndpoint:
    with unit_of_work() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        assert row is not None
        return row


def run_until_settled(delivery_ids: list[int], timeout: float = 10.0) -> list[WebhookDelivery]:
    """Drive deliveries the way the workers do: deliver what is due, sweep for retries, until none is pending."""
    runner.deliver(delivery_ids)

    def settled() -> list[WebhookDelivery] | None:
        runner.deliver(runner.sweep_deliveries())
        rows = [r for r in deliveries() if r.id in delivery_ids]
        return rows if all(r.status not in ("pending", "in_progress") for r in rows) else None

    return wait_until(settled, timeout=timeout, interval=0.05, message="deliveries to settle")


def test_delivers_the_spec_payload_with_verifiable_headers(settings: Settings, world: World, sink: Sink) -> None:
    endpoint = register(sink.on("/hook", Reply(200)))
    [event_id] = meta_events(world, value="v\u00e9/1")
    created = runner.fan_out_events([event_id])
    assert len(created) == 1

    report = runner.deliver(created)
    assert report.outcomes == {"succeeded": 1}
    [request] = sink.at("/hook")
    payload = Webhook(endpoint.secret).verify(request.body, request.headers)
    with unit_of_work() as session:
        event = session.get(OutboxEvent, event_id)
        assert event is not None and event.fanned_out_at is not None
        meta_id = event.subject_id
    assert payload["type"] == "license_key_meta.created"
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["data"] == {"meta_id": meta_id, "license_key": world.license_key, "product_id": world.product_id,
                               "identifier": world.identifier, "key": payload["data"]["key"], "value": "v\u00e9/1",
                               "created_at": payload["data"]["created_at"]}
    assert payload["timestamp"].endswith("Z") and payload["data"]["created_at"].endswith("Z")
    [row] = deliveries(id=created[0])
    assert request.headers["webhook-id"] == row.msg_id and row.msg_id.startswith("msg_")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
    assert request.headers["content-type"] == "application/json"
    assert row.status == "succeeded" and row.attempts == 1
    [attempt] = attempts_of(row.id)
    assert (attempt.outcome, attempt.status_code, attempt.address, attempt.response_excerpt) == \
        ("success", 200, "127.0.0.1", "ok")


def test_fan_out_is_idempotent_and_respects_subscriptions(settings: Settings, world: World, sink: Sink) -> None:
    subscribed = register(sink.url("/a"), ["license_key_meta.created"])
    everything = register(sink.url("/b"))
    other_type = register(sink.url("/c"))
    disabled = register(sink.url("/d"))
    with unit_of_work() as session:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == disabled.id).values(enabled=False))
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == other_type.id)
                        .values(event_types=["some.other_type"]))
    events = meta_events(world, 3)
    first = runner.fan_out_events(events)
    again = runner.fan_out_events(events)
    assert len(first) == 6 and again == []
    rows = deliveries()
    expected = {(e, p) for e in events for p in (subscribed.id, everything.id)}
    assert {(r.event_id, r.endpoint_id) for r in rows} == expected
    assert other_type.id not in {r.endpoint_id for r in rows}
    assert len({r.msg_id for r in rows}) == 6
    assert all(r.body == rows[0].body for r in rows if r.event_id == rows[0].event_id)


def test_many_endpoints_many_events_concurrent_fan_out_no_duplicates(settings: Settings, world: World,
                                                                     sink: Sink) -> None:
    hooks = [register(sink.url(f"/many/{i}")) for i in range(12)]
    events = meta_events(world, 25)
    results: list[list[int]] = []

    def fan(ids: list[int]) -> None:
        results.append(runner.fan_out_events(ids))

    threads = [threading.Thread(target=fan, args=(events[i::2] + events,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    created = [i for ids in results for i in ids]
    assert len(created) == len(set(created)) == 12 * 25
    assert len(deliveries()) == 12 * 25

    # Deliver everything twice over (duplicate messages): each message arrives exactly once.
    threads = [threading.Thread(target=runner.deliver, args=(created,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    run_until_settled(created, timeout=30)
    ids = [r.headers["webhook-id"] for r in sink.received]
    assert len(ids) == len(set(ids)) == 12 * 25
    assert {r.path for r in sink.received} == {f"/many/{i}" for i in range(12)}
    rows = deliveries()
    assert all(r.status == "succeeded" and r.attempts == 1 for r in rows)
    assert len(hooks) == 12


def test_failure_then_success_retries_on_schedule_with_the_same_id(settings: Settings, world: World,
                                                                    sink: Sink) -> None:
    endpoint = register(sink.on("/flaky", Reply(500, b"boom"), Reply(200)))
    created = runner.fan_out_events(meta_events(world))
    report = runner.deliver(created)
    assert report.outcomes == {"pending": 1}
    [row] = deliveries(id=created[0])
    delay = (row.next_attempt_at - row.updated_at).total_seconds() if row.next_attempt_at else -1
    assert 0.2 * 0.8 - 0.01 <= delay <= 0.2 * 1.2 + 0.01  # first step of the schedule, ±20 % jitter
    assert endpoint_row(endpoint.id).failing_since is not None

    [row] = run_until_settled(created)
    assert row.status == "succeeded" and row.attempts == 2
    first, second = sink.at("/flaky")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.at - first.at >= 0.15
    for request in (first, second):
        Webhook(endpoint.secret).verify(request.body, request.headers)
    assert [(a.outcome, a.status_code, a.response_excerpt) for a in attempts_of(row.id)] == \
        [("failure", 500, "boom"), ("success", 200, "ok")]
    assert endpoint_row(endpoint.id).failing_since is None


def test_exhausted_after_the_schedule_and_audited(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/down", Reply(503, b"down")))
    created = runner.fan_out_events(meta_events(world))
    started = time.monotonic()
    [row] = run_until_settled(created)
    assert row.status == "failed" and row.attempts == 4  # first try + 3 retries of "0.2,0.5,1"
    assert time.monotonic() - started >= (0.2 + 0.5 + 1) * 0.8 - 0.05
    assert [a.status_code for a in attempts_of(row.id)] == [503] * 4
    [event] = outbox_events(audit_events.DELIVERY_EXHAUSTED, row.id)
    assert event.payload["actor"] == "webhooks" and event.payload["detail"]["attempts"] == 4
    assert endpoint_row(row.endpoint_id).enabled  # exhausting one delivery does not disable the endpoint


def test_410_disables_the_endpoint_and_cancels_the_rest(settings: Settings, world: World, sink: Sink) -> None:
    endpoint = register(sink.on("/gone", Reply(410)))
    created = runner.fan_out_events(meta_events(world, 3))
    runner.deliver(created[:1])
    row = endpoint_row(endpoint.id)
    assert not row.enabled and row.disabled_reason == "endpoint answered 410 Gone"
    [event] = outbox_events(audit_events.ENDPOINT_DISABLED, endpoint.id)
    assert event.payload["actor"] == "webhooks"
    runner.deliver(created[1:])
    assert [r.status for r in deliveries()] == ["failed", "cancelled", "cancelled"]
    assert len(sink.at("/gone")) == 1


def test_continuous_failure_for_the_window_disables(settings: Settings, world: World, sink: Sink) -> None:
    endpoint = register(sink.on("/sick", Reply(500)))
    created = runner.fan_out_events(meta_events(world))
    with unit_of_work() as session:  # failing since before the 5-day window
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id)
                        .values(failing_since=utcnow() - dt.timedelta(days=5, seconds=1)))
    runner.deliver(created)
    row = endpoint_row(endpoint.id)
    assert not row.enabled and (row.disabled_reason or "").startswith("failing continuously since")
    assert deliveries()[0].status == "failed"
    assert len(outbox_events(audit_events.ENDPOINT_DISABLED, endpoint.id)) == 1


def test_a_success_resets_the_failure_streak(settings: Settings, world: World, sink: Sink) -> None:
    endpoint = register(sink.on("/ok", Reply(200)))
    with unit_of_work() as session:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id)
                        .values(failing_since=utcnow() - dt.timedelta(days=4)))
    runner.deliver(runner.fan_out_events(meta_events(world)))
    assert endpoint_row(endpoint.id).failing_since is None


def test_retry_after_is_honoured(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/busy", Reply(429, headers={"Retry-After": "2"}), Reply(200)))
    created = runner.fan_out_events(meta_events(world))
    runner.deliver(created)
    [row] = deliveries()
    assert row.next_attempt_at is not None
    assert 1.9 <= (row.next_attempt_at - row.updated_at).total_seconds() <= 2.1  # not the 0.2 s of the schedule


@pytest.mark.parametrize(("reply", "error"), [
    (Reply(302, b"", headers={"Location": "/elsewhere"}), "redirect not followed (Location: /elsewhere)"),
    (Reply(delay=3), "read timeout"),
    (Reply(drip=0.05), "total time cap"),
])
def test_failures_are_recorded_attempts(settings: Settings, world: World, sink: Sink, reply: Reply,
                                        error: str) -> None:
    register(sink.on("/bad", reply))
    created = runner.fan_out_events(meta_events(world))
    started = time.monotonic()
    runner.deliver(created)
    assert time.monotonic() - started < settings.webhook_total_timeout_seconds + 1.5
    [attempt] = attempts_of(created[0])
    assert attempt.outcome == "failure" and error in (attempt.error or "")
    assert deliveries()[0].status == "pending"
    assert not sink.at("/elsewhere")


def test_connection_refused_is_a_recorded_failure(settings: Settings, world: World) -> None:
    register(f"http://127.0.0.1:{closed_port()}/hook")
    created = runner.fan_out_events(meta_events(world))
    runner.deliver(created)
    [attempt] = attempts_of(created[0])
    assert attempt.outcome == "failure" and attempt.status_code is None
    assert (attempt.error or "").startswith("connection failed")


def test_huge_and_non_utf8_bodies_are_capped_and_stored(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/huge", Reply(200, stream_bytes=50 * 1024 * 1024)))
    register(sink.on("/binary", Reply(500, b"\xff\xfe\x00\x80bad\x00")))
    created = runner.fan_out_events(meta_events(world))
    started = time.monotonic()
    runner.deliver(created)
    assert time.monotonic() - started < 3
    huge, binary = (attempts_of(i)[0] for i in created)
    assert huge.outcome == "success" and huge.response_truncated
    assert huge.response_excerpt == "x" * settings.webhook_response_excerpt_bytes
    assert binary.outcome == "failure" and not binary.response_truncated
    assert binary.response_excerpt is not None and "\x00" not in binary.response_excerpt
    assert binary.response_excerpt.endswith("bad\ufffd") and "\ufffd" in binary.response_excerpt[:3]


def test_send_time_ssrf_refusal(settings: Settings, world: World, sink: Sink,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    register(sink.url("/hook", host="localhost"))
    created = runner.fan_out_events(meta_events(world))
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_ALLOWED_CIDRS="")  # loopback no longer allow-listed
    runner.deliver(created)
    [attempt] = attempts_of(created[0])
    assert attempt.outcome == "failure" and (attempt.error or "").startswith("address refused")
    assert "loopback" in (attempt.error or "") and attempt.address is None
    assert sink.received == []


def test_dns_answer_is_pinned_host_header_kept(settings: Settings, world: World, sink: Sink,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    from domain.webhooks import ssrf

    answers: dict[str, list[str]] = {"hooks.test": ["127.0.0.1"]}
    monkeypatch.setattr(ssrf, "resolve", lambda host, port, timeout: [ipaddress.ip_address(a) for a in answers[host]])
    register(f"http://hooks.test:{sink.port}/pinned")
    created = runner.fan_out_events(meta_events(world, 2))
    runner.deliver(created[:1])
    [request] = sink.at("/pinned")
    assert request.headers["host"] == f"hooks.test:{sink.port}"

    answers["hooks.test"] = ["10.1.2.3"]  # rebinding to an internal address: refused, nothing sent
    runner.deliver(created[1:])
    [attempt] = attempts_of(created[1])
    assert "10.1.2.3 is private" in (attempt.error or "")
    assert len(sink.at("/pinned")) == 1


def test_lost_worker_lease_expires_and_the_delivery_is_retried(settings: Settings, world: World, sink: Sink,
                                                               master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    created = runner.fan_out_events(meta_events(world))
    with unit_of_work() as session:  # a worker claims, then dies before recording
        [lost] = delivery.claim(session, created, delivery.ClaimTerms(master_key, lease_seconds=1.5))
    assert runner.deliver(created).claimed == 0  # leased
    assert runner.sweep_deliveries() == []  # rung at fan-out; the lease still runs
    [row] = run_until_settled(created)
    assert row.status == "succeeded" and row.attempts == 2
    assert [a.outcome for a in attempts_of(row.id)] == ["lost", "success"]
    # The dead worker's late result is not recorded over the new one.
    with unit_of_work() as session:
        from domain.webhooks.transport import SendResult

        recorded = delivery.record(session, lost, SendResult(utcnow(), 1, status_code=500),
                                   runner.retry_policy(settings))
    assert recorded.status == "stale" and deliveries()[0].status == "succeeded"


def test_sweeper_rings_only_what_is_due_and_not_recently_rung(settings: Settings, world: World, sink: Sink,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_RETRY_SCHEDULE="1.5", KEYMETA_WEBHOOK_RETRY_JITTER="0",
                KEYMETA_WEBHOOK_RERING_SECONDS="1.5")
    register(sink.on("/hook", Reply(500), Reply(200)))
    created = runner.fan_out_events(meta_events(world))
    assert runner.sweep_deliveries() == []  # just rung by fan-out
    runner.deliver(created)  # fails; the retry is due in 1.5 s
    assert runner.deliver(created).claimed == 0  # an early duplicate message does nothing
    assert runner.sweep_deliveries() == []  # not due yet
    started = time.monotonic()
    assert wait_until(runner.sweep_deliveries, timeout=5, interval=0.05) == created
    assert time.monotonic() - started >= 1.0
    assert runner.sweep_deliveries() == []  # rung: not again before the re-ring interval
    assert wait_until(runner.sweep_deliveries, timeout=5, interval=0.1) == created  # message lost? re-rung


def test_body_is_stable_across_attempts(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/flaky", Reply(500), Reply(200)))
    run_until_settled(runner.fan_out_events(meta_events(world)))
    first, second = sink.at("/flaky")
    assert first.body == second.body
    assert json.loads(first.body)["type"] == "license_key_meta.created"
