"""Idempotency keys in PostgreSQL: one statement reserves a key or says why not; a decided answer is kept for replay.

Every function runs on the caller's connection and never commits: the API's engine autocommits, so each
statement stands alone there, and each one is atomic on its own.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from domain.idempotency.models import IdempotencyKey, IdempotencyState
from domain.platform.database import run_prepared

# How long an in-progress reservation holds its key. A request still running after this is taken to be
# abandoned (its process died), so the key does not answer 409 until the TTL ends; a later takeover gets a
# token of its own, and the abandoned request, should it finish after all, can no longer record its answer.
LEASE_SECONDS = 60.0
# The columns a takeover of an expired row replaces (everything but the row's identity).
_TAKEOVER_COLUMNS = ("fingerprint", "token", "state", "response_status", "response_headers", "response_body",
                     "created_at", "expires_at")
# The hot statements are fixed SQL run on asyncpg's own prepared-statement cache (as domain/license_meta/store.py
# does): building them with SQLAlchemy Core costs more CPU per request than the server spends on them. Each takes
# arrays, one element per request, so concurrent requests share one statement (domain/platform/write_batches.py).
#
# Reserve: $1 scopes, $2 keys, $3 fingerprints, $4 tokens, $5 nows, $6 ends of the leases. A key present twice
# is written once, by its earliest request; the others read the row it left. Rows are written in (scope, key)
# order, so two batches never wait on each other in a cycle. On conflict, a row past expires_at is taken over
# (the _TAKEOVER_COLUMNS replaced); any other row is rewritten with its own values, which locks it.
_RESERVE = """
WITH req AS (
    SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::timestamptz[],
                         $6::timestamptz[]) WITH ORDINALITY AS r(scope, key, fingerprint, token, now, lease_end, n)
),
taken AS (
    INSERT INTO idempotency_keys AS k (scope, key, fingerprint, token, state, created_at, expires_at)
    SELECT DISTINCT ON (scope, key) scope, key, fingerprint, token, 'in_progress', now, lease_end
    FROM req ORDER BY scope, key, n
    ON CONFLICT (scope, key) DO UPDATE SET
        fingerprint = CASE WHEN k.expires_at <= excluded.created_at THEN excluded.fingerprint ELSE k.fingerprint END,
        token = CASE WHEN k.expires_at <= excluded.created_at THEN excluded.token ELSE k.token END,
        state = CASE WHEN k.expires_at <= excluded.created_at THEN excluded.state ELSE k.state END,
        response_status = CASE WHEN k.expires_at <= excluded.created_at THEN excluded.response_status
                               ELSE k.response_status END,
        response_headers = CASE WHEN k.expires_at <= excluded.created_at THEN excluded.response_headers
                                ELSE k.response_headers END,
        response_body = CASE WHEN k.expires_at <= excluded.created_at THEN excluded.response_body
                             ELSE k.response_body END,
        created_at = CASE WHEN k.expires_at <= excluded.created_at THEN excluded.created_at ELSE k.created_at END,
        expires_at = CASE WHEN k.expires_at <= excluded.created_at THEN excluded.expires_at ELSE k.expires_at END
    RETURNING k.scope, k.key, k.token, k.state, k.fingerprint, k.response_status, k.response_headers::text,
              k.response_body
)
SELECT taken.* FROM req JOIN taken USING (scope, key) ORDER BY req.n
"""
# Record: $1 scopes, $2 keys, $3 tokens (the rows the reservations hold, while still in progress), $4 statuses,
# $5 headers (JSON text), $6 bodies, $7 ends of the TTL. Returns the keys recorded.
_RECORD = """
UPDATE idempotency_keys k SET state = 'decided', response_status = r.status, response_headers = r.headers::json,
       response_body = r.body, expires_at = r.expires_at
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::integer[], $5::text[], $6::bytea[],
            $7::timestamptz[]) AS r(scope, key, token, status, headers, body, expires_at)
WHERE k.scope = r.scope AND k.key = r.key AND k.token = r.token AND k.state = 'in_progress'
RETURNING k.scope, k.key
"""
# $1 scope, $2 key, $3 token: the row the reservation holds, while it is still in progress.
_RELEASE = """
DELETE FROM idempotency_keys
WHERE scope = $1::varchar AND key = $2::varchar AND token = $3::varchar AND state = 'in_progress'
RETURNING id
"""
assert {IdempotencyState.IN_PROGRESS.value, IdempotencyState.DECIDED.value} == {"in_progress", "decided"}
assert all(f"{name} = CASE" in _RESERVE for name in _TAKEOVER_COLUMNS)


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


@dataclass(frozen=True)
class Claim:
    """A request's bid for (scope, key): the key is held until ``now`` + the lease, a kept answer until + the TTL."""

    scope: str
    key: str
    fingerprint: str
    now: dt.datetime
    ttl_seconds: float
    lease_seconds: float = LEASE_SECONDS


@dataclass(frozen=True)
class KeptAnswer:
    """A decided answer to keep for replay, for the key its reservation holds."""

    reservation: Reservation
    response: StoredResponse


async def reserve(conn: AsyncConnection, scope: str, key: str, fingerprint: str, now: dt.datetime,
                  ttl_seconds: float, lease_seconds: float = LEASE_SECONDS) -> Reservation:
    """One request's :func:`reserve_many`."""
    return (await reserve_many(conn, [Claim(scope, key, fingerprint, now, ttl_seconds, lease_seconds)]))[0]


async def reserve_many(conn: AsyncConnection, claims: Sequence[Claim]) -> list[Reservation]:
    """Take each (scope, key) for its request, or say why not, in one statement; one reservation per claim.

    A new key is inserted in progress. An existing one is taken over only when it is past ``expires_at``
    (expired, or an abandoned lease); otherwise the statement rewrites the row with its own values, which
    locks it and returns it, so concurrent requests with one key see exactly one holder and every other
    one sees the row as that holder left it (no read-then-write, no second statement).
    """
    for claim in claims:
        _require_aware(claim.now)
    tokens = [secrets.token_hex(16) for _ in claims]
    rows = await run_prepared(
        conn, "fetch", _RESERVE, [c.scope for c in claims], [c.key for c in claims],
        [c.fingerprint for c in claims], tokens, [c.now for c in claims],
        [c.now + dt.timedelta(seconds=c.lease_seconds) for c in claims])
    if len(rows) != len(claims):
        raise RuntimeError(f"{len(claims)} reservations returned {len(rows)} rows")
    return [_reservation(claim, token, row) for claim, token, row in zip(claims, tokens, rows, strict=True)]


def _reservation(claim: Claim, token: str, row: Any) -> Reservation:
    ttl_end = claim.now + dt.timedelta(seconds=claim.ttl_seconds)
    if row["token"] == token:
        outcome = ReservationOutcome.PROCEED
    elif row["fingerprint"] != claim.fingerprint:
        outcome = ReservationOutcome.MISMATCH
    elif row["state"] == IdempotencyState.DECIDED:
        headers = row["response_headers"]
        stored = StoredResponse(status=row["response_status"], headers=dict(json.loads(headers) if headers else {}),
                                body=bytes(row["response_body"] or b""))
        return Reservation(ReservationOutcome.REPLAY, claim.scope, claim.key, token, ttl_end, stored)
    else:
        outcome = ReservationOutcome.IN_PROGRESS
    return Reservation(outcome, claim.scope, claim.key, token, ttl_end)


def _held(reservation: Reservation) -> tuple[str, str, str]:
    """Scope, key and token of the row this reservation holds."""
    if reservation.outcome is not ReservationOutcome.PROCEED:
        raise ValueError(f"a {reservation.outcome} reservation holds no key")
    return reservation.scope, reservation.key, reservation.token


async def record(conn: AsyncConnection, reservation: Reservation, status: int, headers: dict[str, str],
                 body: bytes) -> bool:
    """One request's :func:`record_many`."""
    return (await record_many(conn, [KeptAnswer(reservation, StoredResponse(status, headers, body))]))[0]


async def record_many(conn: AsyncConnection, answers: Sequence[KeptAnswer]) -> list[bool]:
    """Keep each decided answer for replay until its TTL ends, in one statement. False for an answer whose
    reservation was lost meanwhile (its lease ended and another request took the key over)."""
    held = [_held(answer.reservation) for answer in answers]
    for answer in answers:
        _require_aware(answer.reservation.expires_at)
    rows = await run_prepared(
        conn, "fetch", _RECORD, [h[0] for h in held], [h[1] for h in held], [h[2] for h in held],
        [a.response.status for a in answers], [json.dumps(a.response.headers) for a in answers],
        [bytes(a.response.body) for a in answers], [a.reservation.expires_at for a in answers])
    recorded = {(row["scope"], row["key"]) for row in rows}
    return [(scope, key) in recorded for scope, key, _ in held]


async def release(conn: AsyncConnection, reservation: Reservation) -> bool:
    """Free the key of an answer that is not kept (5xx, 429, 409), so the client may retry with it."""
    return await run_prepared(conn, "fetchval", _RELEASE, *_held(reservation)) is not None


def _require_aware(moment: dt.datetime) -> None:
    if moment.tzinfo is None:  # as UTCDateTime refuses it: a naive time is no point in time
        raise ValueError("naive datetime given where UTC is required")


def sweep_expired(session: Session, now: dt.datetime, limit: int) -> int:
    """Delete up to ``limit`` rows past ``expires_at`` (oldest first); rows a reservation holds are skipped."""
    due = (select(IdempotencyKey.id).where(IdempotencyKey.expires_at <= now)
           .order_by(IdempotencyKey.expires_at).limit(limit).with_for_update(skip_locked=True))
    deleted = session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.id.in_(due.scalar_subquery()), IdempotencyKey.expires_at <= now)
        .returning(IdempotencyKey.id))
    return len(deleted.all())
