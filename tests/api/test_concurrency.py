"""Concurrent creates of the same key on the same license (docs/api.md): exactly one 453, the rest 452,
exactly one row; decided by the unique constraint, against the real database."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import AsyncExitStack

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.license_meta.store import MetaWriteRequest, MetaWriteResult, lookup_and_write_many
from domain.platform.database import make_async_engine
from domain.platform.models import utcnow
from domain.signing.verification import verify_envelope
from tests.api.conftest import ENDPOINT, counts, meta_rows, new_outbox_events, public_keys
from tests.conftest import CLIENT_IP, World, make_world

KEYS = 4
PER_KEY = 6


async def _post_concurrently(settings, requests: list[dict[str, str]]) -> list[httpx.Response]:
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keymeta") as client:
            return list(await asyncio.gather(*(client.post(ENDPOINT, data=form) for form in requests)))


def test_concurrent_creates_of_the_same_key_one_453_rest_452(settings) -> None:
    world = make_world()
    keys = [f"race-{i}" for i in range(KEYS)]
    # Interleaved, so the same key's requests are in flight at the same time as each other.
    requests = [world.form(key=key, value=f"writer {n}") for n in range(PER_KEY) for key in keys]
    before = counts()

    responses = asyncio.run(_post_concurrently(settings, requests))

    keys_pem = public_keys()
    outcomes: dict[str, Counter[int]] = {key: Counter() for key in keys}
    meta_ids: dict[str, int] = {}
    for form, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        verify_envelope(response.content, keys_pem)
        inner = response.json()["response"]
        outcomes[form["key"]][inner["code"]] += 1
        if inner["code"] == 453:
            meta_ids[form["key"]] = inner["meta_id"]
    assert all(outcome == Counter({453: 1, 452: PER_KEY - 1}) for outcome in outcomes.values()), outcomes

    rows = meta_rows(world.license_key)
    assert sorted((row.key, row.id) for row in rows) == sorted(meta_ids.items())
    after = counts()
    assert after.meta == before.meta + KEYS
    assert after.outbox == before.outbox + KEYS * PER_KEY  # one event per request, whatever its outcome
    events = new_outbox_events(before)
    assert Counter(event.outcome_code for event in events) == Counter({453: KEYS, 452: KEYS * (PER_KEY - 1)})
    created = sorted(event.subject_id for event in events if event.type == "license_key_meta.created")
    assert created == sorted(meta_ids.values())
    assert {event.request_id for event in events} == {r.headers["x-request-id"] for r in responses}


def test_concurrent_creates_across_licenses_do_not_interfere(settings) -> None:
    worlds = [make_world() for _ in range(3)]
    requests = [world.form(key="shared-name") for _ in range(3) for world in worlds]
    responses = asyncio.run(_post_concurrently(settings, requests))
    codes = Counter(response.json()["response"]["code"] for response in responses)
    assert codes == Counter({453: 3, 452: 6})
    assert all(len(meta_rows(world.license_key)) == 1 for world in worlds)


# --- the write statement (domain.license_meta.store) racing on connections of its own ------------------
async def _write(conn: AsyncConnection, world: World, key: str, writer: int) -> MetaWriteResult:
    [result] = await lookup_and_write_many(conn, max_keys=100, requests=[MetaWriteRequest(
        license_key=world.license_key, identifier=world.identifier, key=key, value=f"writer {writer}",
        payload={"writer": writer}, request_id=f"race-{writer}", now=utcnow())])
    return result


async def _direct_race(settings, world: World, writers: int) -> list[MetaWriteResult]:
    engine = make_async_engine(settings)
    try:
        async with AsyncExitStack() as stack:
            # Every connection is open before any write starts, so the writes really overlap.
            conns = [await stack.enter_async_context(engine.connect()) for _ in range(writers)]
            return list(await asyncio.gather(*(_write(conn, world, "direct", i) for i, conn in enumerate(conns))))
    finally:
        await engine.dispose()


def test_the_write_statement_racing_on_separate_connections_writes_one_row(settings) -> None:
    world = make_world()
    before = counts()
    results = asyncio.run(_direct_race(settings, world, writers=8))
    [winner] = [r for r in results if r.meta_id is not None]
    assert all(r.view is not None and r.event_id is None for r in results if r is not winner)
    [row] = meta_rows(world.license_key)
    assert row.id == winner.meta_id and row.value == f"writer {results.index(winner)}"
    # The statement writes the 453 event with its row; the service adds each 452's event afterwards.
    [event] = new_outbox_events(before)
    assert (event.id, event.subject_id, event.outcome_code) == (winner.event_id, winner.meta_id, 453)


async def _write_while_first_is_uncommitted(settings, world: World) -> tuple[MetaWriteResult, MetaWriteResult]:
    """A inserts and keeps its transaction open; B writes the same key meanwhile; then A commits.
    A read-then-write would let B see nothing and then fail on the constraint; B must get no row (452)."""
    engine = make_async_engine(settings)
    try:
        async with engine.connect() as a_conn, engine.connect() as b:
            # The API's engine autocommits; A needs a real transaction to hold its row uncommitted.
            a = await a_conn.execution_options(isolation_level="READ COMMITTED")
            transaction = await a.begin()
            await a.execute(text("SELECT 1"))  # the BEGIN is sent now, before the statement on the raw driver
            first = await _write(a, world, "held", 1)
            task = asyncio.create_task(_write(b, world, "held", 2))
            async with engine.connect() as probe:  # wait (bounded, no sleep) until B is blocked on A's row lock
                deadline = time.monotonic() + 10
                while not (await probe.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"))).scalar_one():
                    assert time.monotonic() < deadline, "the second writer never waited on the first"
                    await probe.rollback()  # a fresh pg_stat_activity snapshot on the next look
            assert not task.done()
            await transaction.commit()
            return first, await task
    finally:
        await engine.dispose()


def test_second_writer_waits_for_the_first_and_gets_no_row(settings) -> None:
    world = make_world()
    first, second = asyncio.run(_write_while_first_is_uncommitted(settings, world))
    assert first.meta_id is not None
    assert second.view is not None and second.meta_id is None and second.event_id is None
    assert [row.id for row in meta_rows(world.license_key)] == [first.meta_id]
