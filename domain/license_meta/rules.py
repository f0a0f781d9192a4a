"""The checks of the metadata family, in order, and the code of each outcome (pure, no I/O; docs/api.md)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from domain.catalog.models import LicenseStatus
from domain.license_meta.codes import AnyCode, Code, ExtensionCode, Operation


@dataclass(frozen=True)
class LicenseView:
    id: int
    status: str
    validity_days: int
    assigned_at: dt.datetime | None
    product_id: int | None
    product_active: bool | None  # None: the product row does not exist
    product_own_key: bool
    # An activation exists for (license key, identifier), or the request has no identifier: a management key's,
    # for which step 12 does not apply.
    activated: bool

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


@dataclass(frozen=True)
class StepCodes:
    """Steps 13 onwards of one operation: ``None`` where the operation has no such check."""

    key_required: AnyCode | None
    value_required: AnyCode | None
    refused: AnyCode  # step 15: the key exists already (create) or does not exist (the others)
    success: AnyCode


STEP_CODES: dict[Operation, StepCodes] = {
    Operation.CREATE: StepCodes(Code.META_KEY_REQUIRED, Code.META_VALUE_REQUIRED, Code.META_KEY_EXISTS,
                                Code.META_CREATED),
    Operation.UPDATE: StepCodes(Code.UPDATE_KEY_REQUIRED, Code.UPDATE_VALUE_REQUIRED, Code.UPDATE_KEY_MISSING,
                                Code.META_UPDATED),
    Operation.DELETE: StepCodes(Code.DELETE_KEY_REQUIRED, None, Code.DELETE_KEY_MISSING, Code.META_DELETED),
    # The key is optional: without one, every key of the license is read and none can be missing.
    Operation.GET: StepCodes(None, None, ExtensionCode.META_NOT_FOUND, ExtensionCode.META_FOUND),
}


def fields_decision(operation: Operation, key: str | None, value: str | None) -> AnyCode | None:
    """Steps 13–14: the parameters this operation requires."""
    codes = STEP_CODES[operation]
    if codes.key_required is not None and key is None:
        return codes.key_required
    if codes.value_required is not None and value is None:
        return codes.value_required
    return None


def fields_complete(operation: Operation, key: str | None, value: str | None) -> bool:
    return fields_decision(operation, key, value) is None


CAP_ERRORS_REASON = "this license key holds the limit of {cap} meta keys"
