"""Connections kept alive per vetted destination, against a real HTTP sink on 127.0.0.1: reused between
batches, retried once when a reused one turns out closed, never reused when the consumer closes them, and
no socket left behind after many deliveries."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import select

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import dispatch, jobs, transport
from domain.webhooks.models import WebhookAttempt
from tests.conftest import World
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import deliveries, meta_events, register, wait_until


def attempts_of(delivery_id: int) -> list[WebhookAttempt]:
    with unit_of_work() as session:
        return list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
                                    .order_by(WebhookAttempt.attempt_no)))


def patient(settings: Settings) -> Settings:
    """The suite's short timeouts, made generous: these tests are about connections, and a loaded machine's sink
    may take longer than half a second to answer."""
    return settings.model_copy(update={"webhook_read_timeout_seconds": 10.0, "webhook_total_timeout_seconds": 20.0})


def ports(sink: Sink, path: str) -> set[int]:
    return {r.client_port for r in sink.at(path)}


def test_connections_are_reused_within_and_between_batches(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/hook", Reply(200)))
    created = jobs.fan_out_events(meta_events(world, 30))
    assert jobs.deliver(created[:20], patient(settings)).outcomes == {"succeeded": 20}
    first = ports(sink, "/hook")
    assert 1 <= len(first) <= 8  # at most the endpoint's max_in_flight connections for 20 POSTs
    assert jobs.deliver(created[20:], patient(settings)).outcomes == {"succeeded": 10}
    assert ports(sink, "/hook") <= first  # the next batch (the next task) went over the same connections


def test_a_reused_connection_closed_by_the_consumer_is_retried_once_on_a_new_one(
        settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/hook", Reply(200), Reply(hang_up=True), Reply(200)))
    first, second = jobs.fan_out_events(meta_events(world, 2))
    jobs.deliver([first], patient(settings))
    jobs.deliver([second], patient(settings))  # reuses the first one's connection, which the consumer drops: sent again
    one, dropped, again = sink.at("/hook")
    assert dropped.headers["webhook-id"] == again.headers["webhook-id"] != one.headers["webhook-id"]
    assert dropped.client_port == one.client_port != again.client_port
    rows = deliveries()
    assert [(r.status, r.attempts) for r in rows] == [("succeeded", 1), ("succeeded", 1)]
    assert [(a.outcome, a.status_code) for a in attempts_of(second)] == [("success", 200)]


def test_a_new_connection_closed_without_an_answer_is_a_failed_attempt(settings: Settings, world: World,
                                                                       sink: Sink) -> None:
    register(sink.on("/hook", Reply(hang_up=True)))
    [created] = jobs.fan_out_events(meta_events(world))
    assert jobs.deliver([created], patient(settings)).outcomes == {"pending": 1}
    [attempt] = attempts_of(created)
    assert attempt.outcome == "failure" and attempt.status_code is None
    assert (attempt.error or "").startswith("invalid HTTP response")
    assert len(sink.at("/hook")) == 1  # not retried within the attempt: the retry policy decides


def test_a_consumer_that_closes_every_connection_gets_a_new_one_each_time(settings: Settings, world: World,
                                                                          sink: Sink) -> None:
    register(sink.on("/close", Reply(200, close=True)))
    created = jobs.fan_out_events(meta_events(world, 3))
    for delivery_id in created:
        assert jobs.deliver([delivery_id], patient(settings)).outcomes == {"succeeded": 1}
    assert len(ports(sink, "/close")) == 3


def test_an_http_1_0_consumer_gets_a_new_connection_each_time(settings: Settings, world: World,
                                                             sink: Sink) -> None:
    register(sink.on("/old", Reply(200, http10=True)))
    created = jobs.fan_out_events(meta_events(world, 3))
    for delivery_id in created:
        assert jobs.deliver([delivery_id], patient(settings)).outcomes == {"succeeded": 1}
    assert len(ports(sink, "/old")) == 3


def open_sockets() -> int:
    fds = Path(f"/proc/{os.getpid()}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while listing
            count += os.readlink(fd).startswith("socket:")
    return count


def test_no_socket_is_left_behind_after_many_deliveries(settings: Settings, world: World, sink: Sink) -> None:
    register(sink.on("/ok", Reply(200)))
    register(sink.on("/close", Reply(200, close=True)))
    register(sink.on("/drop", Reply(hang_up=True)))
    register(sink.on("/huge", Reply(200, stream_bytes=1024 * 1024)))
    warm = jobs.fan_out_events(meta_events(world, 5))
    jobs.deliver(warm, patient(settings))
    before = open_sockets()
    created = jobs.fan_out_events(meta_events(world, 150))
    for start in range(0, len(created), 200):
        jobs.deliver(created[start:start + 200], patient(settings))
    paths = ("/ok", "/close", "/drop", "/huge")
    # One attempt each (a /drop attempt that met a reused connection was sent once more, on a new one).
    assert {p: len({r.headers["webhook-id"] for r in sink.at(p)}) for p in paths} == dict.fromkeys(paths, 155)
    idle = dispatch.dispatcher().run(_idle_count(sink.port))
    # Only kept-alive connections stay open (at most the cap per destination; the sink's own sockets are in this
    # process too: one per open connection), whatever the number of deliveries and however each consumer ended
    # its connections.
    assert idle <= transport.MAX_IDLE_PER_DESTINATION
    wait_until(lambda: open_sockets() <= before + 2 * idle, message="the sink's side of closed connections to close")


async def _idle_count(port: int) -> int:
    return dispatch.dispatcher().connections.idle_count(port)
