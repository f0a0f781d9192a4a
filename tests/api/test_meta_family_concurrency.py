"""Concurrency of the metadata family, decided by the database (docs/api.md): against the real endpoint and
store on a real PostgreSQL, requests truly in flight together."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
from sqlalchemy import text

from domain.license_meta.codes import (
    CREATE_META_CAPABILITY,
    DELETE_META_CAPABILITY,
    GET_META_CAPABILITY,
    UPDATE_META_CAPABILITY,
)
from domain.license_meta.store import MetaWriteRequest, MetaWriteResult, lookup_and_write_many
from domain.platform.database import make_async_engine
from domain.platform.models import utcnow
from domain.signing.verification import verify_envelope
from tests.api.conftest import counts, meta_rows, new_outbox_events, public_keys
from tests.conftest import CLIENT_IP, World, make_world

ALL = [CREATE_META_CAPABILITY, UPDATE_META_CAPABILITY, DELETE_META_CAPABILITY, GET_META_CAPABILITY]


def _path(operation: str) -> str:
    return f"/api/v1/{operation}-license-key-meta"


async def _post_together(settings, requests: list[tuple[str, dict[str, str]]]) -> list[httpx.Response]:
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keymeta") as client:
            return list(await asyncio.gather(*(client.post(_path(op), data=form) for op, form in requests)))


def _run(settings, requests: list[tuple[str, dict[str, str]]]) -> list[dict]:
    responses = asyncio.run(_post_together(settings, requests))
    keys = public_keys()
    for response in responses:
        assert response.status_code == 200, response.text
        verify_envelope(response.content, keys)
    return [response.json()["response"] for response in responses]


def _form(world: World, key: str, value: str | None = None) -> dict[str, str]:
    form = world.form(key=key)
    if value is None:
        form.pop("value")
    else:
        form["value"] = value
    return form


def test_concurrent_deletes_exactly_one_wins(settings) -> None:
    world = make_world(capabilities=ALL)
    [created] = _run(settings, [("create", _form(world, "doomed", "v"))])
    before = counts()
    answers = _run(settings, [("delete", _form(world, "doomed")) for _ in range(8)])
    assert Counter(a["code"] for a in answers) == Counter({252: 1, 251: 7})
    assert meta_rows(world.license_key) == []
    events = new_outbox_events(before)
    assert len(events) == 8
    [deleted] = [e for e in events if e.type == "license_key_meta.deleted"]
    assert deleted.subject_id == created["meta_id"] and deleted.payload["data"]["version"] == 2


def test_update_racing_delete_is_353_before_or_352_after_never_a_lost_write(settings) -> None:
    world = make_world(capabilities=ALL)
    for round_no in range(6):
        key = f"raced-{round_no}"
        _run(settings, [("create", _form(world, key, "original"))])
        before = counts()
        update, delete = _run(settings, [("update", _form(world, key, f"new {round_no}")),
                                         ("delete", _form(world, key))])
        assert delete["code"] == 252
        assert update["code"] in (352, 353)
        events = new_outbox_events(before)
        [deleted] = [e for e in events if e.type == "license_key_meta.deleted"]
        updated = [e for e in events if e.type == "license_key_meta.updated"]
        assert len(updated) == (1 if update["code"] == 353 else 0), "an update event without its write, or lost"
        if update["code"] == 353:  # the update came first: the delete removed its value, one version later
            assert (deleted.payload["data"]["value"], deleted.payload["data"]["version"]) == (f"new {round_no}", 3)
        else:  # the delete came first: the update found nothing and wrote nothing
            assert (deleted.payload["data"]["value"], deleted.payload["data"]["version"]) == ("original", 2)
        assert [row.key for row in meta_rows(world.license_key)] == []


def test_concurrent_updates_give_versions_that_strictly_increase_and_never_repeat(settings) -> None:
    world = make_world(capabilities=ALL)
    [created] = _run(settings, [("create", _form(world, "counter", "v0"))])
    before = counts()
    answers = _run(settings, [("update", _form(world, "counter", f"v{n}")) for n in range(1, 11)])
    assert Counter(a["code"] for a in answers) == Counter({353: 10})
    events = [e for e in new_outbox_events(before) if e.type == "license_key_meta.updated"]
    versions = sorted(e.payload["data"]["version"] for e in events)
    assert versions == list(range(2, 12))
    # Each update saw the value the one before it left: the chain of previous values has no gap.
    by_version = {e.payload["data"]["version"]: e.payload["data"] for e in events}
    for version in range(3, 12):
        assert by_version[version]["previous_value"] == by_version[version - 1]["value"]
    [row] = meta_rows(world.license_key)
    assert (row.id, row.version, row.value) == (created["meta_id"], 11, by_version[11]["value"])


def test_concurrent_creates_at_the_cap_never_exceed_it(settings) -> None:
    capped = settings.model_copy(update={"meta_max_keys_per_license": 5})
    world = make_world(capabilities=ALL)
    _run(capped, [("create", _form(world, f"pre-{n}", "v")) for n in range(3)])
    answers = _run(capped, [("create", _form(world, f"race-{n}", "v")) for n in range(8)])
    assert Counter(a["code"] for a in answers) == Counter({453: 2, 901: 6})
    assert all(a["errors"] == {"key": ["this license key holds the limit of 5 meta keys"]}
               for a in answers if a["code"] == 901)
    assert len(meta_rows(world.license_key)) == 5
    [duplicate] = _run(capped, [("create", _form(world, "pre-0", "v"))])
    assert duplicate["code"] == 452  # an existing key is a duplicate, not one more key


def test_create_after_delete_gets_a_new_meta_id(settings) -> None:
    world = make_world(capabilities=ALL)
    [first] = _run(settings, [("create", _form(world, "phoenix", "v"))])
    _run(settings, [("delete", _form(world, "phoenix"))])
    [second] = _run(settings, [("create", _form(world, "phoenix", "v"))])
    assert second["code"] == 453 and second["meta_id"] != first["meta_id"]


# --- the cap's count waits for a writer holding the license's last slot -----------------------------------------
async def _create(conn, world: World, key: str) -> MetaWriteResult:
    [result] = await lookup_and_write_many(conn, [MetaWriteRequest(
        license_key=world.license_key, identifier=world.identifier, key=key, value="v", payload={},
        request_id=f"cap-{key}", now=utcnow())], max_keys=1)
    return result


async def _second_waits_for_the_first(settings, world: World) -> tuple[MetaWriteResult, MetaWriteResult]:
    """A takes the license's only slot and keeps its transaction open; B creates another key meanwhile and
    must wait, then count A's row: a count on the statement's own snapshot would let B in (two keys)."""
    engine = make_async_engine(settings)
    try:
        async with engine.connect() as a_conn, engine.connect() as b:
            a = await a_conn.execution_options(isolation_level="READ COMMITTED")
            transaction = await a.begin()
            await a.execute(text("SELECT 1"))
            first = await _create(a, world, "first")
            task = asyncio.create_task(_create(b, world, "second"))
            async with engine.connect() as probe:
                deadline = time.monotonic() + 10
                while not (await probe.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"))).scalar_one():
                    assert time.monotonic() < deadline, "the second create never waited on the first"
                    await probe.rollback()
            assert not task.done()
            await transaction.commit()
            return first, await task
    finally:
        await engine.dispose()


def test_a_create_waiting_on_the_last_slot_counts_the_row_that_took_it(settings) -> None:
    world = make_world()
    first, second = asyncio.run(_second_waits_for_the_first(settings, world))
    assert first.meta_id is not None
    assert second.meta_id is None and second.over_cap and not second.key_exists
    assert [row.key for row in meta_rows(world.license_key)] == ["first"]
