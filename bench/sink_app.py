"""A webhook sink for the pipeline bench: answers 200 and appends "<unix time> <meta_id> <webhook-id>" lines
to the file named by ``KEYMETA_BENCH_SINK_FILE`` (one process, so appends never interleave).

``POST /_status`` with a status code as its body makes every later answer that status (the fault bench's
failing consumer); a line is appended only for a 2xx answer, a delivery the consumer accepted."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any


def create_app() -> Callable[..., Any]:
    out = open(os.environ["KEYMETA_BENCH_SINK_FILE"], "a", buffering=1)  # noqa: SIM115 - lives with the app
    answer = {"status": 200}

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "POST" and scope["path"] == "/_status":
            answer["status"] = int(body)
        elif scope["method"] == "POST" and 200 <= answer["status"] < 300:
            headers = dict(scope["headers"])
            try:
                meta_id = json.loads(body)["data"]["meta_id"]
            except (ValueError, KeyError, TypeError):
                meta_id = -1
            out.write(f"{time.time():.6f} {meta_id} {headers.get(b'webhook-id', b'-').decode()}\n")
        await send({"type": "http.response.start", "status": answer["status"], "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app
