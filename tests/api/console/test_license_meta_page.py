"""The license metadata page: rows, their audit history, values rendered inert, look-ups audited masked."""

from __future__ import annotations

from sqlalchemy import delete, select
from starlette.testclient import TestClient

from domain.events.audit import record_events
from domain.events.models import AuditRecord, OutboxEvent
from domain.platform.database import unit_of_work
from tests.api.console.conftest import ConsoleKey, csrf_of
from tests.conftest import make_world
from tests.webhook_support import outbox_events


def test_rows_and_history_of_a_license_key(signed_in: TestClient, operator_key: ConsoleKey) -> None:
    world = make_world()
    value = "<script>alert('x')</script>" + "v" * 10_000
    created = signed_in.post("/api/v1/create-license-key-meta", data=world.form(key="colour", value=value))
    assert created.json()["response"]["code"] == 453
    with unit_of_work() as session:
        session.execute(delete(AuditRecord))
        pending = list(session.scalars(select(OutboxEvent.id).where(OutboxEvent.audited_at.is_(None))))
    with unit_of_work() as session:
        record_events(session, pending)

    csrf = csrf_of(signed_in.get("/console/license-meta").text)
    page = signed_in.post("/console/license-meta", data={"csrf": csrf, "license_key": world.license_key,
                                                         "meta_key": "colour"})
    assert page.status_code == 200
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text and "<script>" not in page.text
    assert "license_key_meta.created" in page.text
    [event] = [e for e in outbox_events("console.license_meta_read") if e.payload["api_key_id"] == operator_key.id]
    assert world.license_key not in str(event.payload) and event.payload["detail"]["found"] is True
    with unit_of_work() as session:
        session.execute(delete(AuditRecord))


def test_unknown_license_key_says_so(signed_in: TestClient) -> None:
    csrf = csrf_of(signed_in.get("/console/license-meta").text)
    page = signed_in.post("/console/license-meta", data={"csrf": csrf, "license_key": "LK-NOPE"})
    assert page.status_code == 200 and "No license key matches." in page.text
