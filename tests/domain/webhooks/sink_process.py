"""The webhook sink of tests/webhook_sink.py in a process of its own, for tests that count the sending process's
sockets and memory: the sink's own sockets, threads and records stay out of the figures.

``python -m tests.domain.webhooks.sink_process`` prints its port, then serves ``SCRIPTS`` until stdin closes.
"""

from __future__ import annotations

import sys

from tests.webhook_sink import Reply, Sink

# Every way a consumer ends a connection: kept alive, "Connection: close", hung up without an answer, and a body
# larger than the excerpt (the sender stops reading and closes).
SCRIPTS = {
    "/ok": Reply(200),
    "/close": Reply(200, close=True),
    "/drop": Reply(hang_up=True),
    "/huge": Reply(200, stream_bytes=256 * 1024),
}


def main() -> None:
    sink = Sink()
    for path, reply in SCRIPTS.items():
        sink.on(path, reply)
    print(sink.port, flush=True)
    sys.stdin.read()
    sink.close()


if __name__ == "__main__":
    main()
