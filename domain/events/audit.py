"""The audit log: every outbox event becomes one record of a SHA-256 hash chain.

``hash = sha256(prev_hash || canonical(record))``; ``seq`` is the position in the chain, assigned under a
lock (one writer at a time), so chain order is append order, not outbox order. Idempotent on event id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from domain.access.models import ApiKey
from domain.events.models import AuditRecord, AuditStatus, OutboxEvent
from domain.platform.logs import get_logger
from domain.platform.models import utcnow

log = get_logger("keymeta.audit")

GENESIS = "0" * 64
POISON = AuditStatus.FAILED
CHAIN_LOCK_ID = 7_305_001  # pg_advisory_xact_lock key of the audit chain

# The fields a record's hash covers, in this order (the canonical form is JSON with sorted keys).
HASHED_FIELDS = (
    "seq", "event_id", "recorded_at", "occurred_at", "action", "status", "outcome_code", "actor_api_key_id",
    "request_id", "source_ip", "user_agent", "product_id", "license_key_masked", "identifier", "meta_key",
    "detail",
)
_TEXT_LIMITS = {"request_id": 64, "source_ip": 64, "user_agent": 512, "license_key_masked": 32,
                "identifier": 255, "meta_key": 255}


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value is not None else None


def canonical(fields: dict[str, Any]) -> bytes:
    data = {name: fields.get(name) for name in HASHED_FIELDS}
    data["recorded_at"] = _iso(data["recorded_at"])
    data["occurred_at"] = _iso(data["occurred_at"])
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(fields)).hexdigest()


def _optional_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} is not an integer")
    return value


def _optional_text(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not text")
    return value[: _TEXT_LIMITS[name]]


def fields_from_event(event: OutboxEvent) -> dict[str, Any]:
    """What the audit record says about an event. Raises ValueError for a malformed (poison) event.

    Never copied: the API key itself, the meta value, a full license key (the API stores it masked), so of a
    meta event's ``data`` snapshot only its ``meta_id`` and ``version`` are kept.
    """
    payload = event.payload
    if not isinstance(payload, dict):
        raise ValueError("payload is not an object")
    detail = payload.get("detail")
    if detail is not None and not isinstance(detail, dict):
        raise ValueError("detail is not an object")
    actor = payload.get("actor")
    if actor is not None:
        detail = {**(detail or {}), "actor": str(actor)[:64]}
    data = payload.get("data")
    if data is not None:
        # A meta change names its row and version, so a row's history can be read from the chain.
        if not isinstance(data, dict):
            raise ValueError("data is not an object")
        detail = {**(detail or {}), "meta_id": _optional_int(data, "meta_id"),
                  "version": _optional_int(data, "version")}
    return {
        "event_id": event.id,
        "occurred_at": event.created_at,
        "action": event.type,
        "status": AuditStatus.OK,
        "outcome_code": event.outcome_code,
        "actor_api_key_id": _optional_int(payload, "api_key_id"),
        "request_id": event.request_id,
        "source_ip": _optional_text(payload, "source_ip"),
        "user_agent": _optional_text(payload, "user_agent"),
        "product_id": _optional_int(payload, "product_id"),
        "license_key_masked": _optional_text(payload, "license_key_masked"),
        "identifier": _optional_text(payload, "identifier"),
        "meta_key": _optional_text(payload, "meta_key"),
        "detail": detail,
    }


def poison_fields(event: OutboxEvent, error: str) -> dict[str, Any]:
    """A malformed event still takes its place in the chain, marked failed, so the chain moves on."""
    return {"event_id": event.id, "occurred_at": event.created_at, "action": str(event.type)[:64],
            "status": POISON, "request_id": (event.request_id or None), "detail": {"error": error[:500]}}


def lock_chain(session: Session) -> None:
    """One writer at a time: a transaction-scoped advisory lock, released when the caller's transaction ends."""
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_ID})


@dataclass(frozen=True)
class RecordOutcome:
    appended: int
    already_done: int
    poison: int
    unknown: int
    # Distinct request ids of the batch's events, in event order (a batch may serve several requests).
    request_ids: list[str] = field(default_factory=list)


def record_events(session: Session, event_ids: list[int], now: dt.datetime | None = None) -> RecordOutcome:
    """Append one record per not-yet-audited event. Safe to call again with the same ids."""
    now = now or utcnow()
    lock_chain(session)
    events = session.scalars(
        select(OutboxEvent).where(OutboxEvent.id.in_(event_ids)).order_by(OutboxEvent.id)
    ).all()
    unknown = len(set(event_ids) - {event.id for event in events})
    if unknown:
        log.warning("audit.unknown_events_dropped", count=unknown)
    head = session.execute(select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)).first()
    seq, prev_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
    already = {row for row in session.scalars(
        select(AuditRecord.event_id).where(AuditRecord.event_id.in_([e.id for e in events])))}
    appended = poison = done = 0
    last_used: dict[int, dt.datetime] = {}
    for event in events:
        if event.id in already:
            done += 1
        else:
            try:
                fields = fields_from_event(event)
            except ValueError as exc:
                log.error("audit.poison_event", event_id=event.id, error=str(exc), request_id=event.request_id)
                fields = poison_fields(event, str(exc))
                poison += 1
            seq += 1
            fields.update(seq=seq, recorded_at=now)
            digest = chain_hash(prev_hash, fields)
            session.add(AuditRecord(**fields, prev_hash=prev_hash, hash=digest))
            prev_hash = digest
            appended += 1
            log.debug("audit.event_recorded", event_id=event.id, seq=seq, action=fields["action"],
                      request_id=event.request_id)
            if fields.get("actor_api_key_id") is not None:
                key_id = fields["actor_api_key_id"]
                last_used[key_id] = max(last_used.get(key_id, event.created_at), event.created_at)
        if event.audited_at is None:
            event.audited_at = now
    # "Last used" is kept here, off the request path, instead of a write per API request.
    for key_id, used_at in last_used.items():
        session.execute(update(ApiKey).where(ApiKey.id == key_id)
                        .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < used_at))
                        .values(last_used_at=used_at))
    session.flush()
    request_ids = list(dict.fromkeys(e.request_id for e in events if e.request_id))
    return RecordOutcome(appended=appended, already_done=done, poison=poison, unknown=unknown,
                         request_ids=request_ids)


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    record_id: int
    reason: str


def verify_chain(session: Session, batch: int = 5000) -> tuple[int, ChainBreak | None]:
    """Walk the chain in seq order; returns (records checked, first break or None)."""
    prev_hash, expected_seq, checked, after = GENESIS, 1, 0, 0
    while True:
        rows = session.scalars(
            select(AuditRecord).where(AuditRecord.seq > after).order_by(AuditRecord.seq).limit(batch)
        ).all()
        if not rows:
            return checked, None
        for row in rows:
            fields = {name: getattr(row, name) for name in HASHED_FIELDS}
            if row.seq != expected_seq:
                return checked, ChainBreak(expected_seq, row.id,
                                           f"record seq {expected_seq} is missing (next is seq {row.seq})")
            if row.prev_hash != prev_hash:
                return checked, ChainBreak(row.seq, row.id, "prev_hash does not match the previous record")
            if chain_hash(prev_hash, fields) != row.hash:
                return checked, ChainBreak(row.seq, row.id, "hash does not match the record's content")
            prev_hash, expected_seq, checked, after = row.hash, expected_seq + 1, checked + 1, row.seq


def list_records(session: Session, since: dt.datetime | None = None, limit: int = 100) -> list[AuditRecord]:
    """The newest ``limit`` records (after ``since``), returned oldest first."""
    query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditRecord.recorded_at >= since)
    return list(reversed(session.scalars(query).all()))
