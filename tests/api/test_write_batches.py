"""Concurrent create-meta requests share write statements (domain.platform.write_batches), and a shared
statement decides every request exactly as a statement of its own would."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import httpx

from domain.license_meta.codes import Code
from domain.license_meta.rules import license_decision
from domain.license_meta.store import MetaWriteRequest, lookup_and_write_many
from domain.platform.database import make_async_engine
from domain.platform.models import utcnow
from tests.api.conftest import ENDPOINT, counts, meta_rows, new_outbox_events
from tests.conftest import CLIENT_IP, make_world

BURST = 24


async def _burst(settings, forms: list[dict[str, str]]) -> tuple[list[httpx.Response], int, int]:
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keymeta") as client:
            responses = list(await asyncio.gather(*(client.post(ENDPOINT, data=form) for form in forms)))
        batcher = app.state.license_meta.write_batcher
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
