"""Webhook rows: endpoints (with sealed secrets), one delivery per (event, endpoint), every attempt."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from domain.platform.models import Base, EnumString, UTCDateTime, utcnow
from domain.webhooks.signatures import SignatureScheme
from domain.webhooks.states import AttemptOutcome, DeliveryStatus

PUBLIC_KEY = "^whpk_[A-Za-z0-9+/]{43}=$"  # a whpk_ Ed25519 public key: 32 bytes in base64
DEFAULT_MAX_IN_FLIGHT = 8  # an endpoint's attempts at once per worker process, unless set otherwise
MAX_IN_FLIGHT_LIMIT = 256  # the most one endpoint may ask for (a worker process runs 256 at once in all)
DELIVERY_STATUSES = tuple(status.value for status in DeliveryStatus)  # for schemas and command-line choices


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint(f"max_in_flight BETWEEN 1 AND {MAX_IN_FLIGHT_LIMIT}",
                        name="ck_webhook_endpoints_max_in_flight"),
        CheckConstraint("rate_limit IS NULL OR rate_limit > 0", name="ck_webhook_endpoints_rate_limit"),
        # A v1a endpoint always publishes its public key; a v1 endpoint has none.
        CheckConstraint("(signature_scheme = 'v1' AND public_key IS NULL AND previous_public_key IS NULL)"
                        f" OR (signature_scheme = 'v1a' AND public_key IS NOT NULL AND public_key ~ '{PUBLIC_KEY}'"
                        f" AND (previous_public_key IS NULL OR previous_public_key ~ '{PUBLIC_KEY}'))",
                        name="ck_webhook_endpoints_signature_scheme"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Sorted event types, or ["*"] for every webhook event type.
    event_types: Mapped[list[str]] = mapped_column(JSON)
    # sha256 of url + event types: the same URL with the same events is one endpoint, not two.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # First failure of the current unbroken run of failures; NULL after any success.
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # v1: HMAC with a shared whsec_ secret; v1a: Ed25519, the consumer holding only the whpk_ public key.
    signature_scheme: Mapped[SignatureScheme] = mapped_column(
        EnumString(SignatureScheme, 8), default=SignatureScheme.V1, server_default=SignatureScheme.V1.value)
    # The endpoint's signing key (whsec_ secret, or whsk_ private key for v1a), AES-GCM under the master key,
    # context f"webhook:{id}:{version}". Public keys are public: stored in clear, so views need no master key.
    public_key: Mapped[str | None] = mapped_column(String(64))  # whpk_ of the current key (v1a)
    previous_public_key: Mapped[str | None] = mapped_column(String(64))  # whpk_ of the previous key, while it signs
    secret_version: Mapped[int] = mapped_column(Integer, default=1)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The endpoint's share of each worker process: attempts at once, and at most this many per second (NULL: no
    # limit), so a slow or rate-limited consumer waits in its own queue, never in the others'.
    max_in_flight: Mapped[int] = mapped_column(Integer, default=DEFAULT_MAX_IN_FLIGHT,
                                               server_default=str(DEFAULT_MAX_IN_FLIGHT))
    rate_limit: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One message to one endpoint. ``msg_id`` is the ``webhook-id`` header: the same on every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status}'" for status in DeliveryStatus)),
            name="ck_webhook_deliveries_status",
        ),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # No foreign key: the body is copied at fan-out, so outbox rows may be pruned independently.
    event_id: Mapped[int] = mapped_column(BigInteger)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    msg_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent on every attempt
    status: Mapped[DeliveryStatus] = mapped_column(EnumString(DeliveryStatus, 16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # attempts made, ever (numbers attempt rows)
    retry_step: Mapped[int] = mapped_column(Integer, default=0)  # failures since created or replayed
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # lease of an in-progress claim
    rung_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # last doorbell for the due attempt
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt_no", name="uq_webhook_attempts_delivery_no"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[AttemptOutcome] = mapped_column(EnumString(AttemptOutcome, 16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    address: Mapped[str | None] = mapped_column(String(64))  # the vetted IP actually connected to
    error: Mapped[str | None] = mapped_column(String(512))
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    response_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
