"""Idempotency keys in PostgreSQL: one statement reserves a key or says why not; a decided answer is kept for replay.

Every function runs on the caller's connection and never commits: the API's engine autocommits, so each
statement stands alone there, and each one is atomic on its own.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, case, delete, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from domain.idempotency.models import IdempotencyKey, IdempotencyState

# How long an in-progress reservation holds its key. A request still running after this is taken to be
# abandoned (its process died), so the key does not answer 409 until the TTL ends; a later takeover gets a
# token of its own, and the abandoned request, should it finish after all, can no longer record its answer.
LEASE_SECONDS = 60.0
# The columns a takeover of an expired row replaces (everything but the row's identity).
_TAKEOVER_COLUMNS = ("fingerprint", "token", "state", "response_status", "response_headers", "response_body",
                     "created_at", "expires_at")


class ReservationOutcome(StrEnum):
    PROCEED = "proceed"  # this request holds the key: run it, then record or release its answer
    REPLAY = "replay"  # decided earlier with the same parameters: send the stored answer again
    IN_PROGRESS = "in_progress"  # the first request with this key is still running
    MISMATCH = "mismatch"  # the key was used with other parameters


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reservation:
    outcome: ReservationOutcome
    scope: str
    key: str
    token: str  # the holder's token; only PROCEED holds the row
    expires_at: dt.datetime  # when an answer recorded by this holder expires (reserved at + TTL)
    response: StoredResponse | None = None  # the answer to replay (REPLAY only)


async def reserve(conn: AsyncConnection, scope: str, key: str, fingerprint: str, now: dt.datetime,
                  ttl_seconds: float, lease_seconds: float = LEASE_SECONDS) -> Reservation:
    """Take (scope, key) for this request, or say why not, in one statement.

    A new key is inserted in progress. An existing one is taken over only when it is past ``expires_at``
    (expired, or an abandoned lease); otherwise the statement rewrites the row with its own values, which
    locks it and returns it, so concurrent requests with one key see exactly one holder and every other
    one sees the row as that holder left it (no read-then-write, no second statement).
    """
    token = secrets.token_hex(16)
    statement = postgresql.insert(IdempotencyKey).values(
        scope=scope, key=key, fingerprint=fingerprint, token=token, state=IdempotencyState.IN_PROGRESS,
        created_at=now, expires_at=now + dt.timedelta(seconds=lease_seconds))
    expired = IdempotencyKey.expires_at <= statement.excluded.created_at
    takeover: dict[str, ColumnElement[Any]] = {
        name: case((expired, statement.excluded[name]), else_=getattr(IdempotencyKey, name))
        for name in _TAKEOVER_COLUMNS}
    statement = statement.on_conflict_do_update(index_elements=["scope", "key"], set_=takeover)
    row = (await conn.execute(statement.returning(
        IdempotencyKey.token, IdempotencyKey.state, IdempotencyKey.fingerprint, IdempotencyKey.response_status,
        IdempotencyKey.response_headers, IdempotencyKey.response_body))).one()
    ttl_end = now + dt.timedelta(seconds=ttl_seconds)
    if row.token == token:
        outcome = ReservationOutcome.PROCEED
    elif row.fingerprint != fingerprint:
        outcome = ReservationOutcome.MISMATCH
    elif row.state == IdempotencyState.DECIDED:
        stored = StoredResponse(status=row.response_status, headers=dict(row.response_headers or {}),
                                body=bytes(row.response_body or b""))
        return Reservation(ReservationOutcome.REPLAY, scope, key, token, ttl_end, stored)
    else:
        outcome = ReservationOutcome.IN_PROGRESS
    return Reservation(outcome, scope, key, token, ttl_end)


def _held(reservation: Reservation) -> ColumnElement[bool]:
    if reservation.outcome is not ReservationOutcome.PROCEED:
        raise ValueError(f"a {reservation.outcome} reservation holds no key")
    return ((IdempotencyKey.scope == reservation.scope) & (IdempotencyKey.key == reservation.key)
            & (IdempotencyKey.token == reservation.token) & (IdempotencyKey.state == IdempotencyState.IN_PROGRESS))


async def record(conn: AsyncConnection, reservation: Reservation, status: int, headers: dict[str, str],
                 body: bytes) -> bool:
    """Keep the decided answer for replay until the TTL ends. False when the reservation was lost meanwhile
    (its lease ended and another request took the key over)."""
    result = await conn.execute(
        update(IdempotencyKey).where(_held(reservation)).values(
            state=IdempotencyState.DECIDED, response_status=status, response_headers=headers, response_body=body,
            expires_at=reservation.expires_at)
        .returning(IdempotencyKey.id))
    return result.first() is not None


async def release(conn: AsyncConnection, reservation: Reservation) -> bool:
    """Free the key of an answer that is not kept (5xx, 429, 409), so the client may retry with it."""
    result = await conn.execute(delete(IdempotencyKey).where(_held(reservation)).returning(IdempotencyKey.id))
    return result.first() is not None


def sweep_expired(session: Session, now: dt.datetime, limit: int) -> int:
    """Delete up to ``limit`` rows past ``expires_at`` (oldest first); rows a reservation holds are skipped."""
    due = (select(IdempotencyKey.id).where(IdempotencyKey.expires_at <= now)
           .order_by(IdempotencyKey.expires_at).limit(limit).with_for_update(skip_locked=True))
    deleted = session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.id.in_(due.scalar_subquery()), IdempotencyKey.expires_at <= now)
        .returning(IdempotencyKey.id))
    return len(deleted.all())
