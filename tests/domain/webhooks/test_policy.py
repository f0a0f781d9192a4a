"""The delivery policy as a pure function: schedule with jitter, exhaustion, Retry-After, 410, 5-day disable."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from domain.webhooks.policy import RetryPolicy, decide
from domain.webhooks.states import DeliveryStatus
from domain.webhooks.transport import SendResult, parse_retry_after

NOW = dt.datetime(2026, 11, 26, 18, 0, tzinfo=dt.UTC)
DEFAULT = RetryPolicy(schedule=(5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400))


def result(status: int | None = 500, retry_after: float | None = None) -> SendResult:
    return SendResult(started_at=NOW, duration_ms=10, status_code=status, retry_after=retry_after)


def test_2xx_succeeds() -> None:
    for status in (200, 201, 204, 299):
        decision = decide(result(status), retry_step=0, failing_since=None, now=NOW, policy=DEFAULT)
        assert decision.status == DeliveryStatus.SUCCEEDED


def test_schedule_with_jitter_then_exhausted() -> None:
    rng = random.Random(7)
    for step, base in enumerate(DEFAULT.schedule):
        delays = []
        for _ in range(200):
            decision = decide(result(), retry_step=step, failing_since=NOW, now=NOW, policy=DEFAULT, rng=rng)
            assert decision.status == DeliveryStatus.PENDING and decision.next_attempt_at is not None
            delays.append((decision.next_attempt_at - NOW).total_seconds())
        assert base * 0.8 <= min(delays) < base * 0.85 and base * 1.15 < max(delays) <= base * 1.2
    last = decide(result(), retry_step=len(DEFAULT.schedule), failing_since=NOW, now=NOW, policy=DEFAULT)
    assert (last.status, last.exhausted, last.disable_reason) == (DeliveryStatus.FAILED, True, None)
    assert sum(DEFAULT.schedule) / 86400 == pytest.approx(3.15, abs=0.01)  # ≈ 3 days over 10 attempts


def test_retry_after_replaces_the_delay_capped() -> None:
    decision = decide(result(429, retry_after=120), retry_step=0, failing_since=None, now=NOW, policy=DEFAULT)
    assert decision.next_attempt_at == NOW + dt.timedelta(seconds=120)
    capped = decide(result(503, retry_after=10**9), retry_step=0, failing_since=None, now=NOW, policy=DEFAULT)
    assert capped.next_attempt_at == NOW + dt.timedelta(seconds=DEFAULT.retry_after_max)


def test_410_disables_and_a_five_day_streak_disables() -> None:
    gone = decide(result(410), retry_step=0, failing_since=None, now=NOW, policy=DEFAULT)
    assert gone.status == DeliveryStatus.FAILED and gone.disable_reason == "endpoint answered 410 Gone"
    almost = decide(result(), retry_step=0, failing_since=NOW - dt.timedelta(days=5) + dt.timedelta(seconds=1),
                    now=NOW, policy=DEFAULT)
    assert almost.status == DeliveryStatus.PENDING and almost.disable_reason is None
    streak = decide(result(), retry_step=0, failing_since=NOW - dt.timedelta(days=5), now=NOW, policy=DEFAULT)
    assert streak.status == DeliveryStatus.FAILED and (streak.disable_reason or "").startswith("failing continuously")


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Thu, 26 Nov 2026 18:02:00 GMT", now=NOW.timestamp()) == 120
    assert parse_retry_after("Thu, 26 Nov 2026 17:00:00 GMT", now=NOW.timestamp()) == 0
