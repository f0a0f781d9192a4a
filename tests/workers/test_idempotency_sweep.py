"""idempotency.sweep: registered, scheduled by beat on the sweep queue, and deleting only expired keys.

The task body is called directly here (no broker, no eager mode), with a fixed clock where time matters.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import insert, select

from domain.idempotency.models import IdempotencyKey, IdempotencyState
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.platform.task_names import IDEMPOTENCY_SWEEP
from messaging.celery_config import route_for

NOW = dt.datetime(2032, 1, 1, tzinfo=dt.UTC)


def add_keys(scope: str, expiries: dict[str, dt.datetime]) -> None:
    with unit_of_work() as session:
        session.execute(insert(IdempotencyKey), [
            {"scope": scope, "key": key, "fingerprint": "f" * 64, "token": uuid.uuid4().hex,
             "state": IdempotencyState.DECIDED, "response_status": 200, "response_headers": {},
             "response_body": b"{}", "created_at": expires_at - dt.timedelta(days=1), "expires_at": expires_at}
            for key, expires_at in expiries.items()])


def keys_left(scope: str) -> list[str]:
    with unit_of_work() as session:
        return sorted(session.scalars(select(IdempotencyKey.key).where(IdempotencyKey.scope == scope)))


def test_idempotency_sweep_is_registered_routed_and_scheduled(settings: Settings) -> None:
    from workers import idempotency_tasks
    from workers.app import TASK_MODULES, celery_app
    from workers.schedule import beat_schedule

    assert "workers.idempotency_tasks" in TASK_MODULES
    assert celery_app.tasks[IDEMPOTENCY_SWEEP].run is idempotency_tasks.sweep.run
    entry = beat_schedule(settings)["idempotency-sweep"]
    assert entry["task"] == IDEMPOTENCY_SWEEP and 0 < entry["schedule"] <= 600
    assert route_for(settings, IDEMPOTENCY_SWEEP) == f"{settings.queue_prefix}sweep"


def test_the_sweep_deletes_keys_past_their_expiry_and_keeps_the_others(settings: Settings) -> None:
    from workers.idempotency_tasks import sweep_keys

    scope = uuid.uuid4().hex * 2
    add_keys(scope, {"expired": NOW - dt.timedelta(seconds=1), "expires-now": NOW,
                     "live": NOW + dt.timedelta(seconds=1)})
    assert sweep_keys(NOW) >= 2
    assert keys_left(scope) == ["live"]
    sweep_keys(NOW)  # idempotent: nothing more to do
    assert keys_left(scope) == ["live"]


def test_the_task_itself_sweeps_with_the_current_time(settings: Settings) -> None:
    from workers.idempotency_tasks import sweep

    scope = uuid.uuid4().hex * 2
    add_keys(scope, {"last-year": dt.datetime.now(dt.UTC) - dt.timedelta(days=365),
                     "next-year": dt.datetime.now(dt.UTC) + dt.timedelta(days=365)})
    assert sweep() >= 1
    assert keys_left(scope) == ["next-year"]
