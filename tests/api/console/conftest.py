"""Console test support: a console-capable API key, a client signed in through the real sign-in form, an
injected clock, and delivery rows written as the webhook worker writes them."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from domain.access import api_keys
from domain.access.models import ApiKey
from domain.license_meta.codes import CONSOLE_CAPABILITY
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks.models import WebhookAttempt, WebhookDelivery
from domain.webhooks.states import AttemptOutcome, DeliveryStatus
from tests.conftest import CLIENT_IP

STARTED = dt.datetime(2026, 3, 1, 11, 59, tzinfo=dt.UTC)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def settings(webhook_settings: Settings) -> Settings:
    """Loopback endpoints allowed, on a clean endpoint table."""
    return webhook_settings


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class ConsoleKey:
    id: int
    secret: str


def console_key(capabilities: tuple[str, ...] = (CONSOLE_CAPABILITY,)) -> ConsoleKey:
    """An API key holding exactly these capabilities."""
    with unit_of_work() as session:
        issued = api_keys.create_api_key(session, name=f"console {uuid.uuid4().hex[:8]}",
                                         capabilities=list(capabilities))
        return ConsoleKey(issued.row.id, issued.secret)


def deactivate(key_id: int) -> None:
    with unit_of_work() as session:
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(active=False))


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def sign_in(client: TestClient, secret: str) -> None:
    page = client.get("/console/sign-in")
    response = client.post("/console/sign-in", data={"api_key": secret, "csrf": csrf_of(page.text)},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def console(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    """A client of a fresh app whose console reads ``clock``."""
    from api.app import create_app

    with TestClient(create_app(settings), client=(CLIENT_IP, 40000)) as test_client:
        test_client.app.state.console_clock = clock  # type: ignore[attr-defined]
        yield test_client


@pytest.fixture
def operator_key(settings: Settings) -> ConsoleKey:
    return console_key()


@pytest.fixture
def signed_in(console: TestClient, operator_key: ConsoleKey) -> TestClient:
    sign_in(console, operator_key.secret)
    return console


def add_deliveries(endpoint_id: int, count: int, *, status: DeliveryStatus = DeliveryStatus.SUCCEEDED,
                   excerpt: str = "ok") -> list[int]:
    """Delivery rows with one attempt each, as the delivery worker leaves them."""
    ids = []
    with unit_of_work() as session:
        for _ in range(count):
            row = WebhookDelivery(event_id=uuid.uuid4().int >> 66, endpoint_id=endpoint_id,
                                  msg_id=f"msg_{uuid.uuid4().hex}", event_type="license_key_meta.created",
                                  body="{}", status=status, attempts=1)
            session.add(row)
            session.flush()
            session.add(WebhookAttempt(delivery_id=row.id, attempt_no=1, started_at=STARTED, duration_ms=12,
                                       outcome=AttemptOutcome.SUCCESS, status_code=200, response_excerpt=excerpt))
            ids.append(row.id)
    return ids
