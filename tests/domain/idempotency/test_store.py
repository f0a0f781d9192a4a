"""Reserving, recording, releasing and sweeping idempotency keys, on the real PostgreSQL database."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.idempotency import store
from domain.idempotency.models import IdempotencyKey
from domain.idempotency.store import ReservationOutcome
from domain.platform.database import make_async_engine, unit_of_work
from domain.platform.settings import Settings

T = TypeVar("T")
T0 = dt.datetime(2031, 3, 1, 12, 0, tzinfo=dt.UTC)
TTL = 3600.0
HEADERS = {"content-type": "application/json", "x-signature-key-id": "kid-1"}
BODY = b'{"response":{"code":453,"message":"Metadata created","meta_id":7,"timestamp":1}}'


def run(settings: Settings, scenario: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = make_async_engine(settings.model_copy(update={"api_db_pool_size": 24}))
        try:
            return await scenario(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def new_scope() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


async def reserve(engine: AsyncEngine, scope: str, key: str = "k", fingerprint: str = "f" * 64,
                  now: dt.datetime = T0) -> store.Reservation:
    async with engine.connect() as conn:
        return await store.reserve(conn, scope, key, fingerprint, now, TTL)


async def record(engine: AsyncEngine, reservation: store.Reservation) -> bool:
    async with engine.connect() as conn:
        return await store.record(conn, reservation, 200, HEADERS, BODY)


def rows(scope: str) -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(IdempotencyKey)
                              .where(IdempotencyKey.scope == scope)) or 0


async def concurrently(engine: AsyncEngine, count: int,
                       act: Callable[[int, AsyncConnection], Awaitable[T]]) -> list[T]:
    """``act`` on ``count`` connections opened beforehand, so the statements reach the server together."""
    async with AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(engine.connect()) for _ in range(count)]
        return list(await asyncio.gather(*(act(i, conn) for i, conn in enumerate(conns))))


def test_twenty_concurrent_reserves_with_one_key_yield_exactly_one_proceed(settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> list[store.Reservation]:
        return await concurrently(engine, 20, lambda i, conn: store.reserve(conn, scope, "k", "f" * 64, T0, TTL))

    outcomes = Counter(r.outcome for r in run(settings, scenario))
    assert outcomes == {ReservationOutcome.PROCEED: 1, ReservationOutcome.IN_PROGRESS: 19}
    assert rows(scope) == 1


def test_concurrent_reserves_with_mixed_parameters_have_one_holder_and_mismatches_for_the_others(
        settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> list[store.Reservation]:
        return await concurrently(engine, 20, lambda i, conn: store.reserve(
            conn, scope, "k", ("a" if i % 2 else "b") * 64, T0, TTL))

    results = run(settings, scenario)
    [holder] = [r for r in results if r.outcome is ReservationOutcome.PROCEED]
    holder_print = ("a" if results.index(holder) % 2 else "b") * 64
    for i, result in enumerate(results):
        if result is holder:
            continue
        same = (("a" if i % 2 else "b") * 64) == holder_print
        assert result.outcome is (ReservationOutcome.IN_PROGRESS if same else ReservationOutcome.MISMATCH)


def test_one_statement_reserves_for_many_requests_and_a_repeated_key_has_one_holder(settings: Settings) -> None:
    scope = new_scope()
    claims = [store.Claim(scope, "a", "f" * 64, T0, TTL), store.Claim(scope, "b", "f" * 64, T0, TTL),
              store.Claim(scope, "a", "f" * 64, T0, TTL), store.Claim(scope, "a", "0" * 64, T0, TTL)]

    async def scenario(engine: AsyncEngine) -> list[store.Reservation]:
        async with engine.connect() as conn:
            return await store.reserve_many(conn, claims)

    results = run(settings, scenario)
    assert [(r.key, r.outcome) for r in results] == [
        ("a", ReservationOutcome.PROCEED), ("b", ReservationOutcome.PROCEED),
        ("a", ReservationOutcome.IN_PROGRESS), ("a", ReservationOutcome.MISMATCH)]
    assert rows(scope) == 2


def test_concurrent_batches_over_the_same_keys_in_any_order_have_one_holder_per_key(settings: Settings) -> None:
    """Rows are written in key order whatever the order of the claims, so batches cannot deadlock each other."""
    scope = new_scope()
    keys = [f"k{i}" for i in range(10)]

    async def scenario(engine: AsyncEngine) -> list[list[store.Reservation]]:
        def batch(i: int) -> list[store.Claim]:
            ordered = keys if i % 2 else list(reversed(keys))
            return [store.Claim(scope, key, "f" * 64, T0, TTL) for key in ordered]
        return await concurrently(engine, 8, lambda i, conn: store.reserve_many(conn, batch(i)))

    holders = Counter(r.key for batch in run(settings, scenario) for r in batch
                      if r.outcome is ReservationOutcome.PROCEED)
    assert holders == {key: 1 for key in keys}
    assert rows(scope) == len(keys)


def test_one_statement_records_many_answers_and_says_which_reservation_was_lost(settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> tuple[list[bool], store.Reservation, store.Reservation]:
        kept = await reserve(engine, scope, key="kept")
        lost = await reserve(engine, scope, key="lost")
        await reserve(engine, scope, key="lost", now=T0 + dt.timedelta(seconds=store.LEASE_SECONDS))  # taken over
        response = store.StoredResponse(200, HEADERS, BODY)
        async with engine.connect() as conn:
            recorded = await store.record_many(conn, [store.KeptAnswer(kept, response),
                                                      store.KeptAnswer(lost, response)])
        later = T0 + dt.timedelta(seconds=store.LEASE_SECONDS + 1)
        return (recorded, await reserve(engine, scope, key="kept", now=later),
                await reserve(engine, scope, key="lost", now=later))

    recorded, kept_again, lost_again = run(settings, scenario)
    assert recorded == [True, False]
    assert kept_again.outcome is ReservationOutcome.REPLAY
    assert kept_again.response == store.StoredResponse(200, HEADERS, BODY)
    assert lost_again.outcome is ReservationOutcome.IN_PROGRESS  # still the taker's, untouched by the late answer


def test_a_recorded_answer_is_replayed_to_every_concurrent_repeat(settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> list[store.Reservation]:
        first = await reserve(engine, scope)
        assert await record(engine, first)
        later = T0 + dt.timedelta(seconds=TTL - 1)
        return await concurrently(engine, 20, lambda i, conn: store.reserve(conn, scope, "k", "f" * 64, later, TTL))

    results = run(settings, scenario)
    assert {r.outcome for r in results} == {ReservationOutcome.REPLAY}
    assert all(r.response == store.StoredResponse(200, HEADERS, BODY) for r in results)


def test_the_same_key_with_another_fingerprint_is_a_mismatch_in_progress_and_decided(settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> tuple[store.Reservation, store.Reservation]:
        first = await reserve(engine, scope)
        while_running = await reserve(engine, scope, fingerprint="0" * 64)
        await record(engine, first)
        return while_running, await reserve(engine, scope, fingerprint="0" * 64)

    while_running, after = run(settings, scenario)
    assert while_running.outcome is ReservationOutcome.MISMATCH
    assert after.outcome is ReservationOutcome.MISMATCH and after.response is None


def test_an_expired_key_is_free_again_even_before_the_sweeper_runs(settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> tuple[store.Reservation, store.Reservation, store.Reservation]:
        first = await reserve(engine, scope)
        await record(engine, first)
        at_the_end = T0 + dt.timedelta(seconds=TTL)
        again = await reserve(engine, scope, fingerprint="0" * 64, now=at_the_end)
        return first, again, await reserve(engine, scope, fingerprint="0" * 64, now=at_the_end)

    first, again, repeat = run(settings, scenario)
    assert again.outcome is ReservationOutcome.PROCEED and again.token != first.token
    assert repeat.outcome is ReservationOutcome.IN_PROGRESS  # the new holder's row, in progress again
    assert rows(scope) == 1


def test_an_abandoned_reservation_is_taken_over_after_its_lease_and_its_late_answer_is_not_kept(
        settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> tuple[store.Reservation, store.Reservation, bool, store.Reservation]:
        abandoned = await reserve(engine, scope)
        within = await reserve(engine, scope, now=T0 + dt.timedelta(seconds=store.LEASE_SECONDS - 1))
        takeover = await reserve(engine, scope, now=T0 + dt.timedelta(seconds=store.LEASE_SECONDS))
        late = await record(engine, abandoned)
        return within, takeover, late, await reserve(engine, scope, now=T0 + dt.timedelta(seconds=61))

    within, takeover, late, after = run(settings, scenario)
    assert within.outcome is ReservationOutcome.IN_PROGRESS
    assert takeover.outcome is ReservationOutcome.PROCEED
    assert late is False
    assert after.outcome is ReservationOutcome.IN_PROGRESS


def test_release_frees_the_key_for_a_retry(settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> tuple[bool, store.Reservation]:
        first = await reserve(engine, scope)
        async with engine.connect() as conn:
            released = await store.release(conn, first)
        return released, await reserve(engine, scope)

    released, retry = run(settings, scenario)
    assert released is True
    assert retry.outcome is ReservationOutcome.PROCEED


def test_the_same_key_under_another_scope_is_independent(settings: Settings) -> None:
    one, other = new_scope(), new_scope()

    async def scenario(engine: AsyncEngine) -> store.Reservation:
        await record(engine, await reserve(engine, one))
        return await reserve(engine, other, fingerprint="0" * 64)

    assert run(settings, scenario).outcome is ReservationOutcome.PROCEED
    assert rows(one) == rows(other) == 1


def test_a_refusal_holds_no_key_to_record_or_release(settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> None:
        await reserve(engine, scope)
        repeat = await reserve(engine, scope)
        assert repeat.outcome is ReservationOutcome.IN_PROGRESS
        async with engine.connect() as conn:
            with pytest.raises(ValueError, match="holds no key"):
                await store.record(conn, repeat, 200, HEADERS, BODY)
            with pytest.raises(ValueError, match="holds no key"):
                await store.release(conn, repeat)

    run(settings, scenario)
    assert rows(scope) == 1


def test_a_naive_time_is_refused(settings: Settings) -> None:
    async def scenario(engine: AsyncEngine) -> None:
        with pytest.raises(ValueError, match="naive datetime"):
            await reserve(engine, new_scope(), now=T0.replace(tzinfo=None))

    run(settings, scenario)


def test_a_connection_lost_mid_statement_is_invalidated_not_pooled(settings: Settings) -> None:
    scope = new_scope()

    async def scenario(engine: AsyncEngine) -> tuple[bool, store.Reservation]:
        held = await reserve(engine, scope)
        async with engine.connect() as conn:
            pid = (await conn.get_raw_connection()).driver_connection.get_server_pid()
            async with engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(Exception):  # noqa: B017 - whichever error the driver reports for the lost link
                await store.record(conn, held, 200, HEADERS, BODY)
            invalidated = conn.invalidated
        async with engine.connect() as conn:  # the pool hands out a live connection, not the dead one
            return invalidated, await store.reserve(conn, scope, "k", "f" * 64, T0, TTL)

    invalidated, after = run(settings, scenario)
    assert invalidated
    assert after.outcome is ReservationOutcome.IN_PROGRESS  # the lost record left the key held


def test_sweep_deletes_expired_rows_only_up_to_its_limit(settings: Settings) -> None:
    scope = new_scope()
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

    async def scenario(engine: AsyncEngine) -> None:
        for day in range(3):  # in progress rows whose lease ended long ago, and one decided row
            await reserve(engine, scope, key=f"old-{day}", now=long_ago + dt.timedelta(days=day))
        await record(engine, await reserve(engine, scope, key="old-decided", now=long_ago))
        await reserve(engine, scope, key="fresh", now=long_ago + dt.timedelta(days=400))

    run(settings, scenario)
    sweep_at = long_ago + dt.timedelta(days=10)
    with unit_of_work() as session:
        assert store.sweep_expired(session, sweep_at, limit=3) == 3
    with unit_of_work() as session:
        assert store.sweep_expired(session, sweep_at, limit=3) == 1
    with unit_of_work() as session:
        assert list(session.scalars(select(IdempotencyKey.key).where(IdempotencyKey.scope == scope))) == ["fresh"]
