"""Every webhook body the service really sends validates against its type's schema in the event catalog.

Events come from the real producers (the API's write path, the signing-key state machine), are fanned out and
delivered by ``domain.webhooks.jobs`` to a real HTTP sink, and each body received is checked with
``jsonschema`` against ``domain.events.catalog``.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

from domain import catalog
from domain.events.catalog import schema_of
from domain.events.outbox import SIGNING_KEY_EVENT_TYPES
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.signing import rotation
from domain.signing.keys import product_scope
from domain.signing.master_key import load_master_key
from domain.webhooks import jobs
from tests.conftest import World, make_world
from tests.webhook_sink import Sink
from tests.webhook_support import outbox_events, register

CREATED, UPDATED, DELETED = "license_key_meta.created", "license_key_meta.updated", "license_key_meta.deleted"
META_CAPABILITIES = ["create-license-key-meta", "update-license-key-meta", "delete-license-key-meta"]


def schema_errors(payload: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema_of(payload["type"]),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path)) or '(payload)'}: {error.message}"
            for error in validator.iter_errors(payload)]


def deliver(sink: Sink, event_ids: list[int]) -> list[dict[str, Any]]:
    """Fan these events out to one endpoint subscribed to every type, deliver them, return the verified bodies."""
    path = f"/all-{uuid.uuid4().hex[:8]}"
    endpoint = register(sink.url(path))
    created = jobs.fan_out_events(event_ids)
    assert len(created) == len(event_ids), "every event should have become a delivery"
    report = jobs.deliver(created)
    assert report.outcomes == {"succeeded": len(created)}
    received = sink.at(path)
    assert len(received) == len(event_ids)
    return [Webhook(endpoint.secret).verify(request.body, request.headers) for request in received]


def assert_every_body_validates(payloads: list[dict[str, Any]]) -> None:
    problems = {f"{p['type']} #{i}": errs for i, p in enumerate(payloads) if (errs := schema_errors(p))}
    assert not problems, "bodies that break their schema:\n" + json.dumps(problems, indent=1)


def meta_request(client: TestClient, endpoint: str, world: World, **fields: str) -> dict[str, Any]:
    form = {"api_key": world.api_key, "license_key": world.license_key, "identifier": world.identifier, **fields}
    response = client.post(f"/api/v1/{endpoint}", data=form)
    assert response.status_code == 200, response.text
    inner: dict[str, Any] = response.json()["response"]
    return inner


def meta_event_ids(*types: str) -> list[int]:
    return sorted(event.id for event_type in types for event in outbox_events(event_type))


# --- license_key_meta.* ------------------------------------------------------------------------------------
def test_created_events_sent_after_a_453_validate(settings: Settings, client: TestClient, world: World,
                                                  sink: Sink) -> None:
    values = ["test value", "v\u00e9/1 \u2603 \"quoted\"", "x" * 10240]
    for value in values:
        assert meta_request(client, "create-license-key-meta", world, key=f"k-{uuid.uuid4().hex[:8]}",
                            value=value)["code"] == 453
    payloads = deliver(sink, meta_event_ids(CREATED))
    assert [p["type"] for p in payloads] == [CREATED] * len(values)
    assert sorted(p["data"]["value"] for p in payloads) == sorted(values)
    assert_every_body_validates(payloads)


def test_updated_events_sent_after_a_353_validate(settings: Settings, client: TestClient, sink: Sink) -> None:
    world = make_world(capabilities=META_CAPABILITIES)
    key = f"k-{uuid.uuid4().hex[:8]}"
    assert meta_request(client, "create-license-key-meta", world, key=key, value="first")["code"] == 453
    assert meta_request(client, "update-license-key-meta", world, key=key, value="second")["code"] == 353
    assert meta_request(client, "update-license-key-meta", world, key=key, value="second")["code"] == 353  # no event
    assert meta_request(client, "update-license-key-meta", world, key=key, value="third")["code"] == 353
    payloads = deliver(sink, meta_event_ids(CREATED, UPDATED))
    assert_every_body_validates(payloads)
    updates = sorted((p for p in payloads if p["type"] == UPDATED), key=lambda p: p["data"]["version"])
    assert [(p["data"]["version"], p["data"]["previous_value"], p["data"]["value"]) for p in updates] == [
        (2, "first", "second"), (3, "second", "third")]


def test_deleted_events_sent_after_a_252_validate(settings: Settings, client: TestClient, sink: Sink) -> None:
    world = make_world(capabilities=META_CAPABILITIES)
    key = f"k-{uuid.uuid4().hex[:8]}"
    assert meta_request(client, "create-license-key-meta", world, key=key, value="first")["code"] == 453
    assert meta_request(client, "update-license-key-meta", world, key=key, value="last")["code"] == 353
    assert meta_request(client, "delete-license-key-meta", world, key=key)["code"] == 252
    payloads = deliver(sink, meta_event_ids(CREATED, UPDATED, DELETED))
    assert_every_body_validates(payloads)
    [deleted] = [p for p in payloads if p["type"] == DELETED]
    assert (deleted["data"]["version"], deleted["data"]["value"]) == (3, "last")


# --- signing_key.* -----------------------------------------------------------------------------------------
def own_key_scope(settings: Settings) -> str:
    """A product with its own signing key: its scope is this test's alone (the shared global key stays put)."""
    with unit_of_work() as session:
        product = catalog.create_product(session, name=f"schemas {uuid.uuid4().hex[:8]}", own_key=True,
                                         master_key=load_master_key(settings))
        return product_scope(product.id)


def run(fn: Any, *args: Any, **kwargs: Any) -> rotation.Outcome:
    with unit_of_work() as session:
        outcome: rotation.Outcome = fn(session, *args, **kwargs)
        return outcome


def test_signing_key_events_of_every_transition_validate(settings: Settings, sink: Sink) -> None:
    scope = own_key_scope(settings)
    outcomes = [
        run(rotation.rotate, scope, immediate=True, settings=settings),  # created, retired, activated
        run(rotation.rotate, scope, settings=settings),  # created (pending)
    ]
    [pending] = [t.kid for t in outcomes[-1].transitions]
    retired = next(t.kid for t in outcomes[0].transitions if t.to_state == "retired")
    active = next(t.kid for t in outcomes[0].transitions if t.to_state == "active")
    outcomes += [
        run(rotation.revoke, pending, settings=settings),  # pending -> revoked
        run(rotation.revoke, retired, settings=settings),  # retired -> revoked
        run(rotation.revoke, active, settings=settings),  # active -> revoked, then a replacement
    ]
    transitions = [t for outcome in outcomes for t in outcome.transitions]
    assert {t.from_state for t in transitions if t.event_type == "signing_key.revoked"} == \
        {"pending", "retired", "active"}

    payloads = deliver(sink, [t.event_id for t in transitions])
    assert Counter(p["type"] for p in payloads) == Counter(t.event_type for t in transitions)
    assert {p["type"] for p in payloads} == set(SIGNING_KEY_EVENT_TYPES)
    assert_every_body_validates(payloads)


@pytest.mark.parametrize("event_type", SIGNING_KEY_EVENT_TYPES)
def test_a_body_that_breaks_the_signing_key_schema_is_caught(event_type: str) -> None:
    """The check above can fail: a real-shaped body with a field the service must not send is refused."""
    body = {"type": event_type, "timestamp": "2026-11-26T18:00:00Z",
            "data": {"kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "scope": "product:7", "product_id": 7,
                     "from_state": None, "to_state": "pending", "reason": "r", "key_size": 2048, "actor": "beat"}}
    assert schema_errors(body)
