"""The operator console over HTTP: sign-in and sessions, CSRF, endpoints, deliveries, the audit log."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from starlette.testclient import TestClient

from api.console.web import CONTENT_SECURITY_POLICY
from domain.access.api_keys import MANAGE_WEBHOOKS_CAPABILITY
from domain.events.audit import record_events
from domain.events.models import AuditRecord, OutboxEvent
from domain.platform.database import unit_of_work
from domain.webhooks.models import WebhookEndpoint
from tests.api.console.conftest import (
    Clock,
    ConsoleKey,
    add_deliveries,
    console_key,
    csrf_of,
    deactivate,
    sign_in,
)
from tests.webhook_support import outbox_events, register

SINK_URL = "http://127.0.0.1:9/hook"


def _endpoints() -> list[WebhookEndpoint]:
    with unit_of_work() as session:
        return list(session.scalars(select(WebhookEndpoint)))


def test_signing_in_sets_a_strict_http_only_session_cookie(console: TestClient, operator_key: ConsoleKey) -> None:
    page = console.get("/console/sign-in")
    response = console.post("/console/sign-in", data={"api_key": operator_key.secret, "csrf": csrf_of(page.text)},
                            follow_redirects=False)
    assert response.status_code == 303
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("km_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    overview = console.get("/console")
    assert overview.status_code == 200 and "<h1>Overview</h1>" in overview.text
    assert overview.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY and "script-src" not in CONTENT_SECURITY_POLICY
    [event] = outbox_events("console.signed_in", subject_id=operator_key.id)
    assert event.payload["actor"] == f"console:{operator_key.id}"


def test_session_cookie_is_secure_over_https(settings, clock: Clock, operator_key: ConsoleKey) -> None:
    from api.app import create_app

    with TestClient(create_app(settings), base_url="https://testserver") as client:
        client.app.state.console_clock = clock  # type: ignore[attr-defined]
        page = client.get("/console/sign-in")
        response = client.post("/console/sign-in", data={"api_key": operator_key.secret,
                                                         "csrf": csrf_of(page.text)}, follow_redirects=False)
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("km_console="))
    assert "Secure" in cookie


def test_key_without_the_console_capability_cannot_sign_in(console: TestClient) -> None:
    key = console_key((MANAGE_WEBHOOKS_CAPABILITY,))
    page = console.get("/console/sign-in")
    response = console.post("/console/sign-in", data={"api_key": key.secret, "csrf": csrf_of(page.text)})
    assert response.status_code == 401
    assert "cannot sign in" in response.text
    assert console.get("/console", follow_redirects=False).headers["location"].startswith("/console/sign-in")


def test_sign_in_without_its_form_token_is_refused(console: TestClient, operator_key: ConsoleKey) -> None:
    response = console.post("/console/sign-in", data={"api_key": operator_key.secret, "csrf": "forged"})
    assert response.status_code == 403
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_idle_session_expires(signed_in: TestClient, clock: Clock) -> None:
    clock.advance(29 * 60)
    assert signed_in.get("/console", follow_redirects=False).status_code == 200  # activity restarts the idle clock
    clock.advance(29 * 60)
    assert signed_in.get("/console", follow_redirects=False).status_code == 200
    clock.advance(31 * 60)
    response = signed_in.get("/console", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console/sign-in?reason=expired"


def test_deactivated_key_ends_its_session_on_the_next_request(signed_in: TestClient,
                                                              operator_key: ConsoleKey) -> None:
    assert signed_in.get("/console/endpoints", follow_redirects=False).status_code == 200
    deactivate(operator_key.id)
    response = signed_in.get("/console/endpoints", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console/sign-in?reason=key-refused"


def test_tampered_session_cookie_is_refused(signed_in: TestClient) -> None:
    token = signed_in.cookies.get("km_console", path="/console")
    assert token
    body, mac = token.split(".")
    signed_in.cookies.clear()
    signed_in.cookies.set("km_console", body + "." + mac[::-1], path="/console")
    assert signed_in.get("/console", follow_redirects=False).status_code == 303


def test_form_without_the_session_csrf_token_changes_nothing(signed_in: TestClient) -> None:
    response = signed_in.post("/console/endpoints", data={"url": SINK_URL, "csrf": "forged"})
    assert response.status_code == 403
    assert _endpoints() == []


def test_created_endpoint_shows_its_secret_once_and_is_audited(signed_in: TestClient,
                                                              operator_key: ConsoleKey) -> None:
    page = signed_in.get("/console/endpoints")
    response = signed_in.post("/console/endpoints", data={"url": SINK_URL, "csrf": csrf_of(page.text),
                                                          "events": ["license_key_meta.created"]})
    assert response.status_code == 200
    [endpoint] = _endpoints()
    secret = csrf_free_secret(response.text)
    assert secret.startswith("whsec_")
    assert secret not in signed_in.get(f"/console/endpoints/{endpoint.id}").text
    assert secret not in signed_in.get("/console/endpoints").text
    [event] = outbox_events("webhook_endpoint.created", subject_id=endpoint.id)
    assert event.payload["actor"] == f"console:{operator_key.id}"
    assert event.payload["api_key_id"] == operator_key.id


def csrf_free_secret(html: str) -> str:
    marker = 'id="secret" class="secret" type="text" readonly value="'
    return html.split(marker, 1)[1].split('"', 1)[0]


def test_an_endpoint_added_with_v1a_shows_its_public_key_and_keeps_the_private_key(signed_in: TestClient) -> None:
    page = signed_in.get("/console/endpoints")
    assert 'name="scheme" value="v1" checked' in page.text
    response = signed_in.post("/console/endpoints", data={"url": SINK_URL, "csrf": csrf_of(page.text),
                                                          "scheme": "v1a"})
    assert response.status_code == 200
    [endpoint] = _endpoints()
    public_key = csrf_free_secret(response.text)
    assert public_key.startswith("whpk_") and endpoint.signature_scheme == "v1a"
    detail = signed_in.get(f"/console/endpoints/{endpoint.id}").text
    assert public_key in detail
    assert "whsk_" not in response.text + detail + signed_in.get("/console/endpoints").text


def test_an_unknown_signature_scheme_is_refused_on_the_form(signed_in: TestClient) -> None:
    page = signed_in.get("/console/endpoints")
    response = signed_in.post("/console/endpoints", data={"url": SINK_URL, "csrf": csrf_of(page.text),
                                                          "scheme": "v2"})
    assert response.status_code == 422
    assert "unknown signature scheme" in response.text and _endpoints() == []


def test_refused_endpoint_url_is_explained_on_the_form(signed_in: TestClient) -> None:
    page = signed_in.get("/console/endpoints")
    response = signed_in.post("/console/endpoints", data={"url": "ftp://example.com/x", "csrf": csrf_of(page.text)})
    assert response.status_code == 422
    assert "must start with https://" in response.text and _endpoints() == []


def test_disable_then_rotate_are_audited_as_the_console_key(signed_in: TestClient, operator_key: ConsoleKey) -> None:
    endpoint = register(SINK_URL)
    csrf = csrf_of(signed_in.get(f"/console/endpoints/{endpoint.id}").text)
    response = signed_in.post(f"/console/endpoints/{endpoint.id}/enabled", data={"enabled": "false", "csrf": csrf})
    assert response.status_code == 200 and "Enable</button>" in response.text
    rotated = signed_in.post(f"/console/endpoints/{endpoint.id}/rotate-secret", data={"csrf": csrf})
    new_secret = csrf_free_secret(rotated.text)
    assert new_secret.startswith("whsec_") and new_secret != endpoint.secret
    actors = {e.type: e.payload["actor"] for e in outbox_events("webhook_endpoint.disabled", endpoint.id)
              + outbox_events("webhook_endpoint.secret_rotated", endpoint.id)}
    assert actors == {"webhook_endpoint.disabled": f"console:{operator_key.id}",
                      "webhook_endpoint.secret_rotated": f"console:{operator_key.id}"}


def test_deliveries_page_by_keyset_and_filter(signed_in: TestClient) -> None:
    endpoint = register(SINK_URL)
    ids = add_deliveries(endpoint.id, 55)
    first = signed_in.get(f"/console/deliveries?endpoint_id={endpoint.id}")
    assert first.status_code == 200
    assert f'href="/console/deliveries/{ids[-1]}"' in first.text
    assert f'href="/console/deliveries/{ids[4]}"' not in first.text
    older = f"/console/deliveries?before_id={ids[5]}&amp;endpoint_id={endpoint.id}"
    assert older in first.text
    second = signed_in.get(older.replace("&amp;", "&"))
    assert all(f'href="/console/deliveries/{i}"' in second.text for i in ids[:5])
    assert "Older deliveries" not in second.text
    failed = signed_in.get(f"/console/deliveries?endpoint_id={endpoint.id}&status=failed")
    assert "No deliveries." in failed.text


def test_consumer_text_is_rendered_inert(signed_in: TestClient) -> None:
    endpoint = register(SINK_URL)
    [delivery] = add_deliveries(endpoint.id, 1, excerpt="<script>alert(1)</script>" + "x" * 10_000)
    page = signed_in.get(f"/console/deliveries/{delivery}")
    assert page.status_code == 200
    assert "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_audit_chain_is_verified_from_the_page(signed_in: TestClient) -> None:
    with unit_of_work() as session:
        session.execute(delete(AuditRecord))
        pending = list(session.scalars(select(OutboxEvent.id).where(OutboxEvent.audited_at.is_(None))))
    with unit_of_work() as session:  # what the audit worker does with these events
        record_events(session, pending)
    page = signed_in.get("/console/audit")
    assert "console.signed_in" in page.text
    verified = signed_in.post("/console/audit/verify", data={"csrf": csrf_of(page.text)})
    assert f"Chain intact: {len(pending)} records verified" in verified.text
    with unit_of_work() as session:
        session.execute(update(AuditRecord).where(AuditRecord.seq == 1).values(action="forged"))
    broken = signed_in.post("/console/audit/verify", data={"csrf": csrf_of(page.text)})
    assert "Chain broken at record 1" in broken.text
    with unit_of_work() as session:
        session.execute(delete(AuditRecord))


def test_sign_in_sign_out(console: TestClient) -> None:
    key = console_key()
    sign_in(console, key.secret)
    page = console.get("/console")
    assert console.post("/console/sign-out", data={"csrf": csrf_of(page.text)},
                        follow_redirects=False).status_code == 303
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_database_outage_is_a_plain_page(signed_in: TestClient) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    state = signed_in.app.state  # type: ignore[attr-defined]
    working, state.engine = state.engine, create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        response = signed_in.get("/console/endpoints")
    finally:
        state.engine = working
    assert response.status_code == 503
    assert "The database cannot be reached" in response.text and "Traceback" not in response.text


def test_delete_asks_first_then_deletes_and_is_audited(signed_in: TestClient, operator_key: ConsoleKey) -> None:
    endpoint = register(SINK_URL)
    csrf = csrf_of(signed_in.get(f"/console/endpoints/{endpoint.id}").text)
    asked = signed_in.post(f"/console/endpoints/{endpoint.id}/delete", data={"csrf": csrf})
    assert f"Yes, delete endpoint {endpoint.id}" in asked.text and len(_endpoints()) == 1
    done = signed_in.post(f"/console/endpoints/{endpoint.id}/delete", data={"csrf": csrf, "confirm": str(endpoint.id)})
    assert done.status_code == 200 and _endpoints() == []
    [event] = outbox_events("webhook_endpoint.deleted", subject_id=endpoint.id)
    assert event.payload["actor"] == f"console:{operator_key.id}"


def test_replay_since_requeues_the_endpoints_finished_deliveries(signed_in: TestClient) -> None:
    from domain.webhooks.states import DeliveryStatus
    from tests.webhook_support import deliveries

    endpoint = register(SINK_URL)
    ids = add_deliveries(endpoint.id, 2, status=DeliveryStatus.FAILED)
    csrf = csrf_of(signed_in.get(f"/console/endpoints/{endpoint.id}").text)
    response = signed_in.post(f"/console/endpoints/{endpoint.id}/replay",
                              data={"csrf": csrf, "since": "2000-01-01T00:00"})
    assert response.status_code == 200
    assert [d.status for d in deliveries(endpoint_id=endpoint.id)] == [DeliveryStatus.PENDING] * len(ids)
    refused = signed_in.post(f"/console/endpoints/{endpoint.id}/replay", data={"csrf": csrf, "since": "soon"})
    assert refused.status_code == 422


def test_edit_changes_url_and_events_and_is_audited(signed_in: TestClient, operator_key: ConsoleKey) -> None:
    endpoint = register(SINK_URL)
    csrf = csrf_of(signed_in.get(f"/console/endpoints/{endpoint.id}").text)
    response = signed_in.post(f"/console/endpoints/{endpoint.id}/edit",
                              data={"csrf": csrf, "url": "http://127.0.0.1:9/edited",
                                    "events": ["license_key_meta.deleted"]})
    assert response.status_code == 200 and "http://127.0.0.1:9/edited" in response.text
    [row] = _endpoints()
    assert (row.url, row.event_types) == ("http://127.0.0.1:9/edited", ["license_key_meta.deleted"])
    [event] = outbox_events("webhook_endpoint.updated", subject_id=endpoint.id)
    assert event.payload["actor"] == f"console:{operator_key.id}"
    refused = signed_in.post(f"/console/endpoints/{endpoint.id}/edit", data={"csrf": csrf, "url": "nope"})
    assert refused.status_code == 422
