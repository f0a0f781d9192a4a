"""SPEC §1: concurrent creates of the same key on the same license — exactly one 453, the rest 452,
exactly one row; decided by the unique constraint, against the real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import AsyncExitStack

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.license_meta.rules import write_meta
from domain.platform.database import make_async_engine, unit_of_work
from domain.platform.models import LicenseKey, utcnow
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


# --- domain.license_meta.rules.write_meta racing directly -------------------------------------------------
def _license_id(world: World) -> int:
    with unit_of_work() as session:
        return session.scalar(select(LicenseKey.id).where(LicenseKey.key == world.license_key))  # type: ignore[return-value]


def _write(conn: AsyncConnection, license_id: int, world: World, key: str, writer: int):
    return write_meta(conn, license_key_id=license_id, key=key, value=f"writer {writer}",
                      identifier=world.identifier, payload={"writer": writer}, request_id=f"race-{writer}",
                      now=utcnow())


async def _autocommit(stack: AsyncExitStack, engine) -> AsyncConnection:
    conn = await stack.enter_async_context(engine.connect())
    if engine.dialect.name == "postgresql":
        return await conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


async def _direct_race(settings, license_id: int, world: World, writers: int) -> list:
    engine = make_async_engine(settings)
    try:
        async with AsyncExitStack() as stack:
            # Every connection is open before any write starts, so the writes really overlap.
            conns = [await _autocommit(stack, engine) for _ in range(writers)]

            async def one(conn: AsyncConnection, writer: int):
                if engine.dialect.name == "postgresql":
                    return await _write(conn, license_id, world, "direct", writer)
                async with conn.begin():  # SQLite: the caller owns the transaction
                    return await _write(conn, license_id, world, "direct", writer)

            return list(await asyncio.gather(*(one(conn, i) for i, conn in enumerate(conns))))
    finally:
        await engine.dispose()


def test_write_meta_racing_directly(settings) -> None:
    world = make_world()
    license_id = _license_id(world)
    before = counts()
    results = asyncio.run(_direct_race(settings, license_id, world, writers=8))
    assert Counter(int(r.code) for r in results) == Counter({453: 1, 452: 7})
    [winner] = [r for r in results if r.meta_id is not None]
    [row] = meta_rows(world.license_key)
    assert row.id == winner.meta_id and row.value == f"writer {results.index(winner)}"
    assert counts().outbox == before.outbox + 8
    assert len({r.event_id for r in results}) == 8


async def _write_while_first_is_uncommitted(settings, license_id: int, world: World) -> tuple:
    """A inserts and keeps its transaction open; B writes the same key meanwhile; then A commits.
    A read-then-write would let B see nothing and then fail on the constraint; B must get 452."""
    engine = make_async_engine(settings)
    postgres = engine.dialect.name == "postgresql"
    try:
        async with engine.connect() as a_conn, engine.connect() as b_conn:
            b = await b_conn.execution_options(isolation_level="AUTOCOMMIT") if postgres else b_conn
            # The API's engine autocommits; A needs a real transaction to hold its row uncommitted.
            a = await a_conn.execution_options(isolation_level="READ COMMITTED") if postgres else a_conn
            transaction = await a.begin()
            first = await _write(a, license_id, world, "held", 1)

            async def second():
                if postgres:
                    return await _write(b, license_id, world, "held", 2)
                async with b.begin():
                    return await _write(b, license_id, world, "held", 2)

            task = asyncio.create_task(second())
            if postgres:  # wait (bounded, no sleep) until B is blocked on A's row lock
                async with engine.connect() as probe:
                    deadline = time.monotonic() + 10
                    while not (await probe.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"))).scalar_one():
                        assert time.monotonic() < deadline, "the second writer never waited on the first"
                        await probe.rollback()
            else:
                await asyncio.sleep(0)
            assert not task.done()
            await transaction.commit()
            return first, await task
    finally:
        await engine.dispose()


def test_second_writer_waits_for_the_first_and_gets_452(settings) -> None:
    world = make_world()
    first, second = asyncio.run(_write_while_first_is_uncommitted(settings, _license_id(world), world))
    assert (int(first.code), int(second.code)) == (453, 452)
    assert second.meta_id is None
    assert [row.id for row in meta_rows(world.license_key)] == [first.meta_id]
