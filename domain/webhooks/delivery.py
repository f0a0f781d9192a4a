"""Delivering rows: claim (short transaction) → POST (no transaction, ``dispatch``) → record (short transaction).

No transaction is ever open during the HTTP call. A claim is a lease: status ``in_progress`` until
``locked_until``, renewed by its worker for as long as the worker holds it (``leases``), however long the
attempt waits or runs. If the worker dies, the lease runs out, the sweeper re-rings the row and the next claim
records the lost attempt (a claim uses up its ring: an expired one is rung at the next sweep, not after
``KEYMETA_WEBHOOK_RERING_SECONDS``). Only the holder of the current claim (``attempts == attempt_no``) may record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import ColumnElement, and_, insert, or_, select, text, update
from sqlalchemy.orm import Session

from domain.events.models import OutboxEvent
from domain.platform.logs import get_logger
from domain.platform.models import utcnow
from domain.signing.master_key import MasterKeyError
from domain.webhooks import audit_events, endpoints, transport
from domain.webhooks.models import DEFAULT_MAX_IN_FLIGHT, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from domain.webhooks.policy import RetryPolicy, decide
from domain.webhooks.signatures import signature_header
from domain.webhooks.states import AttemptOutcome, DeliveryStatus

log = get_logger("keymeta.webhooks")


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    endpoint_id: int
    attempt_no: int
    url: str
    msg_id: str
    body: bytes
    secrets: list[str]
    error: str | None = None  # set when the attempt cannot even be made (e.g. the secret cannot be opened)
    request_id: str | None = None  # of the API request behind the event (for logs; None once pruned)
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT  # the endpoint's share of a worker (``dispatch``)
    rate_limit: float | None = None  # the endpoint's attempts per second, None for no limit


def _due(now: dt.datetime) -> ColumnElement[bool]:
    return or_(
        and_(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= now),
        and_(WebhookDelivery.status == DeliveryStatus.IN_PROGRESS, WebhookDelivery.locked_until < now),
    )


@dataclass(frozen=True)
class ClaimTerms:
    """How a caller takes deliveries: signing with ``master_key``, each claim leased for ``lease_seconds`` (the
    caller's ``leases`` keeper renews it while the attempt waits or runs)."""

    master_key: bytes
    lease_seconds: float

    @property
    def lease(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.lease_seconds)


class SigningSecrets:
    """Endpoint secrets unsealed once per endpoint and batch; a secret that cannot be opened is the attempt's
    error (recorded as a failed attempt), not the batch's."""

    def __init__(self, master_key: bytes, now: dt.datetime) -> None:
        self._master_key, self._now = master_key, now
        self._by_endpoint: dict[int, tuple[list[str], str | None]] = {}

    def of(self, endpoint: WebhookEndpoint) -> tuple[list[str], str | None]:
        if endpoint.id not in self._by_endpoint:
            try:
                self._by_endpoint[endpoint.id] = (endpoints.signing_secrets(endpoint, self._master_key, self._now),
                                                  None)
            except MasterKeyError as exc:
                self._by_endpoint[endpoint.id] = ([], f"cannot sign: {exc}")
        return self._by_endpoint[endpoint.id]


def claim_of(delivery_id: int, endpoint: WebhookEndpoint, attempt_no: int, msg_id: str, body: str,
             signing: SigningSecrets, request_id: str | None) -> Claim:
    secrets, error = signing.of(endpoint)
    return Claim(delivery_id=delivery_id, endpoint_id=endpoint.id, attempt_no=attempt_no, url=endpoint.url,
                 msg_id=msg_id, body=body.encode("utf-8"), secrets=secrets, error=error, request_id=request_id,
                 max_in_flight=endpoint.max_in_flight, rate_limit=endpoint.rate_limit)


def claim(session: Session, delivery_ids: Sequence[int], terms: ClaimTerms,
          now: dt.datetime | None = None) -> list[Claim]:
    """Take the due rows among ``delivery_ids``; rows not due, done, or claimed by another worker are skipped."""
    now = now or utcnow()
    rows = list(session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id.in_(list(delivery_ids)), _due(now))
        .order_by(WebhookDelivery.id).with_for_update(skip_locked=True)
    ))
    if not rows:
        return []
    by_id = {e.id: e for e in session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.id.in_({r.endpoint_id for r in rows})))}
    # The request that caused each event, for the attempt log lines (outbox rows may have been pruned).
    request_ids: dict[int, str | None] = {event_id: request_id for event_id, request_id in session.execute(
        select(OutboxEvent.id, OutboxEvent.request_id).where(OutboxEvent.id.in_({r.event_id for r in rows})))}
    claims: list[Claim] = []
    signing = SigningSecrets(terms.master_key, now)
    for row in rows:
        endpoint = by_id.get(row.endpoint_id)
        if row.status == DeliveryStatus.IN_PROGRESS:
            session.add(WebhookAttempt(
                delivery_id=row.id, attempt_no=row.attempts, started_at=row.updated_at, duration_ms=0,
                outcome=AttemptOutcome.LOST,
                error="the worker was lost during this attempt (lease expired); outcome unknown"))
            log.warning("webhooks.attempt", delivery_id=row.id, endpoint_id=row.endpoint_id,
                        attempt_no=row.attempts, outcome=AttemptOutcome.LOST, request_id=request_ids.get(row.event_id))
        if endpoint is None or not endpoint.enabled:
            row.status, row.completed_at, row.updated_at = DeliveryStatus.CANCELLED, now, now
            row.locked_until = row.next_attempt_at = None
            row.last_error = "endpoint disabled: " + (endpoint.disabled_reason or "-") if endpoint else "endpoint gone"
            continue
        row.attempts += 1
        row.status, row.locked_until, row.updated_at = DeliveryStatus.IN_PROGRESS, now + terms.lease, now
        row.rung_at = None  # the ring is used up: should this claim's lease run out, the next sweep rings it
        claims.append(claim_of(row.id, endpoint, row.attempts, row.msg_id, row.body, signing,
                               request_ids.get(row.event_id)))
    session.flush()
    return claims


# Renew: $ids and $attempts pair up (unnest), so a thousand claims are two parameters, not two thousand.
_EXTEND_LEASES = text("""
    UPDATE webhook_deliveries SET locked_until = :until
    WHERE id IN (
        SELECT d.id FROM webhook_deliveries d
        JOIN unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[])) AS held(id, attempt_no)
          ON d.id = held.id AND d.attempts = held.attempt_no
        WHERE d.status = :in_progress
        ORDER BY d.id FOR UPDATE OF d SKIP LOCKED)
""")


def extend_leases(session: Session, held: Sequence[tuple[int, int]], lease_seconds: float,
                  now: dt.datetime | None = None) -> int:
    """Renew the leases of claims still held, as (delivery id, attempt number): each ends ``lease_seconds`` from
    now. A claim another worker has taken over since (its lease ran out) is left alone, and so is a row another
    transaction holds right now (being recorded): never waited for, so never a deadlock. Returns rows renewed."""
    if not held:
        return 0
    now = now or utcnow()
    result = session.execute(_EXTEND_LEASES, {
        "until": now + dt.timedelta(seconds=lease_seconds), "ids": [d for d, _ in held],
        "attempts": [a for _, a in held], "in_progress": DeliveryStatus.IN_PROGRESS.value})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def headers_for(claim_: Claim, timestamp: int) -> dict[str, str]:
    """Standard Webhooks headers (docs/events.md): ``webhook-timestamp`` is this attempt's time, ``webhook-id``
    never changes."""
    return {"webhook-id": claim_.msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(claim_.secrets, claim_.msg_id, timestamp, claim_.body)}


# The attempt's claim had been taken over (lease expired) or its row deleted: nothing was recorded.
STALE: Final = "stale"


@dataclass(frozen=True)
class Recorded:
    delivery_id: int
    status: DeliveryStatus | Literal["stale"]  # succeeded | pending | failed | stale
    audit_event_ids: list[int]
    ended_failure_streak: bool = False  # this success is its endpoint's first since it began failing


def record(session: Session, claim_: Claim, result: transport.SendResult, policy: RetryPolicy,
           now: dt.datetime | None = None) -> Recorded:
    return record_many(session, [(claim_, result)], policy, now)[0]


def record_many(session: Session, results: Sequence[tuple[Claim, transport.SendResult]], policy: RetryPolicy,
                now: dt.datetime | None = None) -> list[Recorded]:
    """Store attempts and apply the policy, for a group of finished attempts in one transaction.

    Rows are locked in id order (deliveries, then endpoints), so concurrent groups cannot deadlock.
    """
    now = now or utcnow()
    rows = {r.id: r for r in session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id.in_([c.delivery_id for c, _ in results]))
        .order_by(WebhookDelivery.id).with_for_update())}
    endpoint_rows = _endpoints_to_update(session, rows, results)
    attempts: list[dict[str, object]] = []
    recorded: list[Recorded] = []
    for claim_, result in results:
        row = rows.get(claim_.delivery_id)
        if row is None or row.status != DeliveryStatus.IN_PROGRESS or row.attempts != claim_.attempt_no:
            # The lease ran out and another worker took over (or the endpoint was deleted): not ours to record.
            log.warning("webhooks.stale_attempt", delivery_id=claim_.delivery_id, attempt_no=claim_.attempt_no)
            recorded.append(Recorded(claim_.delivery_id, STALE, []))
            continue
        attempts.append({
            "delivery_id": row.id, "attempt_no": claim_.attempt_no, "started_at": result.started_at,
            "duration_ms": result.duration_ms,
            "outcome": AttemptOutcome.SUCCESS if result.ok else AttemptOutcome.FAILURE,
            "status_code": result.status_code, "address": result.address, "error": result.error,
            "response_excerpt": result.excerpt, "response_truncated": result.truncated})
        recorded.append(_apply(session, row, endpoint_rows.get(row.endpoint_id), result, policy, now))
    if attempts:
        session.execute(insert(WebhookAttempt), attempts)
    session.flush()
    return recorded


def _endpoints_to_update(session: Session, rows: dict[int, WebhookDelivery],
                         results: Sequence[tuple[Claim, transport.SendResult]]) -> dict[int, WebhookEndpoint]:
    """The endpoints of these deliveries, locked in id order, never against fan-out.

    A group with a failure may change its endpoints (failing_since, disabling): FOR NO KEY UPDATE. A group of
    successes only reads them unless one ends a failure streak: FOR SHARE, which concurrent success groups
    share and which waits for a failure still being recorded (so a success never misses the streak that
    failure starts). Neither conflicts with the FOR KEY SHARE of fan-out's foreign-key check on its inserts.
    """
    ids = sorted({r.endpoint_id for r in rows.values()})
    any_failed = any(not result.ok for c, result in results if c.delivery_id in rows)
    query = select(WebhookEndpoint).where(WebhookEndpoint.id.in_(ids)).order_by(WebhookEndpoint.id)
    query = query.with_for_update(key_share=True) if any_failed else query.with_for_update(read=True)
    return {e.id: e for e in session.scalars(query)}


def _apply(session: Session, row: WebhookDelivery, endpoint: WebhookEndpoint | None,
           result: transport.SendResult, policy: RetryPolicy, now: dt.datetime) -> Recorded:
    row.last_status_code, row.last_error, row.updated_at = result.status_code, result.error, now
    row.locked_until = None
    if result.ok:
        row.status, row.completed_at, row.next_attempt_at = DeliveryStatus.SUCCEEDED, now, None
        ended_streak = endpoint is not None and endpoint.failing_since is not None
        if endpoint is not None:
            endpoint.failing_since = None  # the failure streak is broken
        return Recorded(row.id, DeliveryStatus.SUCCEEDED, [], ended_failure_streak=ended_streak)

    if endpoint is not None and endpoint.failing_since is None:
        endpoint.failing_since = result.started_at
    decision = decide(result, retry_step=row.retry_step,
                      failing_since=endpoint.failing_since if endpoint else None, now=now, policy=policy)
    row.retry_step += 1
    if decision.status == DeliveryStatus.PENDING:
        row.status, row.next_attempt_at, row.rung_at = DeliveryStatus.PENDING, decision.next_attempt_at, None
    else:
        row.status, row.completed_at, row.next_attempt_at = DeliveryStatus.FAILED, now, None
    audit_ids: list[int] = []
    if decision.disable_reason and endpoint is not None:
        event_id = endpoints.disable(session, endpoint, decision.disable_reason, audit_events.POLICY, now)
        if event_id is not None:
            audit_ids.append(event_id)
    if decision.exhausted:
        audit_ids.append(audit_events.record(
            session, audit_events.DELIVERY_EXHAUSTED, audit_events.POLICY, row.id,
            {"endpoint_id": row.endpoint_id, "event_id": row.event_id, "msg_id": row.msg_id,
             "attempts": row.attempts, "last_status_code": result.status_code, "last_error": result.error}))
    return Recorded(row.id, decision.status, audit_ids)


def bring_forward(session: Session, endpoint_ids: Sequence[int], now: dt.datetime | None = None) -> int:
    """An endpoint answering again gets its waiting retries now instead of at their backoff times: the sweeper
    rings them at its next run. Rows another transaction holds are left to their schedule (never waited for).
    Returns how many deliveries were brought forward."""
    now = now or utcnow()
    waiting = (select(WebhookDelivery.id)
               .where(WebhookDelivery.endpoint_id.in_(endpoint_ids), WebhookDelivery.status == DeliveryStatus.PENDING,
                      WebhookDelivery.next_attempt_at > now)
               .with_for_update(skip_locked=True))
    result = session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(waiting.scalar_subquery()))
                             .values(next_attempt_at=now, rung_at=None, updated_at=now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def sweep_due(session: Session, *, rering_seconds: float, limit: int, now: dt.datetime | None = None) -> list[int]:
    """Due rows not rung since they became due (or not for ``rering_seconds``): ring these, after commit.

    Retries are driven here, from ``next_attempt_at`` rows, never by broker ETAs or countdowns.
    """
    now = now or utcnow()
    stale_ring = now - dt.timedelta(seconds=rering_seconds)
    ids = list(session.scalars(
        select(WebhookDelivery.id)
        .where(_due(now), or_(WebhookDelivery.rung_at.is_(None), WebhookDelivery.rung_at <= stale_ring))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ))
    if ids:
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(rung_at=now))
    return ids
