"""Fan-out, attempts and the sweeper, called directly, against the real database and a real HTTP sink."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time

import httpcore
import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from domain.events.models import OutboxEvent
from domain.platform.database import unit_of_work
from domain.platform.models import utcnow
from domain.platform.settings import Settings
from domain.webhooks import audit_events, delivery, jobs, ssrf, transport
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
    jobs.deliver(delivery_ids)

    def settled() -> list[WebhookDelivery] | None:
        jobs.deliver(jobs.sweep_deliveries())
        rows = [r for r in deliveries() if r.id in delivery_ids]
        return rows if all(r.status not in ("pending", "in_progress") for r in rows) else None

    return wait_until(settled, timeout=timeout, interval=0.05, message="deliveries to settle")


def deliver_at(now: dt.datetime, delivery_ids: list[int], settings: Settings) -> list[delivery.Recorded]:
    """``jobs.deliver`` on a fixed clock: the same claim, send and record steps, each given ``now``.

    ``jobs.deliver`` reads the real clock itself; the policy's windows are tested here against ``now``.
    """
    with unit_of_work() as session:
        claims = delivery.claim(session, delivery_ids, jobs.claim_terms(settings), now=now)
    results = sorted(jobs.send(claims, settings), key=lambda item: item[0].delivery_id)
    with unit_of_work() as session:
        return delivery.record_many(session, results, jobs.retry_policy(settings), now=now)


def test_delivers_the_spec_payload_with_verifiable_headers(settings: Settings, world: World, sink: Sink) -> None:
    endpoint = register(sink.on("/hook", Reply(200)))
    [event_id] = meta_events(world, value="v\u00e9/1")
    created = jobs.fan_out_events([event_id])
    assert len(created) == 1

    before = int(time.time())
    report = jobs.deliver(created)
    after = int(time.time())
    assert report.outcomes == {"succeeded": 1}
    [request] = sink.at("/hook")
    payload = Webhook(endpoint.secret).verify(request.body, request.headers)
    with unit_of_work() as session:
        event = session.get(OutboxEvent, event_id)
        assert event is not None and event.fanned_out_at is not None
        meta_id = event.subject_id
    assert payload["type"] == "license_key_meta.created"
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["data"] == {"meta_id": meta_id, "version": 1, "license_key": world.license_key,
                               "product_id": world.product_id,
                               "identifier": world.identifier, "key": payload["data"]["key"], "value": "v\u00e9/1",
                               "created_at": payload["data"]["created_at"]}
    assert payload["timestamp"].endswith("Z") and payload["data"]["created_at"].endswith("Z")
    [row] = deliveries(id=created[0])
    assert request.headers["webhook-id"] == row.msg_id and row.msg_id.startswith("msg_")
    # The attempt's own time (the dispatcher reads the real clock): between readings taken around the call,
    # whole seconds on both sides, so no second boundary and no machine speed can put it outside.
    assert before <= int(request.headers["webhook-timestamp"]) <= after
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
    first = jobs.fan_out_events(events)
    again = jobs.fan_out_events(events)
    assert len(first) == 6 and again == []
    rows = deliveries()
    expected = {(e, p) for e in events for p in (subscribed.id, everything.id)}
    assert {(r.event_id, r.endpoint_id) for r in rows} == expected
    assert other_type.id not in {r.endpoint_id for r in rows}
    assert len({r.msg_id for r in rows}) == 6
    assert all(r.body == rows[0].body for r in rows if r.event_id == rows[0].event_id)


def test_many_endpoints_many_events_concurrent_fan_out_no_duplicates(settings: Settings, world: World, sink: Sink,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # 300 POSTs at once into this process's sink can take longer than the suite's 0.5 s read timeout on a busy
    # machine, and a timed-out attempt is rightly sent again: this test is about duplicate messages, not timeouts.
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_READ_TIMEOUT_SECONDS="10", KEYMETA_WEBHOOK_TOTAL_TIMEOUT_SECONDS="15")
    hooks = [register(sink.url(f"/many/{i}")) for i in range(12)]
    events = meta_events(world, 25)
    results: list[list[int]] = []

    def fan(ids: list[int]) -> None:
        results.append(jobs.fan_out_events(ids))

    threads = [threading.Thread(target=fan, args=(events[i::2] + events,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    created = [i for ids in results for i in ids]
    assert len(created) == len(set(created)) == 12 * 25
    assert len(deliveries()) == 12 * 25

    # Deliver everything twice over (duplicate messages): each message arrives exactly once.
    threads = [threading.Thread(target=jobs.deliver, args=(created,)) for _ in range(3)]
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
    created = jobs.fan_out_events(meta_events(world))
    report = jobs.deliver(created)
    assert report.outcomes == {"pending": 1}
    [row] = deliveries(id=created[0])
    delay = (row.next_attempt_at - row.updated_at).total_seconds() if row.next_attempt_at else -1
    assert 0.2 * 0.8 - 0.01 <= delay <= 0.2 * 1.2 + 0.01  # first step of the schedule, ±20 % jitter
    assert endpoint_row(endpoint.id).failing_since is not None
    scheduled = row.next_attempt_at

    [row] = run_until_settled(created)
    assert row.status == "succeeded" and row.attempts == 2
    first, second = sink.at("/flaky")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    for request in (first, second):
        Webhook(endpoint.secret).verify(request.body, request.headers)
    attempts = attempts_of(row.id)
    assert [(a.outcome, a.status_code, a.response_excerpt) for a in attempts] == \
        [("failure", 500, "boom"), ("success", 200, "ok")]
    assert attempts[1].started_at >= scheduled  # the retry waited for its time (by the code's own clock)
    assert endpoint_row(endpoint.id).failing_since is None


def test_exhausted_after_the_schedule_and_audited(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/down", Reply(503, b"down")))
    created = jobs.fan_out_events(meta_events(world))
    [row] = run_until_settled(created)
    assert row.status == "failed" and row.attempts == 4  # first try + 3 retries of "0.2,0.5,1"
    attempts = attempts_of(row.id)
    assert [a.status_code for a in attempts] == [503] * 4
    # Each retry waited for its step of the schedule (less the jitter), by the clock the code schedules with:
    # an attempt is claimed once next_attempt_at (recorded after the previous attempt started) has passed.
    least = [dt.timedelta(seconds=step * (1 - settings.webhook_retry_jitter)) - dt.timedelta(microseconds=1)
             for step in settings.webhook_retry_schedule]
    gaps = [later.started_at - earlier.started_at for earlier, later in itertools.pairwise(attempts)]
    assert len(gaps) == len(least) == 3
    assert all(gap >= step for gap, step in zip(gaps, least, strict=True)), (gaps, least)
    [event] = outbox_events(audit_events.DELIVERY_EXHAUSTED, row.id)
    assert event.payload["actor"] == "webhooks" and event.payload["detail"]["attempts"] == 4
    assert endpoint_row(row.endpoint_id).enabled  # exhausting one delivery does not disable the endpoint


def test_410_disables_the_endpoint_and_cancels_the_rest(settings: Settings, world: World, sink: Sink) -> None:
    endpoint = register(sink.on("/gone", Reply(410)))
    created = jobs.fan_out_events(meta_events(world, 3))
    jobs.deliver(created[:1])
    row = endpoint_row(endpoint.id)
    assert not row.enabled and row.disabled_reason == "endpoint answered 410 Gone"
    [event] = outbox_events(audit_events.ENDPOINT_DISABLED, endpoint.id)
    assert event.payload["actor"] == "webhooks"
    jobs.deliver(created[1:])
    assert [r.status for r in deliveries()] == ["failed", "cancelled", "cancelled"]
    assert len(sink.at("/gone")) == 1


def test_continuous_failure_for_the_window_disables(settings: Settings, world: World, sink: Sink) -> None:
    sick = register(sink.on("/sick", Reply(500)))
    ailing = register(sink.on("/ailing", Reply(500)))
    created = jobs.fan_out_events(meta_events(world))
    now = max(r.next_attempt_at for r in deliveries() if r.next_attempt_at)  # a fixed clock: both are due
    window = dt.timedelta(seconds=settings.webhook_disable_after_seconds)
    with unit_of_work() as session:  # failing since just before, and just inside, the 5-day window
        for endpoint, failing_for in ((sick, window + dt.timedelta(seconds=1)),
                                      (ailing, window - dt.timedelta(seconds=1))):
            session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id)
                            .values(failing_since=now - failing_for))
    recorded = {r.delivery_id: r.status for r in deliver_at(now, created, settings)}
    by_endpoint = {r.endpoint_id: recorded[r.id] for r in deliveries()}
    row = endpoint_row(sick.id)
    assert not row.enabled and (row.disabled_reason or "").startswith("failing continuously since")
    assert by_endpoint[sick.id] == "failed"
    assert len(outbox_events(audit_events.ENDPOINT_DISABLED, sick.id)) == 1
    assert endpoint_row(ailing.id).enabled and by_endpoint[ailing.id] == "pending"  # inside the window: retried
    assert outbox_events(audit_events.ENDPOINT_DISABLED, ailing.id) == []


def test_a_success_resets_the_failure_streak(settings: Settings, world: World, sink: Sink) -> None:
    endpoint = register(sink.on("/ok", Reply(200)))
    created = jobs.fan_out_events(meta_events(world))
    [row] = deliveries(id=created[0])
    now = row.next_attempt_at
    assert now is not None
    with unit_of_work() as session:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.id)
                        .values(failing_since=now - dt.timedelta(days=4)))
    assert [r.status for r in deliver_at(now, created, settings)] == ["succeeded"]
    assert endpoint_row(endpoint.id).failing_since is None


def test_retry_after_is_honoured(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/busy", Reply(429, headers={"Retry-After": "2"}), Reply(200)))
    created = jobs.fan_out_events(meta_events(world))
    jobs.deliver(created)
    [row] = deliveries()
    assert row.next_attempt_at is not None
    assert 1.9 <= (row.next_attempt_at - row.updated_at).total_seconds() <= 2.1  # not the 0.2 s of the schedule


@pytest.mark.parametrize(("reply", "kind"), [
    (Reply(302, b"", headers={"Location": "/elsewhere"}), "redirect"),
    # Answers after 3 s, well past the 0.5 s read timeout (and the 1.5 s total cap).
    (Reply(delay=3), "read timeout"),
    # A byte every 5 ms for ~50 s: each read is quick, so only the 1.5 s total cap can end the attempt.
    (Reply(drip=0.005), "total time cap"),
])
def test_failures_are_recorded_attempts(settings: Settings, world: World, sink: Sink, reply: Reply,
                                        kind: str) -> None:
    register(sink.on("/bad", reply))
    created = jobs.fan_out_events(meta_events(world))
    jobs.deliver(created)
    [attempt] = attempts_of(created[0])
    assert attempt.outcome == "failure"
    if kind == "redirect":
        assert attempt.status_code == 302
        assert attempt.error == "redirect not followed (Location: /elsewhere)"
    elif kind == "read timeout":
        # Cut by the per-read timeout while the sink still held its answer: no status line ever arrived,
        # and it was not the total cap (that one is named as such), after the configured read timeout (as
        # measured by the attempt's own clock).
        assert attempt.status_code is None and (attempt.error or "").startswith("read timeout")
        assert attempt.duration_ms >= settings.webhook_read_timeout_seconds * 1000 - 20
    else:
        # Cut by the configured total cap (the code names it only when its deadline has passed) while the
        # status line was still dripping in; had the cap not cut it, the drip would have ended in a
        # protocol error or a read timeout instead.
        assert attempt.status_code is None
        assert attempt.error == \
            f"total time cap of the attempt exceeded ({settings.webhook_total_timeout_seconds:g} s)"
        assert attempt.duration_ms >= settings.webhook_total_timeout_seconds * 1000 - 20
    assert deliveries()[0].status == "pending"
    assert not sink.at("/elsewhere")


def test_connection_refused_is_a_recorded_failure(settings: Settings, world: World) -> None:
    register(f"http://127.0.0.1:{closed_port()}/hook")
    created = jobs.fan_out_events(meta_events(world))
    jobs.deliver(created)
    [attempt] = attempts_of(created[0])
    assert attempt.outcome == "failure" and attempt.status_code is None
    assert (attempt.error or "").startswith("connection failed")


def test_huge_and_non_utf8_bodies_are_capped_and_stored(settings: Settings, world: World, sink: Sink,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    register(sink.on("/huge", Reply(200, stream_bytes=50 * 1024 * 1024)))
    register(sink.on("/binary", Reply(500, b"\xff\xfe\x00\x80bad\x00")))
    created = jobs.fan_out_events(meta_events(world))
    # Every connection an attempt makes is opened by transport._open: count what is read from each.
    read_sizes: list[int] = []
    opened = transport._open

    async def counting_open(vetted: ssrf.Vetted, limits: transport.SendLimits) -> httpcore.AsyncNetworkStream:
        stream = await opened(vetted, limits)
        read = stream.read

        async def counting_read(max_bytes: int, timeout: float | None = None) -> bytes:
            data = await read(max_bytes, timeout)
            read_sizes.append(len(data))
            return data

        monkeypatch.setattr(stream, "read", counting_read)
        return stream

    monkeypatch.setattr(transport, "_open", counting_open)
    jobs.deliver(created)
    # The excerpt plus at most a couple of 64 KiB socket reads (headers, the second, small response), never
    # the 50 MiB the sink would send.
    assert 0 < sum(read_sizes) <= settings.webhook_response_excerpt_bytes + 3 * 64 * 1024, sum(read_sizes)
    huge, binary = (attempts_of(i)[0] for i in created)
    assert huge.outcome == "success" and huge.response_truncated
    assert huge.response_excerpt == "x" * settings.webhook_response_excerpt_bytes
    assert binary.outcome == "failure" and not binary.response_truncated
    assert binary.response_excerpt is not None and "\x00" not in binary.response_excerpt
    assert binary.response_excerpt.endswith("bad\ufffd") and "\ufffd" in binary.response_excerpt[:3]


def test_send_time_ssrf_refusal(settings: Settings, world: World, sink: Sink,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    register(sink.url("/hook", host="localhost"))
    created = jobs.fan_out_events(meta_events(world))
    reconfigure(monkeypatch, KEYMETA_WEBHOOK_ALLOWED_CIDRS="")  # loopback no longer allow-listed
    jobs.deliver(created)
    [attempt] = attempts_of(created[0])
    assert attempt.outcome == "failure" and (attempt.error or "").startswith("address refused")
    assert "loopback" in (attempt.error or "") and attempt.address is None
    assert sink.received == []


def test_dns_answer_is_pinned_host_header_kept(settings: Settings, world: World, sink: Sink,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    answers: dict[str, list[str]] = {"hooks.test": ["127.0.0.1"]}
    monkeypatch.setattr(ssrf, "resolve", lambda host, port, timeout: [ipaddress.ip_address(a) for a in answers[host]])
    register(f"http://hooks.test:{sink.port}/pinned")
    created = jobs.fan_out_events(meta_events(world, 2))
    jobs.deliver(created[:1])
    [request] = sink.at("/pinned")
    assert request.headers["host"] == f"hooks.test:{sink.port}"

    answers["hooks.test"] = ["10.1.2.3"]  # rebinding to an internal address: refused, nothing sent
    jobs.deliver(created[1:])
    [attempt] = attempts_of(created[1])
    assert "10.1.2.3 is private" in (attempt.error or "")
    assert len(sink.at("/pinned")) == 1


def test_lost_worker_lease_expires_and_the_delivery_is_retried(settings: Settings, world: World, sink: Sink,
                                                               master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    created = jobs.fan_out_events(meta_events(world))
    with unit_of_work() as session:  # a worker claims, then dies before recording
        [lost] = delivery.claim(session, created, delivery.ClaimTerms(master_key, lease_seconds=1.5))
    assert jobs.deliver(created).claimed == 0  # leased
    assert jobs.sweep_deliveries() == []  # rung at fan-out; the lease still runs
    [row] = run_until_settled(created)
    assert row.status == "succeeded" and row.attempts == 2
    assert [a.outcome for a in attempts_of(row.id)] == ["lost", "success"]
    # The dead worker's late result is not recorded over the new one.
    with unit_of_work() as session:
        from domain.webhooks.transport import SendResult

        recorded = delivery.record(session, lost, SendResult(utcnow(), 1, status_code=500),
                                   jobs.retry_policy(settings))
    assert recorded.status == "stale" and deliveries()[0].status == "succeeded"


def test_sweeper_rings_only_what_is_due_and_not_recently_rung(settings: Settings, world: World, sink: Sink,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    current = reconfigure(monkeypatch, KEYMETA_WEBHOOK_RETRY_SCHEDULE="1.5", KEYMETA_WEBHOOK_RETRY_JITTER="0",
                          KEYMETA_WEBHOOK_RERING_SECONDS="1.5")
    register(sink.on("/hook", Reply(500), Reply(200)))
    created = jobs.fan_out_events(meta_events(world))
    [row] = deliveries(id=created[0])
    now = row.next_attempt_at  # a fixed clock, from the fan-out's own
    assert now is not None
    step = dt.timedelta(seconds=1.5)
    tick = dt.timedelta(microseconds=1)

    def sweep(at: dt.datetime) -> list[int]:
        with unit_of_work() as session:
            return delivery.sweep_due(session, rering_seconds=current.webhook_rering_seconds,
                                      limit=current.webhook_sweep_batch, now=at)

    assert sweep(now) == []  # just rung by fan-out
    assert [r.status for r in deliver_at(now, created, current)] == ["pending"]  # fails; the retry is due in 1.5 s
    assert deliver_at(now + step - tick, created, current) == []  # an early duplicate message does nothing
    assert sweep(now + step - tick) == []  # not due yet
    assert sweep(now + step) == created
    assert sweep(now + 2 * step - tick) == []  # rung: not again before the re-ring interval
    assert sweep(now + 2 * step) == created  # message lost? re-rung
    assert len(sink.at("/hook")) == 1


def test_body_is_stable_across_attempts(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/flaky", Reply(500), Reply(200)))
    run_until_settled(jobs.fan_out_events(meta_events(world)))
    first, second = sink.at("/flaky")
    assert first.body == second.body
    assert json.loads(first.body)["type"] == "license_key_meta.created"


def test_an_endpoint_answering_again_gets_its_waiting_retries_at_once(settings: Settings, world: World,
                                                                      sink: Sink) -> None:
    endpoint = register(sink.on("/back", Reply(500), Reply(500), Reply(200)))
    failed = jobs.fan_out_events(meta_events(world, count=2))
    assert jobs.deliver(failed).outcomes == {"pending": 2}
    later = utcnow() + dt.timedelta(hours=1)
    with unit_of_work() as session:  # both wait for a retry far off, as after a long outage
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(failed)).values(next_attempt_at=later))
    assert endpoint_row(endpoint.id).failing_since is not None

    fresh = jobs.fan_out_events(meta_events(world))
    assert jobs.deliver(fresh).outcomes == {"succeeded": 1}

    def brought_forward() -> bool:
        waiting = [row for row in deliveries() if row.id in failed]
        return all(row.next_attempt_at is not None and row.next_attempt_at < later for row in waiting)
    wait_until(brought_forward, message="the waiting retries to be brought forward")
    assert {row.status for row in deliveries() if row.id in failed} == {"pending"}
    [row] = run_until_settled(failed[:1])
    assert row.status == "succeeded"


def test_a_success_of_an_endpoint_that_was_not_failing_moves_no_retry(settings: Settings, world: World,
                                                                     sink: Sink) -> None:
    failing = register(sink.on("/still-down", Reply(500)))
    healthy = register(sink.on("/fine", Reply(200)), event_types=["license_key_meta.created"])
    jobs.deliver(jobs.fan_out_events(meta_events(world)))
    later = utcnow() + dt.timedelta(hours=1)
    [waiting] = [row for row in deliveries() if row.endpoint_id == failing.id]
    with unit_of_work() as session:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == waiting.id)
                        .values(next_attempt_at=later))
    report = jobs.deliver(jobs.fan_out_events(meta_events(world)))
    assert report.outcomes == {"succeeded": 1, "pending": 1}  # the healthy endpoint's, the failing one's
    assert [row.next_attempt_at for row in deliveries() if row.id == waiting.id] == [later]
    assert [row.endpoint_id for row in deliveries(status="succeeded") if row.endpoint_id == healthy.id]
