"""The tables of events: the outbox ledger and the audit hash chain."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from domain.platform.models import Base, EnumString, UTCDateTime, utcnow


class AuditStatus(StrEnum):
    """``failed`` marks a poison event: recorded in the chain so it is never retried or lost."""

    OK = "ok"
    FAILED = "failed"


class OutboxEvent(Base):
    """Follow-up work, written in the transaction of the change that caused it (the ledger)."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        Index("ix_outbox_events_pending_audit", "audited_at", "id"),
        Index("ix_outbox_events_pending_fan_out", "fanned_out_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    # The row the event is about (meta_id for meta events) and, for requests, the outcome code.
    subject_id: Mapped[int | None] = mapped_column(BigInteger)
    outcome_code: Mapped[int | None] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Consumption marks, one per consumer; the sweeper re-rings rows still NULL after a grace period.
    audited_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    fanned_out_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AuditRecord(Base):
    """One link of the audit hash chain: ``hash = sha256(prev_hash || canonical(record))``."""

    __tablename__ = "audit_records"
    # The console's audit filter: newest records of one action, a keyset page on (action, seq) at any size.
    __table_args__ = (Index("ix_audit_records_action_seq", "action", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)  # position in the chain, set under the lock
    event_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)  # idempotency key
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(64))
    status: Mapped[AuditStatus] = mapped_column(EnumString(AuditStatus, 16))
    outcome_code: Mapped[int | None] = mapped_column(Integer)
    actor_api_key_id: Mapped[int | None] = mapped_column(BigInteger)
    request_id: Mapped[str | None] = mapped_column(String(64))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    product_id: Mapped[int | None] = mapped_column(BigInteger)
    license_key_masked: Mapped[str | None] = mapped_column(String(32))
    identifier: Mapped[str | None] = mapped_column(String(255))
    meta_key: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
