from __future__ import annotations

import base64
import json

from sqlalchemy import select

from domain.license_meta.models import LicenseKeyMeta
from domain.platform.database import unit_of_work
from domain.signing.models import SigningKey
from domain.signing.verification import verify_envelope


def _public_keys() -> dict[str, str]:
    with unit_of_work() as session:
        return {row.kid: row.public_pem for row in session.scalars(select(SigningKey))}


def test_created_then_exists_with_signed_envelopes(client, world) -> None:
    form = world.form(key="test-key", value="test value")
    first = client.post("/api/v1/create-license-key-meta", data=form)
    assert first.status_code == 200
    body = first.json()
    assert body["response"]["code"] == 453
    assert body["response"]["message"] == "Metadata created"
    assert list(body["response"]) == ["code", "message", "meta_id", "timestamp"]
    assert body["private_key_used"] == "global"
    assert verify_envelope(first.content, _public_keys()) == first.headers["x-signature-key-id"]
    assert json.loads(base64.b64decode(body["response_base64"])) == body["response"]
    assert first.headers["x-request-id"]

    second = client.post("/api/v1/create-license-key-meta", data=form)
    assert second.json()["response"]["code"] == 452
    with unit_of_work() as session:
        rows = session.scalars(select(LicenseKeyMeta).where(LicenseKeyMeta.key == "test-key",
                                                            LicenseKeyMeta.identifier == world.identifier)).all()
    assert [row.id for row in rows] == [body["response"]["meta_id"]]


def test_padded_identifier_matches_its_activation(client, world) -> None:
    response = client.post("/api/v1/create-license-key-meta", data=world.form(identifier=f"  {world.identifier} "))
    assert response.json()["response"]["code"] == 453


def test_wrong_method_gets_a_signed_405_and_is_audited(client, world) -> None:
    from sqlalchemy import func

    from domain.events.models import OutboxEvent

    with unit_of_work() as session:
        before = session.scalar(select(func.count()).select_from(OutboxEvent))
    response = client.get("/api/v1/create-license-key-meta", params=world.form())
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    body = response.json()
    assert body["response"]["code"] == 901 and body["response"]["errors"] == {"method": ["use POST, not GET"]}
    assert verify_envelope(response.content, _public_keys()) == response.headers["x-signature-key-id"]
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == before + 1


def test_a_database_error_on_the_signed_endpoint_is_a_signed_503_with_retry_after(client, world, monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    async def unreachable(_request):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(client.app.state.license_meta, "handle", unreachable)
    response = client.post("/api/v1/create-license-key-meta", data=world.form())
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    body = response.json()
    assert (body["response"]["code"], body["response"]["message"]) == (5030, "Service temporarily unavailable")
    assert verify_envelope(response.content, _public_keys()) == response.headers["x-signature-key-id"]
