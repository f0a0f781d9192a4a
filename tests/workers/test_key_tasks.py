"""keys.advance: registered, scheduled by beat on the keys queue, and a thin wrapper over the domain.

The task body is called directly here (no broker, no eager mode); real worker processes are the business
of the integration tests.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from domain import catalog
from domain.events.models import OutboxEvent
from domain.platform.database import unit_of_work
from domain.platform.models import utcnow
from domain.platform.settings import Settings, get_settings
from domain.platform.task_names import AUDIT_RECORD, KEYS_ADVANCE, WEBHOOKS_FAN_OUT
from domain.signing.keys import product_scope
from domain.signing.master_key import MasterKeyError, load_master_key
from domain.signing.models import SigningKey
from messaging.celery_config import route_for


class RecordingDoorbell:
    def __init__(self) -> None:
        self.rung: list[tuple[str, list[int]]] = []

    def ring(self, task_name: str, ids: list[int], request_id: str | None = None) -> None:
        self.rung.append((task_name, list(ids)))


def due_scope(settings: Settings) -> str:
    with unit_of_work() as session:
        product = catalog.create_product(session, name="beat", own_key=True, master_key=load_master_key(settings))
        scope = product_scope(product.id)
        then = utcnow() - dt.timedelta(days=settings.key_rotation_days + 1)
        session.execute(update(SigningKey).where(SigningKey.scope == scope).values(activated_at=then))
        return scope


def scope_states(scope: str) -> list[str]:
    with unit_of_work() as session:
        return list(session.scalars(select(SigningKey.state).where(SigningKey.scope == scope).order_by(SigningKey.id)))


def test_keys_advance_is_registered_routed_and_scheduled(settings: Settings) -> None:
    from workers import key_tasks
    from workers.app import TASK_MODULES, celery_app
    from workers.schedule import beat_schedule

    assert "workers.key_tasks" in TASK_MODULES
    assert key_tasks.advance.name == KEYS_ADVANCE
    assert celery_app.tasks[KEYS_ADVANCE].run is key_tasks.advance.run
    entry = beat_schedule(settings.model_copy(update={"key_check_interval_seconds": 17.0}))["keys-advance"]
    assert (entry["task"], entry["schedule"]) == (KEYS_ADVANCE, 17.0)
    assert route_for(settings, KEYS_ADVANCE) == f"{settings.queue_prefix}keys"
    assert get_settings().key_check_interval_seconds == 60.0


def test_the_task_advances_rotations_and_rings_for_their_events(settings: Settings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import key_tasks

    scope = due_scope(settings)
    bell = RecordingDoorbell()
    monkeypatch.setattr(key_tasks, "doorbell", lambda: bell)
    key_tasks.advance()
    assert scope_states(scope) == ["active", "pending"]
    with unit_of_work() as session:
        created = session.scalars(select(OutboxEvent).where(OutboxEvent.type == "signing_key.created")
                                  .order_by(OutboxEvent.id.desc())).first()
        assert created is not None and created.payload["scope"] == scope and created.payload["actor"] == "beat"
    rung: dict[str, Any] = dict(bell.rung)
    assert created.id in rung[AUDIT_RECORD] and created.id in rung[WEBHOOKS_FAN_OUT]
    key_tasks.advance()  # idempotent: nothing more to do, nothing rung
    assert scope_states(scope) == ["active", "pending"]
    assert len(bell.rung) == 2


def test_the_task_fails_loudly_on_a_bad_master_key_and_changes_nothing(settings: Settings,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import key_tasks

    scope = due_scope(settings)
    monkeypatch.setattr(key_tasks, "doorbell", RecordingDoorbell)
    monkeypatch.setenv("KEYMETA_MASTER_KEY", base64.b64encode(b"0123456789").decode())
    get_settings.cache_clear()
    with pytest.raises(MasterKeyError, match="KEYMETA_MASTER_KEY must be 32 bytes"):
        key_tasks.advance()
    monkeypatch.delenv("KEYMETA_MASTER_KEY")
    monkeypatch.setenv("KEYMETA_VAR_DIR", str(settings.var_dir / "elsewhere"))
    get_settings.cache_clear()
    with pytest.raises(MasterKeyError, match="no master key"):
        key_tasks.advance()
    assert not (settings.var_dir / "elsewhere" / "master.key").exists()
    assert scope_states(scope) == ["active"]
