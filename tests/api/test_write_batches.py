"""Concurrent create-meta requests share write statements (domain.platform.write_batches), and a shared
statement decides every request exactly as a statement of its own would."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import httpx
import pytest

from domain.license_meta.codes import Code, Operation
from domain.license_meta.rules import license_decision
from domain.license_meta.store import (
    MetaWriteRequest,
    MetaWriteResult,
    delete_many,
    lookup_and_write_many,
    read_many,
    update_many,
)
from domain.platform.database import make_async_engine
from domain.platform.models import utcnow
from tests.api.conftest import counts, meta_rows, new_outbox_events
from tests.conftest import CLIENT_IP, World, make_world

BURST = 24


async def _burst(settings, forms: list[dict[str, str]], operation: Operation = Operation.CREATE,
                 ) -> tuple[list[httpx.Response], int, int]:
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keymeta") as client:
            path = f"/api/v1/{operation.value}"
            responses = list(await asyncio.gather(*(client.post(path, data=form) for form in forms)))
        batcher = app.state.license_meta.write_batchers[operation]
        return responses, batcher.batches, batcher.items


def test_a_burst_of_requests_shares_statements_and_is_written_in_full(settings) -> None:
    world = make_world()
    forms = [world.form(key=f"burst-{i}") for i in range(BURST)]
    before = counts()

    responses, batches, items = asyncio.run(_burst(settings, forms))

    assert Counter(r.json()["response"]["code"] for r in responses) == Counter({453: BURST})
    assert sorted(row.key for row in meta_rows(world.license_key)) == sorted(f["key"] for f in forms)
    assert counts().outbox == before.outbox + BURST
    assert items == BURST
    assert batches < BURST, "concurrent requests should have shared statements"


def test_one_statement_decides_each_request_as_its_own_statement_would(settings) -> None:
    good, blocked, inactive = make_world(), make_world(status="blocked"), make_world(product_active=False)
    not_activated = make_world(activate=False)
    expired = make_world(validity_days=1)
    now = utcnow()
    later = now + dt.timedelta(days=2)

    def request(world, key: str | None, value: str | None = "v", when: dt.datetime = now,
                license_key: str | None = None) -> MetaWriteRequest:
        return MetaWriteRequest(license_key=license_key or world.license_key, identifier=world.identifier, key=key,
                                value=value, payload={"meta_key": key}, request_id=f"rid-{key}", now=when)

    batch = [
        request(good, "dup"),              # 0: wins the pair
        request(good, "dup"),              # 1: same (license, key) later in the batch: 452
        request(good, "other"),            # 2: a second key of the same license
        request(good, "x", license_key="LK-NO-SUCH-KEY"),  # 3: unknown license
        request(blocked, "b"),             # 4
        request(inactive, "i"),            # 5
        request(not_activated, "n"),       # 6
        request(expired, "e", when=later),  # 7: past its validity
        request(good, "novalue", value=None),  # 8
    ]
    before = counts()

    async def run() -> list:
        engine = make_async_engine(settings)
        try:
            async with engine.connect() as conn:
                return await lookup_and_write_many(conn, batch, max_keys=100)
        finally:
            await engine.dispose()

    results = asyncio.run(run())

    written = [i for i, r in enumerate(results) if r.meta_id is not None]
    assert written == [0, 2]
    assert results[3].view is None
    assert results[1].view is not None and results[1].meta_id is None and results[1].event_id is None
    # The Python decision (what the response code comes from) agrees with the SQL for every row.
    decisions = [license_decision(r.view, item.now) if r.view else "unknown"
                 for r, item in zip(results, batch, strict=True)]
    assert decisions == [
        None, None, None, "unknown", Code.LICENSE_BLOCKED, Code.PRODUCT_INACTIVE, Code.NO_ACTIVATION,
        Code.LICENSE_EXPIRED, None]
    assert sorted(row.key for row in meta_rows(good.license_key)) == ["dup", "other"]
    [dup_row] = [row for row in meta_rows(good.license_key) if row.key == "dup"]
    assert dup_row.id == results[0].meta_id
    events = new_outbox_events(before)
    assert sorted((e.subject_id, e.request_id, e.payload["product_id"]) for e in events) == sorted(
        [(results[0].meta_id, "rid-dup", good.product_id), (results[2].meta_id, "rid-other", good.product_id)])
    assert {e.id for e in events} == {results[0].event_id, results[2].event_id}


# --- update, delete and get share statements too ------------------------------------------------------------------
def _request(world: World, key: str | None, value: str | None = None, *, license_key: str | None = None,
             rid: str | None = None) -> MetaWriteRequest:
    return MetaWriteRequest(license_key=license_key or world.license_key, identifier=world.identifier, key=key,
                            value=value, payload={"meta_key": key}, request_id=rid or f"rid-{key}", now=utcnow())


def _in_one_statement(settings, run, batch: list[MetaWriteRequest]) -> list[MetaWriteResult]:
    async def go() -> list[MetaWriteResult]:
        engine = make_async_engine(settings)
        try:
            async with engine.connect() as conn:
                return await run(conn, batch)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _seed(settings, world: World, **values: str) -> dict[str, int]:
    created = _in_one_statement(settings, lambda conn, batch: lookup_and_write_many(conn, batch, max_keys=100),
                                [_request(world, key, value) for key, value in values.items()])
    return {key: result.meta_id for key, result in zip(values, created, strict=True)}


def test_one_update_statement_decides_each_request_as_its_own_statement_would(settings) -> None:
    good, blocked = make_world(), make_world(status="blocked")
    ids = _seed(settings, good, a="1", b="2", c="3")
    before = counts()

    results = _in_one_statement(settings, update_many, [
        _request(good, "a", "1x"),           # 0: changed
        _request(good, "b", "2"),            # 1: the same value: 353, nothing changes
        _request(good, "missing", "v"),      # 2: no such key: refused (352)
        _request(good, "a", "v", license_key="LK-NO-SUCH-KEY"),  # 3: unknown license
        _request(blocked, "b", "v"),         # 4: blocked license
        _request(good, "c", None),           # 5: no value: nothing written
    ])

    assert [(r.meta_id, r.changed) for r in results] == [
        (ids["a"], True), (ids["b"], False), (None, False), (None, False), (None, False), (None, False)]
    assert results[3].view is None and results[4].view is not None
    assert [r.event_id is not None for r in results] == [True, True, False, False, False, False]
    events = {e.id: e for e in new_outbox_events(before)}
    assert set(events) == {results[0].event_id, results[1].event_id}
    updated, unchanged = events[results[0].event_id], events[results[1].event_id]
    assert (updated.type, updated.request_id, updated.subject_id) == ("license_key_meta.updated", "rid-a", ids["a"])
    assert {k: updated.payload["data"][k] for k in ("value", "previous_value", "version", "key")} == {
        "value": "1x", "previous_value": "1", "version": 2, "key": "a"}
    assert (unchanged.type, unchanged.request_id, "data" in unchanged.payload) == (
        "license_key_meta.update_unchanged", "rid-b", False)
    assert {row.key: (row.value, row.version) for row in meta_rows(good.license_key)} == {
        "a": ("1x", 2), "b": ("2", 1), "c": ("3", 1)}


def test_one_delete_statement_decides_each_request_as_its_own_statement_would(settings) -> None:
    good, other = make_world(), make_world()
    ids = _seed(settings, good, a="1", b="2")
    other_ids = _seed(settings, other, a="9")
    before = counts()

    results = _in_one_statement(settings, delete_many, [
        _request(good, "a"),                  # 0
        _request(good, "missing"),            # 1: refused (251)
        _request(other, "a", rid="rid-other-a"),  # 2: the same key name on another license
        _request(good, None),                 # 3: no key: nothing deleted
        _request(good, "b", license_key="LK-NO-SUCH-KEY"),  # 4: unknown license
    ])

    assert [r.meta_id for r in results] == [ids["a"], None, other_ids["a"], None, None]
    assert [r.event_id is not None for r in results] == [True, False, True, False, False]
    events = {e.id: e for e in new_outbox_events(before)}
    assert {(e.type, e.subject_id, e.request_id, e.payload["data"]["version"]) for e in events.values()} == {
        ("license_key_meta.deleted", ids["a"], "rid-a", 2),
        ("license_key_meta.deleted", other_ids["a"], "rid-other-a", 2)}
    assert events[results[0].event_id].request_id == "rid-a"
    assert events[results[2].event_id].payload["data"]["license_key"] == other.license_key
    assert [row.key for row in meta_rows(good.license_key)] == ["b"]
    assert meta_rows(other.license_key) == []


def test_one_read_statement_answers_and_audits_each_request_as_its_own_statement_would(settings) -> None:
    full, empty = make_world(), make_world()
    _seed(settings, full, zeta="z", Alpha="A", beta="b")
    before = counts()

    results = _in_one_statement(settings, read_many, [
        _request(full, None, rid="all"),       # 0: every key, in byte order
        _request(full, "beta", rid="one"),     # 1
        _request(full, "missing", rid="none"),  # 2: not found: refused (4541), no event from the statement
        _request(empty, None, rid="empty"),    # 3: a license without keys: an empty list, audited
        _request(full, None, license_key="LK-NO-SUCH-KEY", rid="unknown"),  # 4
    ])

    assert [[m["key"] for m in r.meta] for r in results] == [["Alpha", "beta", "zeta"], ["beta"], [], [], []]
    assert results[4].view is None
    events = {e.id: e for e in new_outbox_events(before)}
    assert len(events) == 3
    assert [events[r.event_id].request_id if r.event_id else None for r in results] == [
        "all", "one", None, "empty", None]
    assert {e.type for e in events.values()} == {"license_key_meta.read"}


@pytest.mark.parametrize("run", [update_many, delete_many])
def test_an_update_or_delete_statement_refuses_two_requests_for_one_row(settings, run) -> None:
    world = make_world()
    with pytest.raises(ValueError, match="twice"):
        _in_one_statement(settings, run, [_request(world, "k", "1"), _request(world, "k", "2")])


def test_a_burst_of_updates_of_different_keys_shares_statements(settings) -> None:
    world = make_world(capabilities=["create-license-key-meta", "update-license-key-meta"])
    _seed(settings, world, **{f"u{i}": "old" for i in range(BURST)})
    forms = [world.form(key=f"u{i}", value=f"new {i}") for i in range(BURST)]

    responses, batches, items = asyncio.run(_burst(settings, forms, Operation.UPDATE))

    assert Counter(r.json()["response"]["code"] for r in responses) == Counter({353: BURST})
    assert {row.key: row.value for row in meta_rows(world.license_key)} == {f"u{i}": f"new {i}" for i in range(BURST)}
    assert items == BURST
    assert batches < BURST, "concurrent requests should have shared statements"



def test_a_duplicate_in_a_create_batch_over_the_cap_is_over_the_cap_too(settings) -> None:
    world = make_world()
    _seed(settings, world, taken="1")

    results = _in_one_statement(settings, lambda conn, batch: lookup_and_write_many(conn, batch, max_keys=1),
                                [_request(world, "new", "a"), _request(world, "new", "b")])

    assert [(r.meta_id, r.over_cap, r.key_exists) for r in results] == [(None, True, False), (None, True, False)]
    assert [row.key for row in meta_rows(world.license_key)] == ["taken"]
