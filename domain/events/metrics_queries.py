"""Figures for the ``/metrics`` scrape: a handful of single aggregate queries, each on an index or bounded.

Framework-free on purpose (no prometheus, no web framework): the API turns a :class:`Backlog` into series.
Everything the workers do is read back from the database here, at scrape time, rather than counted inside
the workers: Celery's prefork children cannot export in-process counters, and rows survive restarts.

Cost of each query, per scrape:
- outbox backlog: ``count``/``min`` on the partial-pending indexes (``audited_at``/``fanned_out_at``, id);
- open and given-up deliveries: ``count`` per status on ``ix_webhook_deliveries_due`` (status, …) — the
  ``succeeded`` rows, the large majority, are never counted;
- attempts by outcome: an :class:`AttemptTally` per process counts each attempt row once (primary-key
  range scans over the rows added since the last scrape plus a trailing window of ``TALLY_TAIL_IDS`` ids);
  only a process's first scrape reads the whole table;
- attempt durations: the newest ``DURATION_SAMPLE`` attempt rows by primary key, restricted to those
  started in the last ``DURATION_WINDOW`` — at most that many rows;
- endpoints by state and the active signing keys: small tables.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.events.models import AuditRecord, OutboxEvent
from domain.signing.models import SigningKey, SigningKeyState
from domain.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from domain.webhooks.states import GIVEN_UP_STATUSES, OPEN_STATUSES, AttemptOutcome

# An attempt row is inserted and committed in one short transaction. Rows this many ids below the newest
# committed one are taken as settled (no lower id can still appear) and are never counted again.
TALLY_TAIL_IDS = 10_000
DURATION_WINDOW = dt.timedelta(minutes=5)
DURATION_SAMPLE = 1000  # the newest attempt rows looked at for the duration quantiles
DURATION_QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class Backlog:
    outbox_unaudited: int
    oldest_unaudited_age_seconds: float  # 0 when nothing waits
    outbox_unfanned: int
    oldest_unfanned_age_seconds: float
    last_audit_record_age_seconds: float | None  # None: the audit log is empty
    webhook_deliveries_open: dict[str, int]  # status -> count, every open status present
    webhook_deliveries_given_up: dict[str, int] = field(default_factory=dict)  # failed, cancelled
    webhook_attempts: dict[str, int] = field(default_factory=dict)  # outcome -> attempts ever recorded
    webhook_attempt_durations: AttemptDurations | None = None
    webhook_endpoints: dict[str, int] = field(default_factory=dict)  # "enabled"/"disabled" -> count
    signing_key_ages_seconds: dict[str, float] = field(default_factory=dict)  # scope -> age of its active key


@dataclass(frozen=True)
class AttemptDurations:
    """Attempt durations (seconds) over the recent window: nearest-rank quantiles, and the sample size."""

    count: int
    quantiles: dict[float, float]  # empty when count == 0


class AttemptTally:
    """Per-process running count of attempt rows by outcome, so a scrape reads only the rows added since.

    Rows with ids up to ``settled_through`` are counted once into ``settled``; the trailing
    ``TALLY_TAIL_IDS`` ids (whose transactions might, in theory, still commit lower ids) are recounted
    every scrape. A counter must never go down within a process: deleted rows (an endpoint's deletion
    cascades to its attempts) stay counted once settled, and a total is never reported lower than the
    last one. A new process starts from the rows that exist (Prometheus sees a counter reset).
    """

    def __init__(self, tail_ids: int = TALLY_TAIL_IDS) -> None:
        self.tail_ids = tail_ids
        # (settled_through, settled, last reported): replaced as one tuple, never mutated, so concurrent
        # scrapes cannot leave it half updated.
        self.state: tuple[int, dict[str, int], dict[str, int]] = (0, {}, {})

    async def totals(self, connection: AsyncConnection) -> dict[str, int]:
        settled_through, settled, reported = self.state
        newest = (await connection.execute(select(func.max(WebhookAttempt.id)))).scalar_one_or_none() or 0
        target = max(settled_through, newest - self.tail_ids)
        settled = dict(settled)
        if target > settled_through:
            for outcome, count in await _attempts_by_outcome(connection, settled_through, target):
                settled[outcome] = settled.get(outcome, 0) + count
        totals = {outcome.value: 0 for outcome in AttemptOutcome} | settled
        for outcome, count in await _attempts_by_outcome(connection, target, None):
            totals[outcome] = totals.get(outcome, 0) + count
        totals = {outcome: max(count, reported.get(outcome, 0)) for outcome, count in totals.items()}
        self.state = (target, settled, totals)
        return totals


async def _attempts_by_outcome(connection: AsyncConnection, after: int, through: int | None) -> list[tuple[str, int]]:
    query = select(WebhookAttempt.outcome, func.count()).where(WebhookAttempt.id > after)
    if through is not None:
        query = query.where(WebhookAttempt.id <= through)
    rows = (await connection.execute(query.group_by(WebhookAttempt.outcome))).all()
    return [(str(outcome), int(count)) for outcome, count in rows]


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """The q-quantile of sorted values by the nearest-rank method (q in (0, 1])."""
    rank = math.ceil(round(q * len(sorted_values), 9))  # round: 0.1 * 30 is 3.0000000000000004
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


async def attempt_durations(connection: AsyncConnection, now: dt.datetime) -> AttemptDurations:
    """Durations of the attempts that reached the network in the last DURATION_WINDOW (``lost`` excluded).

    Bounded by primary key: only the newest DURATION_SAMPLE rows are read, then filtered by start time.
    """
    newest = (await connection.execute(select(func.max(WebhookAttempt.id)))).scalar_one_or_none() or 0
    rows = (await connection.execute(
        select(WebhookAttempt.duration_ms, WebhookAttempt.outcome, WebhookAttempt.started_at)
        .where(WebhookAttempt.id > newest - DURATION_SAMPLE))).all()
    since = now - DURATION_WINDOW
    values = sorted(duration / 1000.0 for duration, outcome, started in rows
                    if outcome != AttemptOutcome.LOST and _aware(started) >= since)
    if not values:
        return AttemptDurations(0, {})
    return AttemptDurations(len(values), {q: nearest_rank(values, q) for q in DURATION_QUANTILES})


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _age(now: dt.datetime, then: dt.datetime | None) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    return max(0.0, (now - then).total_seconds())


async def backlog(connection: AsyncConnection, now: dt.datetime | None = None,
                  tally: AttemptTally | None = None) -> Backlog:
    """All scrape-time figures; ``tally`` is the process's :class:`AttemptTally` (a fresh one: full count)."""
    now = now or dt.datetime.now(dt.UTC)
    unaudited, oldest_unaudited = (await connection.execute(
        select(func.count(), func.min(OutboxEvent.created_at)).where(OutboxEvent.audited_at.is_(None)))).one()
    unfanned, oldest_unfanned = (await connection.execute(
        select(func.count(), func.min(OutboxEvent.created_at)).where(OutboxEvent.fanned_out_at.is_(None)))).one()
    last_recorded = (await connection.execute(
        select(AuditRecord.recorded_at).order_by(AuditRecord.seq.desc()).limit(1))).scalar_one_or_none()
    open_rows = (await connection.execute(
        select(WebhookDelivery.status, func.count()).where(WebhookDelivery.status.in_(OPEN_STATUSES))
        .group_by(WebhookDelivery.status))).all()
    deliveries = {status.value: 0 for status in OPEN_STATUSES}
    deliveries.update({str(status): int(count) for status, count in open_rows})
    given_up_rows = (await connection.execute(
        select(WebhookDelivery.status, func.count()).where(WebhookDelivery.status.in_(GIVEN_UP_STATUSES))
        .group_by(WebhookDelivery.status))).all()
    given_up = {status.value: 0 for status in GIVEN_UP_STATUSES}
    given_up.update({str(status): int(count) for status, count in given_up_rows})
    endpoint_rows = (await connection.execute(
        select(WebhookEndpoint.enabled, func.count()).group_by(WebhookEndpoint.enabled))).all()
    endpoint_states = {"enabled": 0, "disabled": 0}
    for enabled, count in endpoint_rows:
        endpoint_states["enabled" if enabled else "disabled"] += int(count)
    key_rows = (await connection.execute(
        select(SigningKey.scope, SigningKey.activated_at, SigningKey.created_at)
        .where(SigningKey.state == SigningKeyState.ACTIVE))).all()
    key_ages = {str(scope): _age(now, activated or created) for scope, activated, created in key_rows}
    return Backlog(
        outbox_unaudited=int(unaudited),
        oldest_unaudited_age_seconds=_age(now, oldest_unaudited),
        outbox_unfanned=int(unfanned),
        oldest_unfanned_age_seconds=_age(now, oldest_unfanned),
        last_audit_record_age_seconds=None if last_recorded is None else _age(now, last_recorded),
        webhook_deliveries_open=deliveries,
        webhook_deliveries_given_up=given_up,
        webhook_attempts=await (tally or AttemptTally()).totals(connection),
        webhook_attempt_durations=await attempt_durations(connection, now),
        webhook_endpoints=endpoint_states,
        signing_key_ages_seconds=key_ages,
    )
