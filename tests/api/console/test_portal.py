"""The consumer portal: a signed, expiring link that reaches one endpoint and nothing else."""

from __future__ import annotations

import re

from click.testing import CliRunner
from starlette.testclient import TestClient

from cli.portal import portal_link
from domain.access.api_keys import MANAGE_WEBHOOKS_CAPABILITY
from domain.console import portal
from domain.platform.database import unit_of_work
from domain.platform.settings import get_settings
from domain.signing.master_key import load_master_key
from domain.webhooks.audit_events import CLI
from domain.webhooks.states import DeliveryStatus
from tests.api.console.conftest import Clock, add_deliveries, csrf_of
from tests.cli.invoke import run
from tests.conftest import make_world
from tests.webhook_support import deliveries, outbox_events, register

PORTAL = re.compile(r"/console/portal/[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")


def _link(endpoint_id: int, clock: Clock, ttl: float = 3600) -> str:
    with unit_of_work() as session:
        link = portal.issue_link(session, load_master_key(get_settings()), endpoint_id, ttl_seconds=ttl, actor=CLI,
                                 now=clock.now)
    return link.path


def test_portal_shows_its_endpoints_deliveries_only(console: TestClient, clock: Clock) -> None:
    mine, other = register("http://127.0.0.1:9/mine"), register("http://127.0.0.1:9/other")
    [my_delivery] = add_deliveries(mine.id, 1)
    [other_delivery] = add_deliveries(other.id, 1)
    path = _link(mine.id, clock)
    page = console.get(path)
    assert page.status_code == 200
    assert f"{path}/deliveries/{my_delivery}" in page.text
    assert f"/deliveries/{other_delivery}" not in page.text and "127.0.0.1:9/other" not in page.text
    # An endpoint id slipped into the query string is ignored: the link alone decides the scope.
    assert f"/deliveries/{other_delivery}" not in console.get(f"{path}?endpoint_id={other.id}").text
    detail = console.get(f"{path}/deliveries/{my_delivery}")
    assert detail.status_code == 200 and "Attempts" in detail.text
    assert console.get(f"{path}/event-types").status_code == 200


def test_editing_ids_in_urls_or_forms_cannot_reach_another_endpoint(console: TestClient, clock: Clock) -> None:
    mine, other = register("http://127.0.0.1:9/mine"), register("http://127.0.0.1:9/other")
    [my_delivery] = add_deliveries(mine.id, 1)
    [other_delivery] = add_deliveries(other.id, 1, status=DeliveryStatus.FAILED)
    path = _link(mine.id, clock)
    csrf = csrf_of(console.get(f"{path}/deliveries/{my_delivery}").text)
    assert console.get(f"{path}/deliveries/{other_delivery}").status_code == 404
    replayed = console.post(f"{path}/deliveries/{other_delivery}/replay", data={"csrf": csrf})
    assert replayed.status_code == 404
    [row] = deliveries(id=other_delivery)
    assert row.status == DeliveryStatus.FAILED
    # A link whose claims were edited to name the other endpoint no longer verifies.
    body, mac = path.rsplit("/", 1)[1].split(".")
    forged_body = portal.sign_link(b"\x00" * 32, other.id, 3600, clock.now).token.split(".")[0]
    for forged in (f"{forged_body}.{mac}", f"{body}.{mac[:-2]}AA"):
        response = console.get(f"/console/portal/{forged}")
        assert response.status_code == 403 and "127.0.0.1:9/other" not in response.text


def test_portal_replay_needs_its_form_token_and_is_audited_as_the_portal(console: TestClient, clock: Clock) -> None:
    mine = register("http://127.0.0.1:9/mine")
    [delivery] = add_deliveries(mine.id, 1, status=DeliveryStatus.FAILED)
    path = _link(mine.id, clock)
    assert console.post(f"{path}/deliveries/{delivery}/replay", data={"csrf": "forged"}).status_code == 403
    assert deliveries(id=delivery)[0].status == DeliveryStatus.FAILED
    csrf = csrf_of(console.get(f"{path}/deliveries/{delivery}").text)
    response = console.post(f"{path}/deliveries/{delivery}/replay", data={"csrf": csrf})
    assert response.status_code == 200
    assert deliveries(id=delivery)[0].status == DeliveryStatus.PENDING
    [event] = outbox_events("webhook_delivery.replayed", subject_id=delivery)
    assert event.payload["actor"] == f"portal:{mine.id}"


def test_expired_link_shows_nothing(console: TestClient, clock: Clock) -> None:
    mine = register("http://127.0.0.1:9/mine")
    path = _link(mine.id, clock, ttl=600)
    clock.advance(599)
    assert console.get(path).status_code == 200
    clock.advance(1)
    response = console.get(path)
    assert response.status_code == 403 and "expired" in response.text and "127.0.0.1:9/mine" not in response.text


def test_admin_api_issues_a_portal_link(console: TestClient, clock: Clock) -> None:
    mine = register("http://127.0.0.1:9/mine")
    admin = make_world(capabilities=[MANAGE_WEBHOOKS_CAPABILITY])
    headers = {"Authorization": f"Bearer {admin.api_key}"}
    response = console.post(f"/api/v1/webhook-endpoints/{mine.id}/portal-link", json={"ttl_seconds": 600},
                            headers=headers)
    assert response.status_code == 201, response.text
    assert console.get(response.json()["path"]).status_code == 200
    [event] = outbox_events(portal.PORTAL_LINK_ISSUED, subject_id=mine.id)
    assert event.payload["api_key_id"] == admin.api_key_id
    assert console.post("/api/v1/webhook-endpoints/999999999/portal-link", headers=headers).status_code == 404
    assert console.post(f"/api/v1/webhook-endpoints/{mine.id}/portal-link").status_code == 401


def test_cli_prints_a_working_portal_link(console: TestClient) -> None:
    mine = register("http://127.0.0.1:9/mine")
    result = CliRunner().invoke(portal_link, [str(mine.id), "--ttl", "30m", "--base-url", "https://km.example"])
    assert result.exit_code == 0, result.output
    match = PORTAL.search(result.output)
    assert match and f"https://km.example{match.group(0)}" in result.output
    assert console.get(match.group(0)).status_code == 200
    refused = run("webhooks", "portal-link", str(mine.id), "--ttl", "soon")  # a crash would raise here
    assert refused.exit_code == 2 and "is not a duration" in refused.stderr


def test_portal_rotates_only_its_own_endpoints_secret(console: TestClient, clock: Clock) -> None:
    from tests.api.console.test_operator_console import csrf_free_secret
    from tests.webhook_support import outbox_events as events

    mine, other = register("http://127.0.0.1:9/mine"), register("http://127.0.0.1:9/other")
    path = _link(mine.id, clock)
    csrf = csrf_of(console.get(path).text)
    assert console.post(f"{path}/rotate-secret", data={"csrf": "forged"}).status_code == 403
    # An endpoint id added to the form is ignored: the link names the endpoint.
    response = console.post(f"{path}/rotate-secret", data={"csrf": csrf, "endpoint_id": str(other.id)})
    assert response.status_code == 200
    assert csrf_free_secret(response.text).startswith("whsec_")
    [event] = events("webhook_endpoint.secret_rotated", subject_id=mine.id)
    assert event.payload["actor"] == f"portal:{mine.id}"
    assert events("webhook_endpoint.secret_rotated", subject_id=other.id) == []
    assert csrf_free_secret(response.text) not in console.get(path).text
