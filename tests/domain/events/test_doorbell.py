from __future__ import annotations

import threading

from domain.events.doorbell import QueuedDoorbell
from tests.processes import wait_until


def test_ring_never_blocks_or_raises_when_the_broker_hangs_or_fails() -> None:
    release = threading.Event()
    calls: list[tuple[str, list[int]]] = []
    in_send = threading.Event()

    def hanging_send(task: str, ids: list[int], request_id: str | None) -> None:
        calls.append((task, ids))
        in_send.set()
        release.wait()  # held until the test lets go: the broker hangs for as long as ringing takes
        in_send.clear()
        raise ConnectionError("broker down")

    bell = QueuedDoorbell(hanging_send, max_pending=10, linger_seconds=0)
    try:
        bell.ring("audit.record", [1], "req")
        wait_until(in_send.is_set, timeout=5, message="the publisher to be stuck in a hanging send")

        def ring_a_hundred() -> None:
            for i in range(100):
                bell.ring("audit.record", [i + 2], "req")

        # Ring from another thread: if ring() waited for the publisher, that thread could only end once the
        # send is released, which happens only after the checks below.
        ringer = threading.Thread(target=ring_a_hundred, daemon=True)
        ringer.start()
        ringer.join(10)  # a bound on a hang, not on speed: a non-blocking ring() ends at once
        assert not ringer.is_alive(), "ring() blocked on the hanging send"
        assert in_send.is_set() and calls == [("audit.record", [1])]  # the send was still hanging throughout
        assert bell.dropped == 90  # the queue holds 10; the sweeper covers what was dropped
    finally:
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
