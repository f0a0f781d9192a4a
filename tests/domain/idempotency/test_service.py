"""IdempotencyKeys: concurrent requests' reservations and kept answers share statements, on the real database."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.idempotency.service import IdempotencyKeys
from domain.idempotency.store import Claim, Reservation, ReservationOutcome, StoredResponse
from domain.platform.database import make_async_engine
from domain.platform.settings import Settings

T0 = dt.datetime(2031, 3, 1, 12, 0, tzinfo=dt.UTC)
TTL = 3600.0
ANSWER = StoredResponse(200, {"content-type": "application/json"}, b'{"response":{"code":453}}')


def test_concurrent_requests_share_statements_and_each_gets_its_own_outcome(settings: Settings) -> None:
    scope = uuid.uuid4().hex + uuid.uuid4().hex
    count = 20

    async def scenario(engine: AsyncEngine) -> tuple[list[Reservation], list[bool], list[Reservation], int, int]:
        keys = IdempotencyKeys(engine, max_batches_in_flight=1)
        held = await asyncio.gather(*(keys.reserve(Claim(scope, f"k{i}", "f" * 64, T0, TTL)) for i in range(count)))
        recorded = await asyncio.gather(*(keys.record(reservation, ANSWER) for reservation in held))
        again = await asyncio.gather(*(keys.reserve(Claim(scope, f"k{i}", "f" * 64, T0, TTL)) for i in range(count)))
        return (list(held), list(recorded), list(again), keys.reservations.batches, keys.records.batches)

    async def main() -> tuple[list[Reservation], list[bool], list[Reservation], int, int]:
        engine = make_async_engine(settings)
        try:
            return await scenario(engine)
        finally:
            await engine.dispose()

    held, recorded, again, reserve_statements, record_statements = asyncio.run(main())
    assert [r.outcome for r in held] == [ReservationOutcome.PROCEED] * count
    assert recorded == [True] * count
    assert [(r.key, r.outcome, r.response) for r in again] == [
        (f"k{i}", ReservationOutcome.REPLAY, ANSWER) for i in range(count)]
    # One slot: the first request goes alone, everything that arrived meanwhile goes in the next statement.
    assert reserve_statements == 4 and record_statements == 2
