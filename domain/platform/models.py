"""The schema. Alembic migrations under ``domain/platform/migrations`` are written to match these models."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``timestamptz`` that only takes aware datetimes and always hands back UTC ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.astimezone(dt.UTC)


class EnumString(TypeDecorator[Any]):
    """A ``StrEnum`` column stored as its plain string value (no database enum type): rows load as members."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Any) -> StrEnum | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the key
    prefix: Mapped[str] = mapped_column(String(16))  # shown to operators to tell keys apart
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    capabilities: Mapped[list[str]] = mapped_column(JSON, default=list)
    allowed_cidrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    own_signing_key: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


LICENSE_STATUSES = ("available", "assigned", "reserved", "blocked")


class LicenseKey(Base):
    __tablename__ = "license_keys"
    __table_args__ = (
        CheckConstraint(
            "status IN ('available', 'assigned', 'reserved', 'blocked')", name="ck_license_keys_status"
        ),
        CheckConstraint("validity_days >= 0", name="ck_license_keys_validity_days"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="available")
    validity_days: Mapped[int] = mapped_column(Integer, default=0)
    assigned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Activation(Base):
    __tablename__ = "activations"
    __table_args__ = (UniqueConstraint("license_key_id", "identifier", name="uq_activations_license_identifier"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    license_key_id: Mapped[int] = mapped_column(ForeignKey("license_keys.id"))
    identifier: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class BlockRule(Base):
    __tablename__ = "block_rules"
    __table_args__ = (
        UniqueConstraint("kind", "value", name="uq_block_rules_kind_value"),
        CheckConstraint("kind IN ('ip', 'identifier')", name="ck_block_rules_kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LicenseKeyMeta(Base):
    __tablename__ = "license_key_meta"
    __table_args__ = (UniqueConstraint("license_key_id", "key", name="uq_license_key_meta_license_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the public meta_id
    license_key_id: Mapped[int] = mapped_column(ForeignKey("license_keys.id"))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)
    identifier: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


SIGNING_KEY_STATES = ("pending", "active", "retired", "revoked")


class SigningKey(Base):
    __tablename__ = "signing_keys"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'active', 'retired', 'revoked')", name="ck_signing_keys_state"
        ),
        # Exactly one active key per scope, enforced by the database.
        Index(
            "uq_signing_keys_one_active_per_scope",
            "scope",
            unique=True,
            postgresql_where=text("state = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)  # RFC 7638 thumbprint
    scope: Mapped[str] = mapped_column(String(32), index=True)  # "global" or "product:<id>"
    state: Mapped[str] = mapped_column(String(16))
    key_size: Mapped[int] = mapped_column(Integer)
    public_pem: Mapped[str] = mapped_column(Text)
    # AES-GCM under the master key; NULL once retired or revoked (private half destroyed).
    private_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


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

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)  # position in the chain, set under the lock
    event_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)  # idempotency key
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # "ok", or "failed" for a poison event
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
