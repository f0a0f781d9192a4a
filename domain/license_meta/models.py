"""The table of license-key metadata: one row per (license key, meta key)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint, text
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
    # The identifier that last wrote the row; none when a key that needs no identifier wrote it.
    identifier: Mapped[str | None] = mapped_column(String(255))
    # 1 at create, +1 per update that changed the value (a delete's event carries the next one).
    version: Mapped[int] = mapped_column(BigInteger, default=1, server_default=text("1"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # last change of the value
