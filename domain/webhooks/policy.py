"""What an attempt's outcome means for its delivery and its endpoint (pure, no I/O)."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from domain.webhooks.states import DeliveryStatus
from domain.webhooks.transport import SendResult

_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...]  # delay after the 1st, 2nd, ... failure; exhausted after the last
    jitter: float = 0.2
    retry_after_max: float = 86400.0
    disable_after: float = 5 * 86400.0


@dataclass(frozen=True)
class Decision:
    status: DeliveryStatus  # succeeded | pending | failed
    next_attempt_at: dt.datetime | None = None
    disable_reason: str | None = None  # disable the endpoint, for this reason
    exhausted: bool = False


def retry_delay(policy: RetryPolicy, failures: int, rng: random.Random) -> float:
    """Delay after the ``failures``-th failure (1-based), with ±jitter."""
    base = policy.schedule[failures - 1]
    return base * rng.uniform(1 - policy.jitter, 1 + policy.jitter)


def decide(result: SendResult, *, retry_step: int, failing_since: dt.datetime | None, now: dt.datetime,
           policy: RetryPolicy, rng: random.Random | None = None) -> Decision:
    """``retry_step``: failures of this delivery before this attempt (since creation or replay)."""
    if result.ok:
        return Decision(DeliveryStatus.SUCCEEDED)
    if result.status_code == 410:
        return Decision(DeliveryStatus.FAILED, disable_reason="endpoint answered 410 Gone")
    since = failing_since or result.started_at
    if (now - since).total_seconds() >= policy.disable_after:
        return Decision(DeliveryStatus.FAILED, disable_reason=f"failing continuously since {since.isoformat()}")
    failures = retry_step + 1
    if failures > len(policy.schedule):
        return Decision(DeliveryStatus.FAILED, exhausted=True)
    delay = retry_delay(policy, failures, rng or _RNG)
    if result.retry_after is not None:  # 429/503 with Retry-After: the consumer says when
        delay = min(result.retry_after, policy.retry_after_max)
    return Decision(DeliveryStatus.PENDING, next_attempt_at=now + dt.timedelta(seconds=delay))
