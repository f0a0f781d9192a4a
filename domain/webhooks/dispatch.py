"""Where a worker process's webhook attempts run: one asyncio loop on its own thread, fair between endpoints.

Task threads hand claimed deliveries to the loop, which hands each result on as it finishes (to the recorder:
the loop never touches the database). Connections stay open between tasks (``transport.Connections``). Each
endpoint gets at most its ``max_in_flight`` attempts at once and, when it has a rate limit, starts at most that
many per second; the whole process at most ``in_flight`` attempts. An attempt waiting for its endpoint's
turn holds no process slot, so a slow endpoint only ever uses its own share and never delays the others.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

from domain.platform.models import utcnow
from domain.platform.per_process import PerProcess
from domain.webhooks import transport
from domain.webhooks.delivery import Claim, headers_for
from domain.webhooks.models import MAX_IN_FLIGHT_LIMIT
from domain.webhooks.transport import SendLimits, SendResult

PROCESS_IN_FLIGHT = MAX_IN_FLIGHT_LIMIT  # attempts in flight at once in one worker process, all endpoints together
PRUNE_SECONDS = 10.0  # how often idle connections are checked for expiry
T = TypeVar("T")


class Throttle:
    """At most ``rate`` starts per second, spaced evenly (pure: the caller sleeps for what ``reserve`` says)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._next = clock()

    def reserve(self) -> float:
        """Seconds to wait before the next start may go out (0 when it may go now)."""
        now = self._clock()
        start = max(now, self._next)
        self._next = start + 1.0 / self.rate
        return start - now


@dataclass(frozen=True)
class Share:
    """An endpoint's share of the worker: attempts at once, and starts per second (None: unlimited)."""

    max_in_flight: int
    rate_limit: float | None


class _Gate:
    def __init__(self, share: Share, clock: Callable[[], float]) -> None:
        self.share = share
        self.slots = asyncio.Semaphore(share.max_in_flight)
        self.throttle = Throttle(share.rate_limit, clock) if share.rate_limit else None


class Dispatcher:
    """The loop, its connections and the per-endpoint gates of one process (see ``dispatcher()``)."""

    def __init__(self, in_flight: int = PROCESS_IN_FLIGHT, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.connections = transport.Connections()
        self._slots = asyncio.Semaphore(in_flight)
        self._gates: dict[int, _Gate] = {}  # by endpoint id; used on the loop's thread only
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="webhook-io", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_later(PRUNE_SECONDS, self._prune)
        self._loop.run_forever()

    def _prune(self) -> None:
        self._loop.create_task(self.connections.prune())
        self._loop.call_later(PRUNE_SECONDS, self._prune)

    def close(self) -> None:
        """Close the kept connections and stop the loop (from any thread but the loop's); for a dispatcher made
        apart from the process's own, which lives as long as its process."""
        self.run(self.connections.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def run(self, work: Coroutine[object, object, T]) -> T:
        """Run a coroutine on the loop and wait for its result (from any thread but the loop's)."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _gate(self, endpoint_id: int, share: Share) -> _Gate:
        gate = self._gates.get(endpoint_id)
        if gate is None or gate.share != share:  # new, or its limits were changed: attempts already in keep theirs
            gate = self._gates[endpoint_id] = _Gate(share, self._clock)
        return gate

    async def _attempt(self, claim: Claim, limits: SendLimits) -> SendResult:
        gate = self._gate(claim.endpoint_id, Share(claim.max_in_flight, claim.rate_limit))
        async with gate.slots:
            if gate.throttle is not None:
                wait = gate.throttle.reserve()
                if wait > 0:
                    await asyncio.sleep(wait)
            async with self._slots:
                return await attempt(self.connections, claim, limits)

    def submit(self, claims: Sequence[Claim], limits: SendLimits,
               on_done: Callable[[Claim, SendResult], None]) -> None:
        """Start every claim's attempt now; ``on_done(claim, result)`` runs on the loop's thread as each ends."""
        def report_to(claim: Claim) -> Callable[[Future[SendResult]], None]:
            def report(done: Future[SendResult]) -> None:
                on_done(claim, _result_of(done))
            return report

        for claim in claims:
            asyncio.run_coroutine_threadsafe(self._attempt(claim, limits), self._loop).add_done_callback(
                report_to(claim))

    def send(self, claims: Sequence[Claim], limits: SendLimits) -> list[tuple[Claim, SendResult]]:
        """Every claim's attempt, all at once, nothing recorded: (claim, result) in finishing order."""
        finished: queue.SimpleQueue[tuple[Claim, SendResult]] = queue.SimpleQueue()
        self.submit(claims, limits, lambda claim, result: finished.put((claim, result)))
        return [finished.get() for _ in claims]


def _result_of(done: Future[SendResult]) -> SendResult:
    try:
        return done.result()
    except BaseException as exc:  # noqa: BLE001 - attempt() never raises; a cancelled loop still yields a result
        return SendResult(started_at=utcnow(), duration_ms=0, error=f"attempt not made: {type(exc).__name__}")


async def attempt(connections: transport.Connections, claim: Claim, limits: SendLimits) -> SendResult:
    """The HTTP attempt of one claim, signed at the moment it goes out. Never raises."""
    if claim.error is not None:
        return SendResult(started_at=utcnow(), duration_ms=0, error=claim.error)
    try:
        headers = headers_for(claim, int(time.time()))
    except ValueError as exc:  # e.g. a stored secret that is not a valid whsec_ secret
        return SendResult(started_at=utcnow(), duration_ms=0, error=f"cannot sign: {exc}")
    return await transport.post(connections, claim.url, headers, claim.body, limits)


_dispatcher = PerProcess(Dispatcher)


def dispatcher() -> Dispatcher:
    """This process's dispatcher, started on first use."""
    return _dispatcher.get()
