"""Ring the doorbell off the response path: a bounded in-memory buffer drained by one thread.

``ring()`` never blocks and never raises. A full buffer or a dead broker only delays work: the rows are
already committed and the sweeper re-rings whatever was not consumed.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from domain.platform.logs import get_logger

log = get_logger("keymeta.doorbell")

Send = Callable[[str, list[int], "str | None"], None]
MAX_IDS_PER_MESSAGE = 200


class QueuedDoorbell:
    def __init__(self, send: Send, max_pending: int = 10_000, linger_seconds: float = 0.05) -> None:
        self._send = send
        self._max_pending = max_pending
        # Publishing costs far more than queueing: after the first bell the thread sleeps briefly and then
        # sends one message per task for everything that arrived meanwhile (no wake-up per bell).
        self._linger = linger_seconds
        self._pending: deque[tuple[str, int, str | None]] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="doorbell", daemon=True)
        self._thread.start()
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def ring(self, task_name: str, ids: list[int], request_id: str | None = None) -> None:
        for item_id in ids:
            if len(self._pending) >= self._max_pending:
                self.dropped += 1  # the sweeper will re-ring it
                continue
            self._pending.append((task_name, item_id, request_id))  # deque.append is thread-safe
        if not self._wake.is_set():
            self._wake.set()

    def close(self, timeout: float = 2.0) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing:
                time.sleep(self._linger)  # the flag stays set meanwhile, so ring() skips Event.set()
            self._wake.clear()  # before draining: a bell rung after this point wakes the next round
            batch = []
            while self._pending:
                batch.append(self._pending.popleft())
            if batch:
                self._publish(batch)
            if self._closing and not self._pending:
                return

    def _publish(self, batch: list[tuple[str, int, str | None]]) -> None:
        grouped: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        for task_name, item_id, request_id in batch:
            grouped[(task_name, request_id if len(batch) == 1 else None)].append(item_id)
        for (task_name, request_id), ids in grouped.items():
            for start in range(0, len(ids), MAX_IDS_PER_MESSAGE):
                chunk = ids[start:start + MAX_IDS_PER_MESSAGE]
                try:
                    self._send(task_name, chunk, request_id)
                    self.sent += len(chunk)
                except Exception as exc:  # noqa: BLE001 - a broker problem must never surface here
                    self.failed += len(chunk)
                    log.warning("doorbell.publish_failed", task=task_name, ids=len(chunk), error=str(exc),
                                hint="the sweeper re-rings these events once the broker is back")
