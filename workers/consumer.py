"""The worker's consumer, reconnecting promptly to a broker that went away.

Celery's consumer reconnects with kombu's default back-off (2 s, then 2 s longer each time, up to 30 s), so a
broker that comes back after 30 s may wait another 12 s for its workers, and every follow-up of the outage
(audit records, webhooks) with it. Here a lost broker is tried again every ``RECONNECT_MAX_SECONDS`` at most: a
connection attempt to a broker that is down is refused at once, so the cost is a line in the log.
"""

from __future__ import annotations

import functools

from celery.worker.consumer import Consumer
from kombu import Connection

RECONNECT_MAX_SECONDS = 2.0
RECONNECT = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": RECONNECT_MAX_SECONDS}


class PromptConsumer(Consumer):
    def ensure_connected(self, conn: Connection) -> Connection:
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT)  # type: ignore[method-assign]
        return super().ensure_connected(conn)
