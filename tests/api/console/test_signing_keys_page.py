"""The signing keys page: rotate a scope, revoke a key only after confirming, both audited as the console key."""

from __future__ import annotations

from sqlalchemy import select
from starlette.testclient import TestClient

from domain.platform.database import unit_of_work
from domain.signing.models import SigningKey, SigningKeyState
from tests.api.console.conftest import ConsoleKey, csrf_of
from tests.conftest import make_world
from tests.webhook_support import outbox_events


def _keys(scope: str) -> dict[str, SigningKeyState]:
    with unit_of_work() as session:
        return {row.kid: row.state for row in session.scalars(select(SigningKey).where(SigningKey.scope == scope))}


def test_rotate_then_revoke_after_confirmation(signed_in: TestClient, operator_key: ConsoleKey) -> None:
    scope = f"product:{make_world(own_key=True).product_id}"
    [active] = _keys(scope)
    page = signed_in.get("/console/signing-keys")
    assert page.status_code == 200 and active in page.text
    csrf = csrf_of(page.text)

    rotated = signed_in.post("/console/signing-keys/rotate", data={"csrf": csrf, "scope": scope})
    assert rotated.status_code == 200 and "→ pending" in rotated.text
    [pending] = [kid for kid, state in _keys(scope).items() if state == SigningKeyState.PENDING]

    asked = signed_in.post("/console/signing-keys/revoke", data={"csrf": csrf, "kid": pending})
    assert "Yes, revoke this key" in asked.text
    assert _keys(scope)[pending] == SigningKeyState.PENDING
    revoked = signed_in.post("/console/signing-keys/revoke", data={"csrf": csrf, "kid": pending, "confirm": pending})
    assert revoked.status_code == 200 and _keys(scope)[pending] == SigningKeyState.REVOKED
    actors = {e.payload["actor"] for e in outbox_events("signing_key.created") + outbox_events("signing_key.revoked")
              if e.payload["kid"] == pending}
    assert actors == {f"console:{operator_key.id}"}


def test_unknown_scope_is_explained(signed_in: TestClient) -> None:
    csrf = csrf_of(signed_in.get("/console/signing-keys").text)
    response = signed_in.post("/console/signing-keys/rotate", data={"csrf": csrf, "scope": "<b>nope</b>"})
    assert response.status_code == 422 and "unknown scope" in response.text and "<b>nope</b>" not in response.text
