"""The license and meta-field checks of create-license-key-meta, in order (pure, no I/O; docs/api.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from domain.catalog.models import LicenseStatus
from domain.license_meta.codes import Code


@dataclass(frozen=True)
class LicenseView:
    id: int
    status: str
    validity_days: int
    assigned_at: dt.datetime | None
    product_id: int | None
    product_active: bool | None  # None: the product row does not exist
    product_own_key: bool
    activated: bool  # an activation exists for (license key, identifier)

    @property
    def signing_scope(self) -> str:
        return f"product:{self.product_id}" if self.product_own_key and self.product_id else "global"


def is_expired(view: LicenseView, now: dt.datetime) -> bool:
    if view.validity_days == 0 or view.assigned_at is None:
        return False
    return view.assigned_at + dt.timedelta(days=view.validity_days) <= now


def license_decision(view: LicenseView | None, now: dt.datetime) -> Code | None:
    """Steps 7–12, in order."""
    if view is None:
        return Code.INVALID_LICENSE_KEY
    if view.status == LicenseStatus.BLOCKED:
        return Code.LICENSE_BLOCKED
    if view.status != LicenseStatus.ASSIGNED:
        return Code.LICENSE_NOT_ASSIGNED
    if is_expired(view, now):
        return Code.LICENSE_EXPIRED
    if not view.product_active:
        return Code.PRODUCT_INACTIVE
    if not view.activated:
        return Code.NO_ACTIVATION
    return None


def meta_fields_decision(key: str | None, value: str | None) -> Code | None:
    """Steps 13–14."""
    if key is None:
        return Code.META_KEY_REQUIRED
    if value is None:
        return Code.META_VALUE_REQUIRED
    return None
