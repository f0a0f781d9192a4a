"""WriteBatcher: concurrent writes share statements; each caller gets its own result or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from domain.platform.write_batches import WriteBatcher


class Recorder:
    """Answers ``item * 10``; holds every batch until released; refuses the items in ``bad``."""

    def __init__(self, bad: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.bad = bad

    async def execute(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.bad & set(items):
            raise ValueError(f"bad items {sorted(self.bad & set(items))}")
        return [item * 10 for item in items]


async def _settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lone_write_goes_out_at_once_as_a_batch_of_one() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.set()
        batcher = WriteBatcher(recorder.execute, max_in_flight=2)
        assert await batcher.submit(7) == 70
        assert recorder.batches == [[7]]

    asyncio.run(scenario())


def test_writes_arriving_while_the_slots_are_busy_share_the_next_batch_in_arrival_order() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = WriteBatcher(recorder.execute, max_in_flight=1)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(6)]
        await _settle_loop()
        assert recorder.batches == [[0]]  # the others wait for the only slot
        recorder.release.set()
        assert await asyncio.gather(*tasks) == [0, 10, 20, 30, 40, 50]
        assert recorder.batches == [[0], [1, 2, 3, 4, 5]]
        assert (batcher.batches, batcher.items) == (2, 6)

    asyncio.run(scenario())


def test_a_batch_holds_at_most_max_batch_writes() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = WriteBatcher(recorder.execute, max_in_flight=1, max_batch=2)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await _settle_loop()
        recorder.release.set()
        await asyncio.gather(*tasks)
        assert recorder.batches == [[0], [1, 2], [3, 4]]

    asyncio.run(scenario())


def test_a_batch_takes_one_write_per_conflict_key_and_the_others_keep_their_order() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = WriteBatcher(recorder.execute, max_in_flight=1, conflict_key=lambda item: item % 3)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in (0, 1, 4, 7, 2, 5, 3)]
        await _settle_loop()
        recorder.release.set()
        assert await asyncio.gather(*tasks) == [0, 10, 40, 70, 20, 50, 30]
        # Keys: 1, 4 and 7 share key 1; 2 and 5 share key 2; 3 shares key 0 with the first batch's 0.
        assert recorder.batches == [[0], [1, 2, 3], [4, 5], [7]]

    asyncio.run(scenario())


def test_a_failed_batch_is_retried_one_write_at_a_time_so_only_the_bad_write_fails() -> None:
    async def scenario() -> None:
        recorder = Recorder(bad=frozenset({3}))
        batcher = WriteBatcher(recorder.execute, max_in_flight=1)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await _settle_loop()
        recorder.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[:3] == [0, 10, 20] and results[4] == 40
        assert isinstance(results[3], ValueError) and "bad items [3]" in str(results[3])
        assert recorder.batches == [[0], [1, 2, 3, 4], [1], [2], [3], [4]]

    asyncio.run(scenario())


def test_a_failure_that_fails_every_write_is_handed_to_all_without_retrying_them_one_by_one() -> None:
    async def scenario() -> None:
        recorder = Recorder(bad=frozenset({3}))
        batcher = WriteBatcher(recorder.execute, max_in_flight=1, fails_all=lambda exc: isinstance(exc, ValueError))
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await _settle_loop()
        recorder.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == 0 and all(isinstance(result, ValueError) for result in results[1:])
        assert recorder.batches == [[0], [1, 2, 3, 4]]

    asyncio.run(scenario())


def test_a_lone_write_that_fails_gets_its_error() -> None:
    async def scenario() -> None:
        recorder = Recorder(bad=frozenset({1}))
        recorder.release.set()
        batcher = WriteBatcher(recorder.execute, max_in_flight=1)
        with pytest.raises(ValueError, match="bad items"):
            await batcher.submit(1)
        assert await batcher.submit(2) == 20  # the slot was given back

    asyncio.run(scenario())


def test_a_cancelled_batch_fails_its_waiters_instead_of_leaving_them_hanging() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = WriteBatcher(recorder.execute, max_in_flight=1)
        first = asyncio.create_task(batcher.submit(1))
        await _settle_loop()
        for task in list(batcher._running):  # e.g. the server shutting down mid-batch
            task.cancel()
        with pytest.raises(RuntimeError, match="cancelled"):
            await asyncio.wait_for(first, timeout=5)

    asyncio.run(scenario())


def test_a_caller_that_stops_waiting_does_not_disturb_its_batch() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batcher = WriteBatcher(recorder.execute, max_in_flight=1)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await _settle_loop()
        tasks[1].cancel()
        recorder.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == 0 and isinstance(results[1], asyncio.CancelledError) and results[2] == 20

    asyncio.run(scenario())


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WriteBatcher(Recorder().execute, max_in_flight=0)
