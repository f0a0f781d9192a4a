"""Webhook test support: short retry timings, loopback allow-listed, a clean endpoint table, a real HTTP sink."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import delete, func, select

from domain.catalog.models import LicenseKey
from domain.events.models import OutboxEvent
from domain.events.outbox import META_CREATED, add_event
from domain.license_meta.models import LicenseKeyMeta
from domain.platform.database import reset_engines, unit_of_work
from domain.platform.settings import Settings, get_settings
from domain.signing.master_key import load_master_key
from domain.webhooks import delivery, endpoints, jobs, ssrf
from domain.webhooks.audit_events import CLI
from domain.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests import processes
from tests.conftest import World, configure

# Short everything: a whole retry schedule runs in under two seconds, and no test sleeps for real minutes.
WEBHOOK_ENV = {
    "KEYMETA_WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
    "KEYMETA_WEBHOOK_RETRY_SCHEDULE": "0.2,0.5,1",
    "KEYMETA_WEBHOOK_CONNECT_TIMEOUT_SECONDS": "1",
    "KEYMETA_WEBHOOK_READ_TIMEOUT_SECONDS": "0.5",
    "KEYMETA_WEBHOOK_TOTAL_TIMEOUT_SECONDS": "1.5",
    "KEYMETA_WEBHOOK_LEASE_SECONDS": "5",
    "KEYMETA_WEBHOOK_RERING_SECONDS": "1",
}


_first_event_id = 0
T = TypeVar("T")


@pytest.fixture
def webhook_settings(database_url: str, master_key_text: str, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The suite's settings plus short webhook timings and loopback allow-listed, on a clean endpoint table.

    A test folder or module that works on webhooks overrides ``settings`` with this fixture.
    """
    global _first_event_id
    current = configure(monkeypatch, database_url, master_key_text, tmp_path / "var", **WEBHOOK_ENV)
    with unit_of_work() as session:  # the database is shared by the session's tests: start clean
        session.execute(delete(WebhookEndpoint))  # deliveries and attempts cascade
        _first_event_id = (session.scalar(select(func.max(OutboxEvent.id))) or 0) + 1
    yield current
    reset_engines()
    get_settings.cache_clear()


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
               message: str = "condition") -> T:
    return processes.wait_until(predicate, timeout=timeout, interval=interval, message=message)


def reconfigure(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


@dataclass(frozen=True)
class Registered:
    id: int
    secret: str
    url: str


def register(url: str, event_types: list[str] | None = None) -> Registered:
    settings = get_settings()
    with unit_of_work() as session:
        created = endpoints.create_endpoint(session, url=url, event_types=event_types,
                                            master_key=load_master_key(settings),
                                            allowed=ssrf.parse_allowed(settings.webhook_allowed_cidrs), actor=CLI)
        return Registered(created.endpoint.id, created.secret, created.endpoint.url)


def meta_events(world: World, count: int = 1, value: str = "test value") -> list[int]:
    """Meta rows and their ``license_key_meta.created`` outbox events, as the write path commits them."""
    ids = []
    with unit_of_work() as session:
        license_id = session.scalar(select(LicenseKey.id).where(LicenseKey.key == world.license_key))
        for _ in range(count):
            meta = LicenseKeyMeta(license_key_id=license_id, key=f"k-{uuid.uuid4().hex[:10]}", value=value,
                                  identifier=world.identifier)
            session.add(meta)
            session.flush()
            ids.append(add_event(session, META_CREATED, {"api_key_id": world.api_key_id}, subject_id=meta.id))
    return ids


def deliveries(**where: object) -> list[WebhookDelivery]:
    with unit_of_work() as session:
        query = select(WebhookDelivery).order_by(WebhookDelivery.id)
        for name, value in where.items():
            query = query.where(getattr(WebhookDelivery, name) == value)
        return list(session.scalars(query))


def outbox_events(event_type: str, subject_id: int | None = None) -> list[OutboxEvent]:
    """This test's outbox events of a type."""
    with unit_of_work() as session:
        query = select(OutboxEvent).where(OutboxEvent.type == event_type, OutboxEvent.id >= _first_event_id)
        if subject_id is not None:
            query = query.where(OutboxEvent.subject_id == subject_id)
        return list(session.scalars(query.order_by(OutboxEvent.id)))


def claimed(master_key: bytes, world: World, count: int, lease_seconds: float = 10.0) -> list[delivery.Claim]:
    """``count`` new events fanned out and their deliveries claimed, as a worker claims them (nothing sent)."""
    created = jobs.fan_out_events(meta_events(world, count))
    with unit_of_work() as session:
        return delivery.claim(session, created, delivery.ClaimTerms(master_key, lease_seconds=lease_seconds))
