"""Faults on real processes: nothing is lost when the broker, a worker or the API dies (exact counts)."""

from __future__ import annotations

import pytest

from domain.events.outbox import META_CREATE_REFUSED, add_event
from domain.platform.database import unit_of_work
from domain.platform.task_names import AUDIT_RECORD
from tests.conftest import make_world
from tests.integration.helpers import assert_audit_complete, audit_count, cli, create_many
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def test_broker_outage_neither_fails_the_453_nor_loses_an_event(real_stack) -> None:
    world = make_world()
    real_stack.audit_pipeline()
    _, base = real_stack.api()
    assert [r.json()["response"]["code"] for r in create_many(base, world, 3)] == [453] * 3
    wait_until(lambda: audit_count() == 3, timeout=60, message="first records")

    real_stack.proxy.cut()
    during = create_many(base, world, 40)
    assert [r.json()["response"]["code"] for r in during] == [453] * 40
    assert audit_count() < 43  # the broker really was unreachable
    real_stack.proxy.restore()

    wait_until(lambda: audit_count() == 43, timeout=40, message="records after the broker returned")
    assert_audit_complete(43)
    assert all(proc.alive() for proc in real_stack.procs), "every process survived the broker outage"
    assert cli("audit", "verify", env=real_stack.env).returncode == 0


def _ring_one_by_one(event_ids: list[int]) -> None:
    """One message per event (the API would coalesce a burst), so a worker can be caught mid-drain."""
    from celery import Celery

    from domain.platform.settings import get_settings
    from messaging.celery_config import celery_config, route_for

    producer = Celery("test-producer")
    producer.config_from_object(celery_config(get_settings()))
    with producer.producer_or_acquire() as publisher:
        for event_id in event_ids:
            producer.send_task(AUDIT_RECORD, args=[[event_id]], queue=route_for(get_settings(), AUDIT_RECORD),
                               producer=publisher)


def test_worker_killed_while_draining_loses_nothing_and_duplicates_nothing(stack) -> None:
    world = make_world()
    total = 300
    with unit_of_work() as session:
        event_ids = [add_event(session, META_CREATE_REFUSED, {"api_key_id": world.api_key_id, "meta_key": f"k{i}"},
                               request_id=f"kill-{i}", outcome_code=100) for i in range(total)]
    _ring_one_by_one(event_ids)

    doomed = stack.worker("audit", name="doomed")
    wait_until(lambda: audit_count() > 0, timeout=60, interval=0.01, message="draining to start")
    doomed.kill()
    assert audit_count() < total, "the worker was killed before it finished"

    stack.audit_pipeline()
    wait_until(lambda: audit_count() == total, timeout=120, message="every record after the kill")
    assert_audit_complete(total)


def test_api_killed_before_ringing_is_covered_by_the_sweeper(real_stack) -> None:
    world = make_world()
    real_stack.audit_pipeline()
    api, base = real_stack.api()

    real_stack.proxy.cut()  # the API cannot ring...
    assert {r.json()["response"]["code"] for r in create_many(base, world, 10)} == {453}
    api.kill()  # ...and dies with the bells unrung, right after the commits
    real_stack.proxy.restore()

    wait_until(lambda: audit_count() == 10, timeout=120, message="sweeper to deliver the events")
    assert_audit_complete(10)
    assert all(proc.alive() for proc in real_stack.procs if proc is not api), "workers survived the outage"
