"""The tables of the catalog: products, license keys and their activations."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from domain.platform.models import Base, EnumString, UTCDateTime, quoted, utcnow


class LicenseStatus(StrEnum):
    """Only an ``assigned`` license key may carry metadata; ``blocked`` is refused before the others."""

    AVAILABLE = "available"
    ASSIGNED = "assigned"
    RESERVED = "reserved"
    BLOCKED = "blocked"


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    own_signing_key: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LicenseKey(Base):
    __tablename__ = "license_keys"
    __table_args__ = (
        CheckConstraint(f"status IN ({quoted(LicenseStatus)})", name="ck_license_keys_status"),
        CheckConstraint("validity_days >= 0", name="ck_license_keys_validity_days"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    status: Mapped[LicenseStatus] = mapped_column(EnumString(LicenseStatus, 16), default=LicenseStatus.AVAILABLE)
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
