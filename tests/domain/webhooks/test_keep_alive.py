"""Connections kept alive per vetted destination, against a real HTTP sink on 127.0.0.1: reused between
batches, retried once when a reused one turns out closed, never reused when the consumer closes them, and
neither sockets nor memory left behind after 10,000 deliveries."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import delivery, dispatch, jobs, ssrf, transport
from domain.webhooks.models import WebhookAttempt
from domain.webhooks.signatures import generate_secret, generate_signing_key
from tests.conftest import World
from tests.domain.webhooks.sink_process import SCRIPTS
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import deliveries, meta_events, register, wait_until

ROOT = Path(__file__).resolve().parents[3]


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


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


@pytest.fixture
def sink_process() -> Iterator[int]:
    """The sink in a child process (its port): this process's sockets and memory are the sender's alone."""
    child = subprocess.Popen([sys.executable, "-m", "tests.domain.webhooks.sink_process"], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        yield int(child.stdout.readline())
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


MANY = 10_000
BATCH = 500  # deliveries handed to the loop at once, as one worker task hands over its claims
RSS_GROWTH_LIMIT = 8 * 1024 * 1024  # measured growth is about 1 MiB; keeping every attempt would exceed this
LIMITS = transport.SendLimits(connect_timeout=5.0, read_timeout=10.0, total_timeout=20.0, excerpt_bytes=2048,
                              allowed=ssrf.parse_allowed(["127.0.0.0/8"]))
SECRETS = {"v1": generate_secret(), "v1a": generate_signing_key()}


def claims(port: int, first: int, count: int) -> list[delivery.Claim]:
    """Signed attempts spread over every way a consumer ends a connection (one endpoint per path), half of the
    endpoints on each signature scheme."""
    paths = sorted(SCRIPTS)
    made = []
    for number in range(first, first + count):
        endpoint = number % len(paths)
        made.append(delivery.Claim(
            delivery_id=number, endpoint_id=endpoint, attempt_no=1,
            url=f"http://127.0.0.1:{port}{paths[endpoint]}", msg_id=f"msg_{number:08d}",
            body=b'{"type":"webhook.test","timestamp":"2026-11-28T12:00:00Z","data":{"n":%d}}' % number,
            secrets=[SECRETS["v1a" if endpoint % 2 else "v1"]], max_in_flight=16))
    return made


def outcome(result: transport.SendResult) -> str:
    if result.ok:
        return "truncated" if result.truncated else "ok"
    return (result.error or "").split(":", 1)[0]


def send_all(sender: dispatch.Dispatcher, port: int, first: int, count: int) -> Counter[tuple[int, str]]:
    seen: Counter[tuple[int, str]] = Counter()
    for start in range(first, first + count, BATCH):
        for claim, result in sender.send(claims(port, start, min(BATCH, first + count - start)), LIMITS):
            seen[claim.endpoint_id, outcome(result)] += 1
    return seen


def test_sockets_and_memory_return_to_baseline_after_10_000_deliveries(sink_process: int) -> None:
    """The real dispatch loop and transport against a real consumer process on 127.0.0.1, claims made in memory
    (the database is not what is counted here)."""
    before_sockets = open_sockets()
    sender = dispatch.Dispatcher()
    try:
        send_all(sender, sink_process, 0, 2 * BATCH)  # warm-up: connection pools, allocator arenas, code paths
        gc.collect()
        warm_rss, warm_sockets = rss_bytes(), open_sockets() - sender.connections.idle_count()
        started = time.monotonic()
        seen = send_all(sender, sink_process, 2 * BATCH, MANY)
        elapsed = time.monotonic() - started
        gc.collect()
        rss_growth = rss_bytes() - warm_rss
        idle = sender.connections.idle_count()
        busy_sockets = open_sockets() - idle
    finally:
        sender.close()
    paths = sorted(SCRIPTS)
    per_path = MANY // len(paths)
    assert seen == Counter({(paths.index("/ok"), "ok"): per_path, (paths.index("/close"), "ok"): per_path,
                            (paths.index("/huge"), "truncated"): per_path,
                            (paths.index("/drop"), "invalid HTTP response"): per_path}), seen
    # Only kept-alive connections stay open: at most one per attempt that may run at once.
    assert idle <= 16 * len(paths)
    assert busy_sockets <= warm_sockets
    wait_until(lambda: open_sockets() <= before_sockets, message="every socket of the closed sender to close")
    assert rss_growth < RSS_GROWTH_LIMIT, f"RSS grew {rss_growth / 2**20:.1f} MiB"
    print(f"\n{MANY} deliveries in {elapsed:.1f} s; sockets {before_sockets} before, {open_sockets()} after "
          f"(kept alive at the end: {idle}); RSS +{rss_growth / 2**20:.1f} MiB after the warm-up")
