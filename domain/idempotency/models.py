"""The table of idempotency keys: one row per (API key digest, Idempotency-Key), in progress or decided."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from domain.platform.models import Base, EnumString, UTCDateTime, quoted, utcnow


class IdempotencyState(StrEnum):
    """``in_progress`` while the first request runs; ``decided`` once its response is stored for replay."""

    IN_PROGRESS = "in_progress"
    DECIDED = "decided"


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),
        CheckConstraint(f"state IN ({quoted(IdempotencyState)})", name="ck_idempotency_keys_state"),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))  # sha256 hex of the API key that sent it
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the endpoint and its parameters
    # Who holds the reservation: a takeover after an abandoned request's lease gets a new token, so the
    # abandoned request, should it finish after all, can neither record nor release the new holder's row.
    token: Mapped[str] = mapped_column(String(32))
    state: Mapped[IdempotencyState] = mapped_column(EnumString(IdempotencyState, 16))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # In progress: the end of the holder's lease; decided: the end of the TTL. Past it the row counts as absent.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
