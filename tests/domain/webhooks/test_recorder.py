"""The recorder waits for a database that went away instead of dropping what consumers already received."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from domain.platform.database import unit_of_work
from domain.platform.models import utcnow
from domain.platform.settings import Settings
from domain.webhooks import delivery, jobs, recorder
from domain.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import World
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import claimed, register

DATABASE_GONE = OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


def failing_first(times: int, error: Exception, calls: list[int]) -> Callable[..., Any]:
    """Stands in for the group's transaction: fails ``times`` times, then records."""
    real = recorder._record_group

    def record(*args: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return real(*args)
    return record


def statuses(claims: list[delivery.Claim]) -> set[str]:
    with unit_of_work() as session:
        return set(session.scalars(select(WebhookDelivery.status)
                                   .where(WebhookDelivery.id.in_([c.delivery_id for c in claims]))))


def test_a_group_is_recorded_once_the_database_answers_again(settings: Settings, world: World, sink: Sink,
                                                             master_key: bytes,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    register(sink.on("/hook", Reply(200)))
    claims = claimed(master_key, world, 2)
    calls: list[int] = []
    monkeypatch.setattr(recorder, "RECORD_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(recorder, "_record_group", failing_first(3, DATABASE_GONE, calls))
    report = jobs.send_and_record(claims, settings)
    assert report.outcomes == {"succeeded": 2} and len(calls) >= 4  # three refusals, then one call per group
    assert statuses(claims) == {"succeeded"}
    assert not {d for d, _ in jobs.leases.leases(settings.webhook_lease_seconds).held()} & {
        c.delivery_id for c in claims}


def test_an_error_that_is_not_an_outage_drops_the_group_at_once(settings: Settings, world: World, sink: Sink,
                                                                master_key: bytes,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    register(sink.on("/hook", Reply(200)))
    claims = claimed(master_key, world, 1)
    calls: list[int] = []
    monkeypatch.setattr(recorder, "_record_group", failing_first(1, ValueError("a defect"), calls))
    report = jobs.send_and_record(claims, settings)
    assert report.outcomes == {recorder.UNRECORDED: 1} and len(calls) == 1
    assert statuses(claims) == {"in_progress"}  # its lease brings it back


def test_patience_has_an_end(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(recorder, "RECORD_RETRY_SECONDS", 0.0)
    monkeypatch.setattr(recorder, "_record_group", failing_first(10**6, DATABASE_GONE, calls))
    results: Any = [(None, None)]  # never looked at: every transaction fails
    with pytest.raises(OperationalError):
        recorder.record(results, jobs.retry_policy(Settings()), patience=0.05)
    assert len(calls) > 2  # tried again while patient, then once more alone (the one-by-one fallback)


def test_a_failed_bring_forward_leaves_the_attempts_recorded(settings: Settings, world: World, sink: Sink,
                                                              master_key: bytes,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    register(sink.on("/hook", Reply(200)))
    [claim] = claimed(master_key, world, 1)
    with unit_of_work() as session:  # the endpoint was failing: this success ends its streak
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == claim.endpoint_id)
                        .values(failing_since=utcnow()))

    def unreachable(*args: Any) -> int:
        raise DATABASE_GONE
    monkeypatch.setattr(delivery, "bring_forward", unreachable)
    report = jobs.send_and_record([claim], settings)
    assert report.outcomes == {"succeeded": 1}
    assert statuses([claim]) == {"succeeded"}
