"""The table of license-key metadata: one row per (license key, meta key)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

import domain.catalog.models  # noqa: F401 - declares license_keys, which meta rows reference
from domain.platform.models import Base, UTCDateTime, utcnow


class LicenseKeyMeta(Base):
    __tablename__ = "license_key_meta"
    __table_args__ = (UniqueConstraint("license_key_id", "key", name="uq_license_key_meta_license_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # the public meta_id
    license_key_id: Mapped[int] = mapped_column(ForeignKey("license_keys.id"))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)
    identifier: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
