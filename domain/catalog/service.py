"""Products, license keys and activations: what the license checks of docs/api.md read."""

from __future__ import annotations

import datetime as dt
import secrets
import string

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.catalog.models import Activation, LicenseKey, LicenseStatus, Product
from domain.platform.models import utcnow
from domain.signing.keys import create_signing_key, product_scope

MAX_TEXT = 255


class CatalogError(ValueError):
    pass


def _require_text(label: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise CatalogError(f"{label} must not be empty")
    if len(value) > MAX_TEXT:
        raise CatalogError(f"{label} must be at most {MAX_TEXT} characters")
    return value


def create_product(session: Session, *, name: str, active: bool = True, own_key: bool = False,
                   master_key: bytes | None = None, key_size: int = 2048) -> Product:
    product = Product(name=_require_text("product name", name), active=active, own_signing_key=own_key)
    session.add(product)
    session.flush()
    if own_key:
        if master_key is None:
            raise CatalogError("a product with its own key needs the master key")
        create_signing_key(session, master_key, product_scope(product.id), key_size=key_size)
    return product


def generate_license_key() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


def create_license_key(session: Session, *, product_id: int, key: str | None = None,
                       status: str = LicenseStatus.AVAILABLE,
                       validity_days: int = 0, assigned_at: dt.datetime | None = None) -> LicenseKey:
    if session.get(Product, product_id) is None:
        raise CatalogError(f"no product with id {product_id}")
    if status not in set(LicenseStatus):
        raise CatalogError(f"unknown status {status!r} (one of: {', '.join(LicenseStatus)})")
    if validity_days < 0:
        raise CatalogError("validity days must be 0 (never expires) or more")
    key = _require_text("license key", key) if key is not None else generate_license_key()
    if session.scalar(select(LicenseKey.id).where(LicenseKey.key == key)) is not None:
        raise CatalogError(f"license key {key!r} already exists")
    if status == LicenseStatus.ASSIGNED and assigned_at is None:
        assigned_at = utcnow()
    row = LicenseKey(key=key, product_id=product_id, status=LicenseStatus(status), validity_days=validity_days,
                     assigned_at=assigned_at)
    session.add(row)
    session.flush()
    return row


def activate(session: Session, *, license_key: str, identifier: str) -> tuple[Activation, bool]:
    """Returns the activation and whether it was created now (activating twice is not an error)."""
    identifier = _require_text("identifier", identifier)
    license_row = session.scalar(select(LicenseKey).where(LicenseKey.key == license_key.strip()))
    if license_row is None:
        raise CatalogError(f"no license key {license_key!r}")
    existing = session.scalar(select(Activation).where(
        Activation.license_key_id == license_row.id, Activation.identifier == identifier))
    if existing is not None:
        return existing, False
    row = Activation(license_key_id=license_row.id, identifier=identifier)
    session.add(row)
    session.flush()
    return row, True

