"""The table of signing keys: one row per RSA key, its lifecycle state and its sealed private half."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from domain.platform.models import Base, EnumString, UTCDateTime, quoted, utcnow


class SigningKeyState(StrEnum):
    """pending (published, not signing) -> active (signs) -> retired (verifies only); revoked: never trusted."""

    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


class SigningKey(Base):
    __tablename__ = "signing_keys"
    __table_args__ = (
        CheckConstraint(f"state IN ({quoted(SigningKeyState)})", name="ck_signing_keys_state"),
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
    state: Mapped[SigningKeyState] = mapped_column(EnumString(SigningKeyState, 16))
    key_size: Mapped[int] = mapped_column(Integer)
    public_pem: Mapped[str] = mapped_column(Text)
    # AES-GCM under the master key; NULL once retired or revoked (private half destroyed).
    private_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
