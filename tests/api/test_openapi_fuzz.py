"""Schemathesis against the live app, in-process (ASGI): every operation of the published schema.

No server error, no response outside the schema (status, content type, headers, body), and every answer of
the signed endpoint verifies with a key of the signing_keys table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from domain.access import api_keys
from domain.access.api_keys import MANAGE_WEBHOOKS_CAPABILITY
from domain.license_meta.codes import CREATE_META_CAPABILITY
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.signing.verification import verify_envelope
from domain.webhooks import ssrf
from tests.api.conftest import ENDPOINT, public_keys
from tests.conftest import World, make_world

MAX_EXAMPLES = 50
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def live_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from api.app import create_app

    # Webhook URLs are fuzzed too: answer DNS without the network, with a public address.
    monkeypatch.setattr(ssrf, "resolve", lambda host, port, timeout: [ipaddress.ip_address("93.184.216.34")])
    app = create_app(settings)
    yield app
    # Schemathesis starts the app's lifespan on first use and keeps it; stop it before the database goes.
    from schemathesis.python import asgi

    lifespan = asgi._LIFESPANS.pop(id(app), None)
    if lifespan is not None:
        lifespan.stop()


def _admin_key() -> str:
    with unit_of_work() as session:
        issued = api_keys.create_api_key(session, name="fuzz admin",
                                         capabilities=[MANAGE_WEBHOOKS_CAPABILITY, CREATE_META_CAPABILITY])
        return issued.secret


def test_schemathesis_finds_no_server_error_no_schema_violation_and_no_unsigned_answer(live_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", live_app)
    world = make_world()
    headers = {"X-API-Key": _admin_key()}
    keys = public_keys()
    stats = {"calls": 0, "signed": 0}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]

    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if operation.path == ENDPOINT and operation.method.upper() == "POST":
            modes.append(GenerationMode.NEGATIVE)  # bodies and parameters that break the schema
        for mode in modes:
            _fuzz(operation, mode, world, headers, keys, stats)

    print(f"schemathesis: {len(operations)} operations, {stats['calls']} calls, {stats['signed']} signed verified")
    assert stats["signed"] >= MAX_EXAMPLES


def _fuzz(operation: Any, mode: GenerationMode, world: World, headers: dict[str, str], keys: dict[str, str],
          stats: dict[str, int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        if operation.path == ENDPOINT and isinstance(case.body, dict) and "api_key" not in case.body:
            _aim_deeper(case, world)
        response = case.call(headers=headers)
        stats["calls"] += 1
        case.validate_response(response, checks=CHECKS)
        if operation.path == ENDPOINT:
            [signed_by] = response.headers["x-signature-key-id"]  # schemathesis: name -> [values]
            assert verify_envelope(response.content, keys, preferred_kid=signed_by) == signed_by
            stats["signed"] += 1

    run()


def _aim_deeper(case: Any, world: World) -> None:
    """Bodies with no api_key (the header's admin key then applies) get a real license key and identifier
    where absent, so generated keys and values reach the checks past step 7."""
    body = case.body
    body.setdefault("license_key", world.license_key)
    body.setdefault("identifier", world.identifier)


@pytest.mark.parametrize("media_type", ["application/x-www-form-urlencoded", "multipart/form-data",
                                        "application/json"])
def test_schema_declares_every_encoding_key_location_and_signed_status(live_app: Any, media_type: str) -> None:
    from starlette.testclient import TestClient

    with TestClient(live_app) as client:
        document = client.get("/openapi.json").json()
    item = document["paths"][ENDPOINT]
    post = item["post"]
    assert media_type in post["requestBody"]["content"]
    assert {"ApiKeyBearer", "ApiKeyHeader"} <= set(document["components"]["securitySchemes"])
    assert {"200", "400", "401", "403", "405", "413", "429"} <= set(post["responses"])
    assert set(item) == {"post", "get", "put", "patch", "delete"}
    assert item["get"]["responses"]["405"]["headers"]["Allow"]
    for path, methods in document["paths"].items():
        if path.startswith("/api/v1/webhook-endpoints"):
            for operation in methods.values():
                assert {"401", "403"} <= set(operation["responses"]) and operation["security"]
