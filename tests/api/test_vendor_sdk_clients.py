"""Clients of the vendor's SDKs (docs/api.md): management keys may omit the identifier, and an API key's signature
scheme decides what ``signature`` covers; ``X-Signature-Scheme`` names it on every answer."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import select
from starlette.testclient import TestClient

from domain.access import api_keys
from domain.access.checks import api_key_digest
from domain.access.models import ApiKey
from domain.license_meta.codes import META_CAPABILITIES
from domain.platform.database import unit_of_work
from domain.signing.models import SigningKey
from domain.signing.rsa_keys import load_public_pem
from tests.api.conftest import counts, meta_rows, new_outbox_events
from tests.conftest import World, make_world


@pytest.fixture
def client(shared_client: TestClient) -> TestClient:
    return shared_client


def issue(*, management: bool = False, scheme: str = "response_base64") -> str:
    with unit_of_work() as session:
        return api_keys.create_api_key(session, name=f"sdk {uuid.uuid4().hex[:6]}",
                                       capabilities=list(META_CAPABILITIES), management=management,
                                       signature_scheme=scheme).secret


def path(operation: str) -> str:
    return f"/api/v1/{operation}-license-key-meta"


def sdk_post(client: TestClient, operation: str, api_key: str, body: dict[str, Any], **headers: str) -> Any:
    """As the vendor's PHP SDK posts: PHP's default json_encode of the body, the key as a Bearer token."""
    raw = json.dumps({**body, "api_key": api_key}, ensure_ascii=True).replace("/", "\\/")
    return client.post(path(operation), content=raw.encode("ascii"),
                       headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json", **headers})


def envelope_bytes(body: dict[str, Any]) -> bytes:
    """PHP's json_encode(<envelope without signature>, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), written
    here by hand rather than with the encoder under test (no U+2028/U+2029 occur in these tests)."""
    without = {name: value for name, value in body.items() if name != "signature"}
    return json.dumps(without, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def verifies(response: Any, data: bytes) -> bool:
    kid = response.headers["x-signature-key-id"]
    with unit_of_work() as session:
        pem = session.scalar(select(SigningKey.public_pem).where(SigningKey.kid == kid))
    try:
        load_public_pem(pem).verify(base64.b64decode(response.json()["signature"]), data, padding.PKCS1v15(),
                                    hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def signed_as_envelope(response: Any) -> bool:
    return verifies(response, envelope_bytes(response.json()))


def signed_as_response_base64(response: Any) -> bool:
    return verifies(response, response.json()["response_base64"].encode("ascii"))


def code(response: Any) -> int:
    return int(response.json()["response"]["code"])


# --- management keys ----------------------------------------------------------------------------------------
def test_management_key_without_identifier_creates_and_records_no_writer(client: TestClient, settings) -> None:
    world = make_world(activate=False)  # no activation at all: step 12 does not apply
    key = issue(management=True)
    before = counts()
    response = sdk_post(client, "create", key, {"license_key": world.license_key, "meta_key": "plan/a",
                                                "meta_value": "path/to/é 日本"})
    assert code(response) == 453, response.text
    [row] = meta_rows(world.license_key)
    assert (row.key, row.value, row.identifier) == ("plan/a", "path/to/é 日本", None)
    [event] = new_outbox_events(before)
    assert event.type == "license_key_meta.created" and event.payload["data"]["identifier"] is None


def test_management_key_without_identifier_updates_gets_and_deletes(client: TestClient, settings) -> None:
    world = make_world(capabilities=list(META_CAPABILITIES))
    key = issue(management=True)
    body = {"license_key": world.license_key, "meta_key": "colour"}
    assert code(sdk_post(client, "create", key, {**body, "meta_value": "red"})) == 453
    # The activated identifier wrote it last; an identifier-less update records no writer again.
    assert code(client.post(path("update"), data=world.form(key="colour", value="green"))) == 353
    assert meta_rows(world.license_key)[0].identifier == world.identifier
    assert code(sdk_post(client, "update", key, {**body, "meta_value": "blue"})) == 353
    assert meta_rows(world.license_key)[0].identifier is None
    found = sdk_post(client, "get", key, body)
    assert code(found) == 4540 and found.json()["response"]["meta"][0]["value"] == "blue"
    assert code(sdk_post(client, "delete", key, body)) == 252
    assert meta_rows(world.license_key) == []


def test_ordinary_key_without_identifier_is_still_215(client: TestClient, settings) -> None:
    world = make_world()
    before = counts()
    response = sdk_post(client, "create", issue(), {"license_key": world.license_key, "meta_key": "k",
                                                    "meta_value": "v"})
    assert code(response) == 215
    assert counts().meta == before.meta


@pytest.mark.parametrize("operation", ["create", "update", "delete", "get"])
def test_management_key_with_an_unknown_license_is_210(client: TestClient, settings, operation: str) -> None:
    response = sdk_post(client, operation, issue(management=True),
                        {"license_key": "NO-SUCH-LICENSE", "meta_key": "k", "meta_value": "v"})
    assert code(response) == 210


def test_management_key_still_gets_the_license_checks(client: TestClient, settings) -> None:
    blocked = make_world(status="blocked")
    response = sdk_post(client, "create", issue(management=True),
                        {"license_key": blocked.license_key, "meta_key": "k", "meta_value": "v"})
    assert code(response) == 204


def test_management_key_that_sends_an_identifier_needs_its_activation(client: TestClient, settings) -> None:
    world = make_world()
    key = issue(management=True)
    body = {"license_key": world.license_key, "meta_key": "k", "meta_value": "v"}
    assert code(sdk_post(client, "create", key, {**body, "identifier": "not-activated.example"})) == 202
    assert code(sdk_post(client, "create", key, {**body, "identifier": world.identifier})) == 453
    assert meta_rows(world.license_key)[0].identifier == world.identifier


# --- signature schemes --------------------------------------------------------------------------------------
def test_envelope_scheme_signs_the_envelope_not_response_base64(client: TestClient, settings) -> None:
    world = make_world()
    response = sdk_post(client, "create", issue(management=True, scheme="envelope"),
                        {"license_key": world.license_key, "meta_key": "k", "meta_value": "v"})
    assert code(response) == 453
    assert response.headers["x-signature-scheme"] == "envelope"
    assert signed_as_envelope(response) and not signed_as_response_base64(response)


def test_default_scheme_signs_response_base64_and_says_so(client: TestClient, world: World) -> None:
    response = client.post(path("create"), data=world.form())
    assert code(response) == 453
    assert response.headers["x-signature-scheme"] == "response_base64"
    assert signed_as_response_base64(response) and not signed_as_envelope(response)


def test_envelope_scheme_covers_refusals_and_an_errors_object(client: TestClient, settings) -> None:
    world = make_world()
    key = issue(management=True, scheme="envelope")
    refusals = [
        sdk_post(client, "create", key, {"license_key": world.license_key, "meta_key": "k",
                                         "meta_value": "x" * (10 * 1024 + 1)}),  # 901 with errors
        sdk_post(client, "delete", key, {"license_key": world.license_key, "meta_key": "absent"}),  # 251
        client.put(path("create"), headers={"Authorization": f"Bearer {key}"}),  # 405: no parameters parsed
    ]
    assert [code(r) for r in refusals] == [901, 251, 901]
    assert refusals[0].json()["response"]["errors"] == {"value": ["must be at most 10240 bytes (got 10241)"]}
    assert refusals[0].headers["x-signature-scheme"] == "envelope" and signed_as_envelope(refusals[0])
    assert refusals[1].headers["x-signature-scheme"] == "envelope" and signed_as_envelope(refusals[1])
    # Nothing was parsed, so no key is known: the default scheme.
    assert refusals[2].headers["x-signature-scheme"] == "response_base64" and signed_as_response_base64(refusals[2])


def test_an_unknown_key_gets_the_default_scheme(client: TestClient, settings) -> None:
    response = sdk_post(client, "create", "km_unknown", {"license_key": "LK", "meta_key": "k", "meta_value": "v"})
    assert code(response) == 100
    assert response.headers["x-signature-scheme"] == "response_base64" and signed_as_response_base64(response)


def test_no_envelope_carries_an_empty_object(client: TestClient, settings) -> None:
    world = make_world()
    key = issue(management=True, scheme="envelope")
    answers = [sdk_post(client, "create", key, {"license_key": world.license_key, "meta_key": "k", "meta_value": "v"}),
               sdk_post(client, "get", key, {"license_key": world.license_key}),
               sdk_post(client, "create", key, {"license_key": world.license_key})]
    for answer in answers:
        assert b"{}" not in answer.content, answer.text
        assert signed_as_envelope(answer)


# --- idempotency ------------------------------------------------------------------------------------------------
def test_idempotency_refusals_and_replays_keep_the_callers_scheme(client: TestClient, settings) -> None:
    world = make_world()
    key = issue(management=True, scheme="envelope")
    body = {"license_key": world.license_key, "meta_key": "k", "meta_value": "v"}
    retry = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = sdk_post(client, "create", key, body, **retry)
    replay = sdk_post(client, "create", key, body, **retry)
    reused = sdk_post(client, "create", key, {**body, "meta_value": "other"}, **retry)
    malformed = sdk_post(client, "create", key, body, **{"Idempotency-Key": ""})
    assert [code(r) for r in (first, replay, reused, malformed)] == [453, 453, 4220, 901]
    assert replay.content == first.content and replay.headers["x-signature-scheme"] == "envelope"
    for answer in (reused, malformed):
        assert answer.headers["x-signature-scheme"] == "envelope" and signed_as_envelope(answer), answer.text


def test_idempotency_refusal_for_an_ordinary_key_stays_response_base64(client: TestClient, world: World) -> None:
    retry = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    assert code(client.post(path("create"), data=world.form(key="a"), headers=retry)) == 453
    reused = client.post(path("create"), data=world.form(key="b"), headers=retry)
    assert code(reused) == 4220
    assert reused.headers["x-signature-scheme"] == "response_base64" and signed_as_response_base64(reused)


def test_audit_names_the_key_of_a_901(client: TestClient, settings) -> None:
    world = make_world()
    key = issue(management=True)
    with unit_of_work() as session:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.digest == api_key_digest(key)))
    before = counts()
    sdk_post(client, "create", key, {"license_key": world.license_key, "meta_key": "k", "meta_value": 5})
    [event] = new_outbox_events(before)
    assert event.outcome_code == 901 and event.payload["api_key_id"] == key_id
