"""``/api/v1/webhook-endpoints``: authentication, CRUD, rotation, delivery log and replay over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from domain.access import api_keys
from domain.access.api_keys import MANAGE_WEBHOOKS_CAPABILITY
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import audit_events, jobs
from tests.conftest import CLIENT_IP, World
from tests.domain.webhooks import v1a_consumer
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import meta_events, outbox_events


@pytest.fixture
def settings(webhook_settings: Settings) -> Settings:
    """Webhook timings and allow-list of tests/webhook_support.py."""
    return webhook_settings

BASE = "/api/v1/webhook-endpoints"


def issue_key(capabilities: list[str], allowed_cidrs: list[str] | None = None) -> tuple[str, int]:
    with unit_of_work() as session:
        issued = api_keys.create_api_key(session, name="admin", capabilities=capabilities,
                                         allowed_cidrs=allowed_cidrs)
        return issued.secret, issued.row.id


@pytest.fixture
def admin(settings: Settings) -> Iterator[tuple[TestClient, int]]:
    from api.app import create_app

    secret, key_id = issue_key([MANAGE_WEBHOOKS_CAPABILITY])
    with TestClient(create_app(settings), client=(CLIENT_IP, 40000),
                    headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client, key_id


def create(client: TestClient, url: str, **extra: Any) -> dict[str, Any]:
    response = client.post(BASE, json={"url": url, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_authentication_and_capability(client: TestClient, settings: Settings) -> None:
    assert client.get(BASE).status_code == 401
    assert client.get(BASE).headers["www-authenticate"] == "Bearer"
    assert client.get(BASE, headers={"Authorization": "Bearer km_nope"}).status_code == 401
    meta_only, _ = issue_key(["create-license-key-meta"])
    response = client.get(BASE, headers={"X-API-Key": meta_only})
    assert response.status_code == 403 and "manage-webhooks" in response.json()["detail"]
    elsewhere, _ = issue_key([MANAGE_WEBHOOKS_CAPABILITY], allowed_cidrs=["10.0.0.0/8"])
    assert client.get(BASE, headers={"X-API-Key": elsewhere}).status_code == 403
    inactive, inactive_id = issue_key([MANAGE_WEBHOOKS_CAPABILITY])
    with unit_of_work() as session:
        api_keys.deactivate_api_key(session, inactive_id)
    assert client.get(BASE, headers={"X-API-Key": inactive}).status_code == 401
    good, _ = issue_key([MANAGE_WEBHOOKS_CAPABILITY])
    assert client.get(BASE, headers={"X-API-Key": good}).status_code == 200


def test_crud(admin: tuple[TestClient, int], sink: Sink) -> None:
    client, key_id = admin
    created = create(client, sink.url("/api"), event_types=["license_key_meta.created"])
    assert created["secret"].startswith("whsec_") and created["enabled"] is True
    endpoint_id = created["id"]
    fetched = client.get(f"{BASE}/{endpoint_id}").json()
    assert "secret" not in fetched and fetched["url"] == sink.url("/api")
    assert [e["id"] for e in client.get(BASE).json()["endpoints"]] == [endpoint_id]

    patched = client.patch(f"{BASE}/{endpoint_id}", json={"event_types": ["*"], "enabled": False})
    assert patched.status_code == 200 and patched.json()["event_types"] == ["*"]
    assert patched.json()["enabled"] is False and patched.json()["disabled_reason"] == "disabled by an operator"
    assert client.patch(f"{BASE}/{endpoint_id}", json={"enabled": True}).json()["enabled"] is True

    rotated = client.post(f"{BASE}/{endpoint_id}/rotate-secret", json={"overlap_seconds": 60})
    assert rotated.status_code == 200 and rotated.json()["secret_version"] == 2
    assert rotated.json()["secret"] != created["secret"] and rotated.json()["previous_secret_expires_at"]

    assert client.delete(f"{BASE}/{endpoint_id}").status_code == 204
    assert client.get(f"{BASE}/{endpoint_id}").status_code == 404
    assert client.delete(f"{BASE}/{endpoint_id}").status_code == 404
    actions = [audit_events.ENDPOINT_CREATED, audit_events.ENDPOINT_UPDATED, audit_events.ENDPOINT_DISABLED,
               audit_events.ENDPOINT_ENABLED, audit_events.ENDPOINT_SECRET_ROTATED, audit_events.ENDPOINT_DELETED]
    for action in actions:
        [event] = outbox_events(action, endpoint_id)
        assert event.payload["actor"] == "api" and event.payload["api_key_id"] == key_id
        assert event.payload["source_ip"] == CLIENT_IP and event.request_id


def test_a_v1a_endpoint_publishes_its_public_key_and_never_a_secret(admin: tuple[TestClient, int], world: World,
                                                                     sink: Sink) -> None:
    client, _ = admin
    created = create(client, sink.on("/v1a", Reply(200)), signature_scheme="v1a")
    assert created["signature_scheme"] == "v1a" and created["public_key"].startswith("whpk_")
    assert "secret" not in created
    page = client.get(f"{BASE}/{created['id']}")
    fetched = page.json()
    assert fetched["public_key"] == created["public_key"] and fetched["previous_public_key"] is None
    assert "whsk_" not in repr(created) and "whsk_" not in page.text and "whsk_" not in client.get(BASE).text
    jobs.deliver(jobs.fan_out_events(meta_events(world)))
    [request] = sink.at("/v1a")
    v1a_consumer.verify(fetched["public_key"], request.body, request.headers,
                        now=int(request.headers["webhook-timestamp"]))
    rotated = client.post(f"{BASE}/{created['id']}/rotate-secret", json={"overlap_seconds": 60}).json()
    assert "secret" not in rotated and rotated["previous_public_key"] == created["public_key"]
    assert rotated["public_key"] != created["public_key"]
    assert create(client, sink.url("/v1"))["signature_scheme"] == "v1"  # the default
    assert client.post(BASE, json={"url": sink.url("/v2"), "signature_scheme": "v2"}).status_code == 422


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"url": "https://10.0.0.1/x"}, 422, "10.0.0.1 is private"),
    ({"url": "gopher://example.com/"}, 422, "must start with https://"),
    ({"url": "https://example.com/", "event_types": ["nope"]}, 422, "unknown event type"),
    ({"url": "https://example.com/", "colour": "red"}, 422, ""),
    ({"url": 12}, 422, ""),
    ({}, 422, ""),
])
def test_bad_input(admin: tuple[TestClient, int], body: dict[str, Any], status: int, fragment: str) -> None:
    client, _ = admin
    response = client.post(BASE, json=body)
    assert response.status_code == status
    assert fragment in str(response.json()["detail"])


def test_duplicate_is_409_and_unknown_ids_404(admin: tuple[TestClient, int], sink: Sink) -> None:
    client, _ = admin
    first = create(client, sink.url("/dup"))
    response = client.post(BASE, json={"url": sink.url("/dup")})
    assert response.status_code == 409 and f"endpoint {first['id']}" in response.json()["detail"]
    other = create(client, sink.url("/dup2"))
    assert client.patch(f"{BASE}/{other['id']}", json={"url": sink.url("/dup")}).status_code == 409
    assert client.get(f"{BASE}/987654").status_code == 404
    assert client.get(f"{BASE}/987654/deliveries").status_code == 404
    assert client.post(f"{BASE}/987654/rotate-secret").status_code == 404
    assert client.get(f"{BASE}/not-a-number").status_code == 422
    assert client.post(f"{BASE}/{first['id']}/deliveries/987654/replay").status_code == 404


def test_deliveries_with_attempts_and_replay(admin: tuple[TestClient, int], world: World, sink: Sink) -> None:
    client, _ = admin
    endpoint = create(client, sink.on("/log", Reply(500, b"nope"), Reply(200)))
    created = jobs.fan_out_events(meta_events(world, 2))
    jobs.deliver(created[:1])  # 500
    jobs.deliver(created[1:])  # 200
    page = client.get(f"{BASE}/{endpoint['id']}/deliveries", params={"limit": 1}).json()
    assert [d["id"] for d in page["deliveries"]] == [created[1]] and page["next_before_id"] == created[1]
    rest = client.get(f"{BASE}/{endpoint['id']}/deliveries", params={"before_id": created[1]}).json()
    assert [d["id"] for d in rest["deliveries"]] == [created[0]] and rest["next_before_id"] is None
    log = rest["deliveries"][0]
    assert log["status"] == "pending" and log["attempt_log"][0]["status_code"] == 500
    assert log["attempt_log"][0]["response_excerpt"] == "nope"
    assert client.get(f"{BASE}/{endpoint['id']}/deliveries", params={"status": "bogus"}).status_code == 422

    # A pending delivery is re-queued for now; a finished one is sent again with the same webhook-id.
    assert client.post(f"{BASE}/{endpoint['id']}/deliveries/{created[0]}/replay").status_code == 202
    jobs.deliver(created)
    [first] = [d for d in client.get(f"{BASE}/{endpoint['id']}/deliveries").json()["deliveries"]
               if d["id"] == created[0]]
    assert first["status"] == "succeeded"
    replayed = client.post(f"{BASE}/{endpoint['id']}/deliveries/{created[0]}/replay")
    assert replayed.status_code == 202 and replayed.json()["status"] == "pending"
    jobs.deliver([created[0]])
    ids = [r.headers["webhook-id"] for r in sink.at("/log")]
    assert ids.count(first["msg_id"]) >= 2

    since = client.post(f"{BASE}/{endpoint['id']}/replay", json={"since": "2000-01-01T00:00:00Z"})
    assert since.status_code == 202 and since.json()["count"] >= 1
    assert client.post(f"{BASE}/{endpoint['id']}/replay", json={"since": "yesterday"}).status_code == 422


@pytest.mark.parametrize("path", ["/api/v1/webhook-endpoints/99999999999999999999",
                                  "/api/v1/webhook-endpoints/1/deliveries/99999999999999999999/replay",
                                  "/api/v1/webhook-endpoints/0"])
def test_ids_outside_bigint_are_422_not_a_server_error(client, path: str) -> None:
    from domain.access import api_keys
    from domain.platform.database import unit_of_work

    with unit_of_work() as session:
        secret = api_keys.create_api_key(session, name="ids", capabilities=["manage-webhooks"]).secret
    method = client.post if path.endswith("/replay") else client.get
    assert method(path, headers={"Authorization": f"Bearer {secret}"}).status_code == 422


def test_an_endpoints_share_is_set_at_creation_and_patched(admin: tuple[TestClient, int], sink: Sink) -> None:
    client, _ = admin
    created = create(client, sink.url("/share"), max_in_flight=3, rate_limit=2.5)
    assert (created["max_in_flight"], created["rate_limit"]) == (3, 2.5)
    assert (create(client, sink.url("/default"))["max_in_flight"], create(client, sink.url("/d2"))["rate_limit"]) \
        == (8, None)
    url = f"{BASE}/{created['id']}"
    patched = client.patch(url, json={"max_in_flight": 16})
    assert patched.status_code == 200 and (patched.json()["max_in_flight"], patched.json()["rate_limit"]) == (16, 2.5)
    cleared = client.patch(url, json={"rate_limit": None})  # null removes the limit; absent keeps it
    assert (cleared.json()["max_in_flight"], cleared.json()["rate_limit"]) == (16, None)
    for refused in ({"max_in_flight": 0}, {"max_in_flight": 257}, {"rate_limit": 0}, {"rate_limit": -1}):
        assert client.patch(url, json=refused).status_code == 422, refused
    assert client.get(url).json()["max_in_flight"] == 16
    [updated, *_] = outbox_events(audit_events.ENDPOINT_UPDATED, created["id"])
    assert updated.payload["detail"] == {"max_in_flight": 16}
