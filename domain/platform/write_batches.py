"""Concurrent writes of one kind (creates, idempotency reservations and records) share round trips: while
``max_in_flight`` batches are running, new writes wait, and the next free slot takes every write that is waiting
(up to ``max_batch``) as one batch.

Nothing waits when there is room, so a lone request goes out at once; under load, batches form by themselves
and each row costs the database and this process a fraction of a statement of its own (docs/benchmarks.md).
A batch that fails is retried one write at a time, so one bad row cannot fail its neighbours; a failure that
would fail every write alike (``fails_all``: the database is unreachable) is handed to all of them at once
instead, so an outage costs one attempt per batch, not one per write.

Writes that one statement cannot apply twice (two updates of one row) name a ``conflict_key``: a batch takes at
most one write per key; the others stay waiting, in arrival order, for a later batch (which may run beside the
first: the database orders the two, as it orders concurrent requests).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class WriteBatcher(Generic[Item, Result]):
    def __init__(self, execute: Callable[[Sequence[Item]], Awaitable[list[Result]]], max_in_flight: int,
                 max_batch: int = 64, fails_all: Callable[[Exception], bool] = lambda exc: False,
                 conflict_key: Callable[[Item], Hashable] | None = None) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._execute = execute
        self._fails_all = fails_all
        self._conflict_key = conflict_key
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # statements sent (a retried batch counts each retry)
        self.items = 0

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start_batches()
        return await future

    def _start_batches(self) -> None:
        while self._waiting and len(self._running) < self._max_in_flight:
            batch = self._next_batch()
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _next_batch(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        if self._conflict_key is None:
            return [self._waiting.popleft() for _ in range(min(self._max_batch, len(self._waiting)))]
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        later: list[tuple[Item, asyncio.Future[Result]]] = []
        keys: set[Hashable] = set()
        while self._waiting and len(batch) < self._max_batch:
            entry = self._waiting.popleft()
            key = self._conflict_key(entry[0])
            (later if key in keys else batch).append(entry)
            keys.add(key)
        self._waiting.extendleft(reversed(later))
        return batch

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_batches()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            await self._run_batch(batch)
        finally:  # cancelled (shutdown): no request may wait forever
            for _, future in batch:
                _settle(future, exception=RuntimeError("the write batch was cancelled"))

    async def _run_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 — handed to the waiting requests, or retried one by one
            if len(batch) == 1 or self._fails_all(exc):
                for _, future in batch:
                    _settle(future, exception=exc)
                return
            for item, future in batch:
                try:
                    _settle(future, result=(await self._send([item]))[0])
                except Exception as single_exc:  # noqa: BLE001 — this request's own failure
                    _settle(future, exception=single_exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    async def _send(self, items: list[Item]) -> list[Result]:
        self.batches += 1
        self.items += len(items)
        results = await self._execute(items)
        if len(results) != len(items):
            raise RuntimeError(f"a batch of {len(items)} writes returned {len(results)} results")
        return results


def _settle(future: asyncio.Future[Result], *, result: Result | None = None,
            exception: BaseException | None = None) -> None:
    if future.done():  # the request gave up waiting (cancelled); its write has happened all the same
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)  # type: ignore[arg-type]
