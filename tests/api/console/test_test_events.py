"""Send a test event from the console and the portal (a CSRF-checked form), the admin API and the CLI: one
``webhook.test`` delivery to that endpoint only, audited with the actor (``console:<key id>``,
``portal:<endpoint id>``, ``api``, ``cli``)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from starlette.testclient import TestClient

from cli import main
from domain.access.api_keys import MANAGE_WEBHOOKS_CAPABILITY
from domain.console import portal
from domain.events.catalog import WEBHOOK_TEST
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings, get_settings
from domain.signing.master_key import load_master_key
from domain.webhooks import endpoints, test_events
from domain.webhooks.audit_events import CLI
from domain.webhooks.states import DeliveryStatus
from tests.api.console.conftest import Clock, ConsoleKey, csrf_of
from tests.conftest import make_world
from tests.webhook_support import deliveries, outbox_events, register


def _link(endpoint_id: int, clock: Clock) -> str:
    with unit_of_work() as session:
        return portal.issue_link(session, load_master_key(get_settings()), endpoint_id, ttl_seconds=3600,
                                 actor=CLI, now=clock.now).path


def test_the_endpoint_page_sends_a_test_event_to_that_endpoint(signed_in: TestClient,
                                                               operator_key: ConsoleKey) -> None:
    mine, other = register("http://127.0.0.1:9/mine"), register("http://127.0.0.1:9/other")
    page = signed_in.get(f"/console/endpoints/{mine.id}")
    assert f'action="/console/endpoints/{mine.id}/test"' in page.text
    response = signed_in.post(f"/console/endpoints/{mine.id}/test", data={"csrf": csrf_of(page.text)},
                              follow_redirects=False)
    assert response.status_code == 303, response.text
    [row] = deliveries(event_type=WEBHOOK_TEST)
    assert (row.endpoint_id, row.status) == (mine.id, DeliveryStatus.PENDING)
    assert response.headers["location"] == f"/console/deliveries/{row.id}"
    assert deliveries(endpoint_id=other.id) == []
    [event] = outbox_events(test_events.TEST_SENT, subject_id=mine.id)
    assert event.payload["actor"] == f"console:{operator_key.id}"
    assert event.payload["api_key_id"] == operator_key.id


def test_the_console_refuses_a_test_event_without_its_csrf_token(signed_in: TestClient) -> None:
    mine = register("http://127.0.0.1:9/mine")
    assert signed_in.post(f"/console/endpoints/{mine.id}/test", data={"csrf": "forged"}).status_code == 403
    assert deliveries(endpoint_id=mine.id) == []


def test_a_disabled_endpoint_gets_no_test_event_from_the_console(signed_in: TestClient) -> None:
    mine = register("http://127.0.0.1:9/mine")
    with unit_of_work() as session:
        endpoints.set_enabled(session, mine.id, False, CLI)
    csrf = csrf_of(signed_in.get(f"/console/endpoints/{mine.id}").text)
    response = signed_in.post(f"/console/endpoints/{mine.id}/test", data={"csrf": csrf})
    assert response.status_code == 422 and "enable it" in response.text
    assert deliveries(endpoint_id=mine.id) == []


def test_the_portal_sends_a_test_event_to_its_own_endpoint_only(console: TestClient, clock: Clock) -> None:
    mine, other = register("http://127.0.0.1:9/mine"), register("http://127.0.0.1:9/other")
    path = _link(mine.id, clock)
    csrf = csrf_of(console.get(path).text)
    assert console.post(f"{path}/test", data={"csrf": "forged"}).status_code == 403
    # An endpoint id added to the form is ignored: the link names the endpoint.
    response = console.post(f"{path}/test", data={"csrf": csrf, "endpoint_id": str(other.id)},
                            follow_redirects=False)
    assert response.status_code == 303, response.text
    [row] = deliveries(event_type=WEBHOOK_TEST)
    assert row.endpoint_id == mine.id
    assert response.headers["location"] == f"{path}/deliveries/{row.id}"
    assert deliveries(endpoint_id=other.id) == []
    [event] = outbox_events(test_events.TEST_SENT, subject_id=mine.id)
    assert event.payload["actor"] == f"portal:{mine.id}"
    assert console.get(response.headers["location"]).status_code == 200


def test_the_admin_api_sends_a_test_event_to_one_endpoint(console: TestClient) -> None:
    mine, other = register("http://127.0.0.1:9/mine"), register("http://127.0.0.1:9/other")
    admin = make_world(capabilities=[MANAGE_WEBHOOKS_CAPABILITY])
    headers = {"Authorization": f"Bearer {admin.api_key}"}
    response = console.post(f"/api/v1/webhook-endpoints/{mine.id}/test", headers=headers)
    assert response.status_code == 202, response.text
    [row] = deliveries(event_type=WEBHOOK_TEST)
    assert response.json() == {"delivery_id": row.id, "msg_id": row.msg_id, "event_type": WEBHOOK_TEST}
    assert row.endpoint_id == mine.id and deliveries(endpoint_id=other.id) == []
    [event] = outbox_events(test_events.TEST_SENT, subject_id=mine.id)
    assert (event.payload["actor"], event.payload["api_key_id"]) == ("api", admin.api_key_id)
    assert console.post("/api/v1/webhook-endpoints/999999999/test", headers=headers).status_code == 404
    assert console.post(f"/api/v1/webhook-endpoints/{mine.id}/test").status_code == 401


def test_the_cli_sends_a_test_event_to_one_endpoint(settings: Settings) -> None:
    mine, other = register("http://127.0.0.1:9/mine"), register("http://127.0.0.1:9/other")
    result = CliRunner().invoke(main, ["webhooks", "test", str(mine.id), "--json"])
    assert result.exit_code == 0, result.output
    [row] = deliveries(event_type=WEBHOOK_TEST)
    assert json.loads(result.output)["delivery_id"] == row.id and row.endpoint_id == mine.id
    assert deliveries(endpoint_id=other.id) == []
    [event] = outbox_events(test_events.TEST_SENT, subject_id=mine.id)
    assert event.payload["actor"] == "cli"
    refused = CliRunner().invoke(main, ["webhooks", "test", "999999999"])
    assert refused.exit_code != 0 and "no webhook endpoint" in refused.output
