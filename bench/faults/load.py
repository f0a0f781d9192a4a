"""The steady load under a fault: creates at a fixed rate, open loop, each one answered or failed within a timeout.

Every request is a ``Sample``: when it was due (wall-clock seconds, the clock the database and the sink also
stamp with), how long the client waited, and its outcome: the API's answer code (``453``, ``5030`` …) or what
happened instead (``refused``, ``reset``, ``timeout``). A request is due at t0 + i/rate whatever the ones before
it are doing, so a stalled server shows as waits, never as fewer requests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.loadgen import HttpError, KeepAlivePool

CREATE_PATH = "/api/v1/create-license-key-meta"
REFUSED = "refused"  # nothing listens: the API process is down
RESET = "reset"  # the connection ended before an answer: the process died under the request
TIMEOUT = "timeout"  # no answer within the client's timeout: a hanging request
CONNECTION_SLOTS = 1024  # enough for every request of a stalled stretch to be in flight at once


@dataclass(frozen=True)
class Sample:
    due: float  # wall-clock seconds
    waited: float  # seconds from due to answer or failure
    outcome: str  # the API's answer code, or REFUSED / RESET / TIMEOUT / "error:<type>"
    http_status: int | None = None  # None: no HTTP answer


def answer_code(status: int, payload: bytes) -> str:
    """The code of a signed envelope, of a plain error answer (``{"error": …, "code": …}``), else ``http-<status>``."""
    try:
        body = json.loads(payload)
    except ValueError:
        return f"http-{status}"
    if isinstance(body, dict):
        inner = body.get("response")
        code = inner.get("code") if isinstance(inner, dict) else body.get("code")
        if code is not None:
            return str(code)
    return f"http-{status}"


def outcome_of_failure(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)):
        return RESET
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    return f"error:{type(exc).__name__}"


@dataclass
class SteadyLoad:
    """``form(i)``: the form of request i. Runs on a thread of its own from ``start()`` until ``stop()`` so the
    caller can inject faults meanwhile; ``stop()`` returns once every request sent is answered or failed."""

    base_url: str
    form: Callable[[int], dict[str, str]]
    rate: float
    timeout: float
    samples: list[Sample] = field(default_factory=list)
    started_at: float = 0.0
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.started_at = time.time()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True, name="steady-load")
        self._thread.start()

    def stop(self) -> list[Sample]:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        return sorted(self.samples, key=lambda sample: sample.due)

    async def _run(self) -> None:
        pool = KeepAlivePool(self.base_url, max_connections=CONNECTION_SLOTS)
        loop = asyncio.get_running_loop()
        start = loop.time()
        wall_offset = self.started_at - start

        async def one(i: int, due: float) -> None:
            status: int | None = None
            try:
                answered, payload = await asyncio.wait_for(pool.post_form_raw(CREATE_PATH, self.form(i)),
                                                           self.timeout)
                status, outcome = answered, answer_code(answered, payload)
            except (OSError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
                outcome = outcome_of_failure(exc)
            self.samples.append(Sample(due=due + wall_offset, waited=loop.time() - due, outcome=outcome,
                                       http_status=status))

        tasks = []
        try:
            i = 0
            while not self._stopping.is_set():
                due = start + i / self.rate
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                tasks.append(asyncio.create_task(one(i, due)))
                i += 1
            await asyncio.gather(*tasks)
        finally:
            await pool.close()
