"""Shared helpers of the API tests: envelope assertions, ledger counts, clients from chosen addresses."""

from __future__ import annotations

import base64
import itertools
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from domain.events.models import OutboxEvent
from domain.license_meta.models import LicenseKeyMeta
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.signing.models import SigningKey
from domain.signing.verification import verify_envelope
from tests.conftest import CLIENT_IP

ENDPOINT = "/api/v1/create-license-key-meta"

# docs/api.md, copied here on purpose: the tests must not trust domain.license_meta.codes to be right.
MESSAGES = {
    100: "Invalid API Key",
    101: "Inactive API Key",
    102: "The used API key doesn't have the required capability to access this endpoint",
    103: "API key can't be used from this IP address",
    150: "Access denied",
    215: "Identifier is required",
    210: "Invalid license key",
    204: "License key blocked",
    201: "This license key is not assigned",
    205: "License key expired",
    203: "The product associated with this license key is not active or doesn't exist",
    202: "No activation found for this license key/identifier combination",
    450: "Meta key is required",
    451: "Meta value is required",
    452: "Meta key already exists",
    453: "Metadata created",
    901: "Incorrect data found",
}
HTTP_STATUS = {100: 401, 101: 401, 102: 401, 103: 401, 150: 403}

_ip_counter = itertools.count(secrets.randbelow(60_000))


def unique_ip() -> str:
    """An address no other test uses, so block rules added by one test never touch another."""
    n = next(_ip_counter) % 65_000 + 1
    return f"198.18.{n // 256}.{n % 256}"


def public_keys() -> dict[str, str]:
    with unit_of_work() as session:
        return {row.kid: row.public_pem for row in session.scalars(select(SigningKey))}


def active_kid(scope: str) -> str | None:
    with unit_of_work() as session:
        return session.scalar(select(SigningKey.kid).where(SigningKey.scope == scope, SigningKey.state == "active"))


def _php_escape(text: str) -> str:
    return json.dumps(text, ensure_ascii=True).replace("/", "\\/")


def assert_envelope(response: Any, code: int, *, http_status: int | None = None, used: str = "global",
                    scope: str = "global") -> dict[str, Any]:
    """The response is a correctly signed envelope with exactly this code, message and status.

    ``scope`` is the signing scope whose active key must have signed (``product:<id>`` for "product").
    """
    expected_status = http_status if http_status is not None else HTTP_STATUS.get(code, 200)
    assert response.status_code == expected_status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["response", "response_base64", "private_key_used", "signature"]
    inner = body["response"]
    assert inner["code"] == code, inner
    assert inner["message"] == MESSAGES[code]
    assert list(inner)[:2] == ["code", "message"] and list(inner)[-1] == "timestamp"
    assert type(inner["timestamp"]) is int
    # The signed bytes: PHP json_encode of the response, message bytes exactly as the vendor writes them.
    decoded = base64.b64decode(body["response_base64"], validate=True)
    assert decoded.startswith(f'{{"code":{code},"message":{_php_escape(MESSAGES[code])}'.encode("ascii"))
    assert decoded.endswith(f',"timestamp":{inner["timestamp"]}}}'.encode("ascii"))
    assert body["private_key_used"] == used
    kid = verify_envelope(response.content, public_keys(), preferred_kid=response.headers["x-signature-key-id"])
    assert kid == response.headers["x-signature-key-id"]
    assert kid == active_kid(scope), f"signed by {kid}, not by the active key of {scope}"
    return inner


@dataclass(frozen=True)
class Counts:
    meta: int
    outbox: int
    last_outbox_id: int


def counts() -> Counts:
    with unit_of_work() as session:
        return Counts(
            meta=session.scalar(select(func.count()).select_from(LicenseKeyMeta)) or 0,
            outbox=session.scalar(select(func.count()).select_from(OutboxEvent)) or 0,
            last_outbox_id=session.scalar(select(func.max(OutboxEvent.id))) or 0,
        )


def new_outbox_events(since: Counts) -> list[OutboxEvent]:
    with unit_of_work() as session:
        return list(session.scalars(select(OutboxEvent).where(OutboxEvent.id > since.last_outbox_id)
                                    .order_by(OutboxEvent.id)))


def assert_refused_and_audited(before: Counts, response: Any, code: int) -> None:
    """Nothing stored but exactly one outbox event, which records this request's outcome."""
    after = counts()
    assert after.meta == before.meta, "a refused request stored meta"
    assert after.outbox == before.outbox + 1, "a request must leave exactly one outbox event"
    [event] = new_outbox_events(before)
    assert event.outcome_code == code
    assert event.request_id == response.headers["x-request-id"]


def meta_rows(license_key: str) -> list[LicenseKeyMeta]:
    from domain.catalog.models import LicenseKey

    with unit_of_work() as session:
        return list(session.scalars(
            select(LicenseKeyMeta).join(LicenseKey, LicenseKey.id == LicenseKeyMeta.license_key_id)
            .where(LicenseKey.key == license_key).order_by(LicenseKeyMeta.id)))


@pytest.fixture(scope="session")
def _client_pool(database_url: str) -> Iterator[dict[tuple[str, str], TestClient]]:
    # Depends on database_url so the apps shut down before their database is dropped.
    pool: dict[tuple[str, str], TestClient] = {}
    yield pool
    for test_client in pool.values():
        test_client.__exit__(None, None, None)


@pytest.fixture
def client_at(settings: Settings, _client_pool: dict[tuple[str, str], TestClient]) -> Callable[[str], TestClient]:
    """``client_at("192.0.2.7")``: a client whose socket peer is that address.

    The app (and its lifespan) is shared per database and address for the whole session: starting one
    costs a key unsealing and validation, and with cache TTL 0 it keeps no state between
    tests that the database does not hold.
    """
    from api.app import create_app

    def make(ip: str) -> TestClient:
        pool_key = (settings.database_url, ip)
        if pool_key not in _client_pool:
            test_client = TestClient(create_app(settings), client=(ip, 40000))
            test_client.__enter__()
            _client_pool[pool_key] = test_client
        return _client_pool[pool_key]

    return make


@pytest.fixture
def shared_client(client_at: Callable[[str], TestClient]) -> TestClient:
    """Like the ``client`` fixture (peer ``CLIENT_IP``), but one app per database for the session."""
    return client_at(CLIENT_IP)
