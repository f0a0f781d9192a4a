"""Idempotency-Key on the real metadata endpoints: a retried mutation gets its first answer back and writes
nothing, whatever the operation (docs/api.md, "Idempotency keys")."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter

import httpx
from sqlalchemy import select, update
from starlette.testclient import TestClient

from domain.events.models import OutboxEvent
from domain.idempotency.models import IdempotencyKey
from domain.license_meta.codes import (
    CREATE_META_CAPABILITY,
    DELETE_META_CAPABILITY,
    UPDATE_META_CAPABILITY,
)
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from tests.api.conftest import counts, meta_rows, new_outbox_events
from tests.conftest import CLIENT_IP, make_world

MUTATIONS = [CREATE_META_CAPABILITY, UPDATE_META_CAPABILITY, DELETE_META_CAPABILITY]


def path(operation: str) -> str:
    return f"/api/v1/{operation}-license-key-meta"


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def new_key() -> str:
    return f"retry-{uuid.uuid4()}"


def test_a_retried_create_gets_its_453_and_meta_id_back_byte_for_byte(shared_client: TestClient) -> None:
    world = make_world()
    form, key = world.form(), new_key()
    first = shared_client.post(path("create"), data=form, headers=keyed(key))
    before = counts()
    again = shared_client.post(path("create"), data=form, headers=keyed(key))
    assert first.json()["response"]["code"] == 453
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["x-signature-key-id"] == first.headers["x-signature-key-id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    after = counts()
    assert after.meta == before.meta, "a replay wrote a row"
    [event] = new_outbox_events(before)  # audited as a replay, and nothing else: no webhook event
    assert event.type == "license_key_meta.idempotent_replay" and event.outcome_code == 453
    assert len(meta_rows(world.license_key)) == 1


def test_without_a_key_the_retry_is_the_vendor_452(shared_client: TestClient) -> None:
    world = make_world()
    form = world.form()
    assert shared_client.post(path("create"), data=form).json()["response"]["code"] == 453
    assert shared_client.post(path("create"), data=form).json()["response"]["code"] == 452


def test_update_and_delete_replay_their_first_answer(shared_client: TestClient) -> None:
    world = make_world(capabilities=MUTATIONS)
    form = world.form(value="one")
    assert shared_client.post(path("create"), data=form).json()["response"]["code"] == 453
    update_key, delete_key = new_key(), new_key()
    updated = shared_client.post(path("update"), data={**form, "value": "two"}, headers=keyed(update_key))
    replayed = shared_client.post(path("update"), data={**form, "value": "two"}, headers=keyed(update_key))
    assert updated.json()["response"]["code"] == 353 and replayed.content == updated.content
    [row] = meta_rows(world.license_key)
    assert (row.value, row.version) == ("two", 2), "a replayed update bumped the version"
    deleted = shared_client.post(path("delete"), data=form, headers=keyed(delete_key))
    replayed = shared_client.post(path("delete"), data=form, headers=keyed(delete_key))
    assert deleted.json()["response"]["code"] == 252 and replayed.content == deleted.content
    assert replayed.headers["idempotent-replayed"] == "true"


def test_the_same_key_with_other_parameters_is_4220(shared_client: TestClient) -> None:
    world = make_world()
    key = new_key()
    shared_client.post(path("create"), data=world.form(key="colour"), headers=keyed(key))
    reused = shared_client.post(path("create"), data=world.form(key="size"), headers=keyed(key))
    assert reused.status_code == 422
    assert reused.json()["response"]["code"] == 4220
    assert reused.json()["response"]["message"] == "Idempotency key reused with different parameters"
    assert [row.key for row in meta_rows(world.license_key)] == ["colour"]


def test_keys_of_one_api_key_do_not_bind_another(shared_client: TestClient) -> None:
    first, second = make_world(), make_world()
    key = new_key()
    a = shared_client.post(path("create"), data=first.form(key="shared"), headers=keyed(key))
    b = shared_client.post(path("create"), data=second.form(key="shared"), headers=keyed(key))
    assert a.json()["response"]["code"] == b.json()["response"]["code"] == 453
    assert "idempotent-replayed" not in b.headers


def test_the_v1_alias_shares_the_key_with_its_api_v1_path(shared_client: TestClient) -> None:
    world = make_world()
    form, key = world.form(), new_key()
    first = shared_client.post(path("create"), data=form, headers=keyed(key))
    again = shared_client.post("/v1/create-license-key-meta", data=form, headers=keyed(key))
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"


def test_a_malformed_key_is_a_signed_400_and_nothing_is_written(shared_client: TestClient) -> None:
    world = make_world()
    before = counts()
    refused = shared_client.post(path("create"), data=world.form(), headers=keyed("x" * 256))
    assert refused.status_code == 400
    inner = refused.json()["response"]
    assert inner["code"] == 901 and list(inner["errors"]) == ["idempotency_key"]
    assert counts().meta == before.meta


def test_an_expired_key_is_free_again(shared_client: TestClient, settings: Settings) -> None:
    world = make_world()
    key = new_key()
    shared_client.post(path("create"), data=world.form(key="first"), headers=keyed(key))
    with unit_of_work() as session:
        session.execute(update(IdempotencyKey).where(IdempotencyKey.key == key)
                        .values(expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    reused = shared_client.post(path("create"), data=world.form(key="second"), headers=keyed(key))
    assert reused.json()["response"]["code"] == 453
    assert [row.key for row in meta_rows(world.license_key)] == ["first", "second"]


def test_twenty_concurrent_creates_with_one_key_write_once(settings: Settings) -> None:
    world = make_world()
    form, key = world.form(), new_key()

    async def post_together() -> list[httpx.Response]:
        from api.app import create_app

        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://keymeta") as client:
                return list(await asyncio.gather(
                    *(client.post(path("create"), data=form, headers=keyed(key)) for _ in range(20))))

    responses = asyncio.run(post_together())
    outcomes = Counter((r.status_code, r.json()["response"]["code"]) for r in responses)
    assert outcomes[(200, 453)] >= 1 and set(outcomes) <= {(200, 453), (409, 4090)}, outcomes
    fresh = [r for r in responses if r.status_code == 200 and "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1, "more than one request ran the create"
    assert all(r.content == fresh[0].content for r in responses if r.status_code == 200)
    assert len(meta_rows(world.license_key)) == 1
    with unit_of_work() as session:
        created = session.scalars(select(OutboxEvent).where(OutboxEvent.type == "license_key_meta.created",
                                                            OutboxEvent.request_id.is_not(None))
                                  .where(OutboxEvent.subject_id == meta_rows(world.license_key)[0].id)).all()
    assert len(created) == 1, "one webhook event for one write"
