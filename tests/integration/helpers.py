from __future__ import annotations

import subprocess
from collections import Counter

import httpx
from sqlalchemy import func, select

from domain.events.audit import verify_chain
from domain.events.models import AuditRecord, OutboxEvent
from domain.platform.database import unit_of_work
from tests.conftest import World
from tests.processes import BIN

PATH = "/api/v1/create-license-key-meta"


def create_many(base: str, world: World, count: int, **overrides: str) -> list[httpx.Response]:
    with httpx.Client(base_url=base, timeout=10) as client:
        return [client.post(PATH, data=world.form(**overrides)) for _ in range(count)]


def audit_count() -> int:
    with unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(AuditRecord)) or 0)


def outbox_count() -> int:
    with unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxEvent)) or 0)


def assert_audit_complete(expected_events: int) -> None:
    """Exactly one record per outbox event, in one unbroken chain."""
    with unit_of_work() as session:
        event_ids = session.scalars(select(AuditRecord.event_id)).all()
        outbox_ids = session.scalars(select(OutboxEvent.id)).all()
        checked, broken = verify_chain(session)
    assert len(outbox_ids) == expected_events
    assert sorted(event_ids) == sorted(outbox_ids), "every event exactly once"
    assert Counter(event_ids).most_common(1)[0][1] == 1
    assert broken is None, broken
    assert checked == expected_events


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "keymeta"), *args], env=env, capture_output=True, text=True, timeout=60)
