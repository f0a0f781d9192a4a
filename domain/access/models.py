"""The tables of access: API keys (stored as digests, with the options of the client that holds one) and the
block list."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from domain.platform.models import Base, EnumString, UTCDateTime, quoted, utcnow
from domain.signing.envelope import DEFAULT_SCHEME, SignatureScheme


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(f"signature_scheme IN ({quoted(SignatureScheme)})", name="ck_api_keys_signature_scheme"),
    )

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
    # A back-office key: may omit the identifier on the metadata endpoints (steps 6 and 12 skipped).
    management: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What the signatures of this key's answers cover (docs/api.md, "Clients of the vendor's SDKs").
    signature_scheme: Mapped[SignatureScheme] = mapped_column(
        EnumString(SignatureScheme, 32), default=DEFAULT_SCHEME, server_default=DEFAULT_SCHEME.value)


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
