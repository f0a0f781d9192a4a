from __future__ import annotations

import threading
import time

from domain.events.doorbell import QueuedDoorbell
from tests.processes import wait_until


def test_ring_never_blocks_or_raises_when_the_broker_hangs_or_fails() -> None:
    release = threading.Event()
    calls: list[tuple[str, list[int]]] = []

    def hanging_send(task: str, ids: list[int], request_id: str | None) -> None:
        calls.append((task, ids))
        release.wait(5)
        raise ConnectionError("broker down")

    bell = QueuedDoorbell(hanging_send, max_pending=10, linger_seconds=0)
    bell.ring("audit.record", [1], "req")
    wait_until(lambda: calls, timeout=5, message="the publisher to be stuck in a hanging send")
    started = time.monotonic()
    for i in range(100):
        bell.ring("audit.record", [i + 2], "req")
    assert time.monotonic() - started < 1.0  # generous: ringing only queues in memory
    assert bell.dropped == 90  # the queue holds 10; the sweeper covers what was dropped
    release.set()
    bell.close()
    assert bell.failed >= 1


def test_a_burst_is_coalesced_into_few_messages() -> None:
    sent: list[list[int]] = []
    gate = threading.Event()

    def send(task: str, ids: list[int], request_id: str | None) -> None:
        gate.wait(5)
        sent.append(ids)

    bell = QueuedDoorbell(send)
    bell.ring("audit.record", [1])
    for i in range(2, 302):
        bell.ring("audit.record", [i])
    gate.set()
    bell.close()
    assert sorted(i for ids in sent for i in ids) == list(range(1, 302))
    assert len(sent) <= 3
