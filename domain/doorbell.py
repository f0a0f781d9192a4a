"""Ring the doorbell off the response path: a bounded in-memory queue drained by one thread.

``ring()`` never blocks and never raises. A full queue or a dead broker only delays work: the rows are
already committed and the sweeper re-rings whatever was not consumed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from domain.logs import get_logger

log = get_logger("keymeta.doorbell")

Send = Callable[[str, list[int], "str | None"], None]
MAX_IDS_PER_MESSAGE = 200


class QueuedDoorbell:
    def __init__(self, send: Send, max_pending: int = 10_000, linger_seconds: float = 0.02) -> None:
        self._send = send
        # Publishing costs far more than queueing: wait briefly after the first bell so a busy API sends
        # one message per task per ~20 ms instead of one per request.
        self._linger = linger_seconds
        self._pending: queue.Queue[tuple[str, int, str | None] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="doorbell", daemon=True)
        self._thread.start()
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def ring(self, task_name: str, ids: list[int], request_id: str | None = None) -> None:
        for item_id in ids:
            try:
                self._pending.put_nowait((task_name, item_id, request_id))
            except queue.Full:
                self.dropped += 1  # the sweeper will re-ring it

    def close(self, timeout: float = 2.0) -> None:
        try:
            self._pending.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self._linger
            while len(batch) < 1000:  # coalesce a burst into few messages
                try:
                    item = self._pending.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._publish(batch)
                    return
                batch.append(item)
            self._publish(batch)

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
