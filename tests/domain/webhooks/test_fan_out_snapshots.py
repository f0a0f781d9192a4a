"""Fan-out builds every meta event's payload from the snapshot its write statement took, never from the row as
it is at fan-out time (docs/events.md)."""

from __future__ import annotations

import json

from sqlalchemy import select
from starlette.testclient import TestClient

from domain.events.models import OutboxEvent
from domain.license_meta.codes import META_CAPABILITIES
from domain.platform.database import unit_of_work
from domain.webhooks import fan_out
from tests.conftest import CLIENT_IP, make_world
from tests.webhook_support import register


def _post(client: TestClient, operation: str, world, **form: str) -> dict:
    data = {"api_key": world.api_key, "license_key": world.license_key, "identifier": world.identifier, **form}
    return client.post(f"/api/v1/{operation}-license-key-meta", data=data).json()["response"]


def _events(meta_id: int) -> list[OutboxEvent]:
    with unit_of_work() as session:
        # Other kinds of events (an endpoint's) have subjects of their own, whose ids may equal this one.
        return list(session.scalars(select(OutboxEvent).where(OutboxEvent.subject_id == meta_id,
                                                              OutboxEvent.type.startswith("license_key_meta."))
                                    .order_by(OutboxEvent.id)))


def test_created_updated_deleted_payloads_come_from_their_snapshots(settings, sink) -> None:
    from api.app import create_app

    register(sink.url("/all"))
    world = make_world(capabilities=list(META_CAPABILITIES))
    with TestClient(create_app(settings), client=(CLIENT_IP, 40000)) as client:
        meta_id = _post(client, "create", world, key="color", value="blue")["meta_id"]
        _post(client, "update", world, key="color", value="red")
        _post(client, "update", world, key="color", value="red")  # unchanged: no webhook event
        _post(client, "delete", world, key="color")
    events = _events(meta_id)
    assert [e.type for e in events] == ["license_key_meta.created", "license_key_meta.updated",
                                        "license_key_meta.update_unchanged", "license_key_meta.deleted"]
    with unit_of_work() as session:
        result = fan_out.fan_out(session, [e.id for e in events])
        payloads = {d.event_type: json.loads(d.body) for d in
                    session.scalars(select(fan_out.WebhookDelivery)
                                    .where(fan_out.WebhookDelivery.id.in_(result.delivery_ids)))}
    assert set(payloads) == {"license_key_meta.created", "license_key_meta.updated", "license_key_meta.deleted"}
    created, updated, deleted = (payloads[f"license_key_meta.{t}"]["data"] for t in ("created", "updated", "deleted"))
    # The row is gone and was changed before fan-out: created still says what was created.
    assert list(created) == ["meta_id", "version", "license_key", "product_id", "identifier", "key", "value",
                             "created_at"]
    assert (created["meta_id"], created["version"], created["value"]) == (meta_id, 1, "blue")
    assert created["license_key"] == world.license_key and created["product_id"] == world.product_id
    assert (updated["version"], updated["value"], updated["previous_value"]) == (2, "red", "blue")
    assert updated["updated_at"].endswith("Z") and updated["created_at"] == created["created_at"]
    assert (deleted["version"], deleted["value"], deleted["key"]) == (3, "red", "color")
    assert deleted["deleted_at"].endswith("Z") and "previous_value" not in deleted
    for payload in payloads.values():
        assert list(payload) == ["type", "timestamp", "data"] and payload["timestamp"].endswith("Z")
        assert not {"api_key_id", "source_ip", "user_agent", "license_key_masked"} & set(payload["data"])
