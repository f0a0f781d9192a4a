"""Idempotency keys for concurrent requests: their reservations share statements, and so do their kept answers.

Under load a mutation with an ``Idempotency-Key`` would otherwise cost two statements and two connections of
its own besides its write; batched, a statement serves every request waiting for one. A release (5xx, 429,
409) is rare and goes alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from domain.idempotency import store
from domain.idempotency.store import Claim, KeptAnswer, Reservation, StoredResponse
from domain.platform.database import is_connection_failure
from domain.platform.write_batches import WriteBatcher


class IdempotencyKeys:
    def __init__(self, engine: AsyncEngine, *, max_batches_in_flight: int = 2) -> None:
        self.engine = engine
        self.reservations: WriteBatcher[Claim, Reservation] = WriteBatcher(
            self._reserve_batch, max_in_flight=max_batches_in_flight, fails_all=is_connection_failure)
        self.records: WriteBatcher[KeptAnswer, bool] = WriteBatcher(
            self._record_batch, max_in_flight=max_batches_in_flight, fails_all=is_connection_failure)

    async def reserve(self, claim: Claim) -> Reservation:
        return await self.reservations.submit(claim)

    async def record(self, reservation: Reservation, response: StoredResponse) -> bool:
        """False when the reservation was lost meanwhile (see :func:`store.record_many`)."""
        return await self.records.submit(KeptAnswer(reservation, response))

    async def release(self, reservation: Reservation) -> bool:
        async with self.engine.connect() as conn:
            return await store.release(conn, reservation)

    async def _reserve_batch(self, claims: Sequence[Claim]) -> list[Reservation]:
        async with self.engine.connect() as conn:  # autocommit: the statement is the transaction
            return await store.reserve_many(conn, claims)

    async def _record_batch(self, answers: Sequence[KeptAnswer]) -> list[bool]:
        async with self.engine.connect() as conn:
            return await store.record_many(conn, answers)
