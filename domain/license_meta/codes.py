"""Outcome codes of create-license-key-meta: exact message bytes and HTTP status (docs/api.md)."""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    INVALID_API_KEY = 100
    INACTIVE_API_KEY = 101
    MISSING_CAPABILITY = 102
    IP_NOT_ALLOWED = 103
    ACCESS_DENIED = 150
    LICENSE_NOT_ASSIGNED = 201
    NO_ACTIVATION = 202
    PRODUCT_INACTIVE = 203
    LICENSE_BLOCKED = 204
    LICENSE_EXPIRED = 205
    INVALID_LICENSE_KEY = 210
    IDENTIFIER_REQUIRED = 215
    META_KEY_REQUIRED = 450
    META_VALUE_REQUIRED = 451
    META_KEY_EXISTS = 452
    META_CREATED = 453
    INCORRECT_DATA = 901

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def http_status(self) -> int:
        if self in (Code.INVALID_API_KEY, Code.INACTIVE_API_KEY, Code.MISSING_CAPABILITY, Code.IP_NOT_ALLOWED):
            return 401
        if self is Code.ACCESS_DENIED:
            return 403
        return 200


_MESSAGES = {
    Code.INVALID_API_KEY: "Invalid API Key",
    Code.INACTIVE_API_KEY: "Inactive API Key",
    Code.MISSING_CAPABILITY: "The used API key doesn't have the required capability to access this endpoint",
    Code.IP_NOT_ALLOWED: "API key can't be used from this IP address",
    Code.ACCESS_DENIED: "Access denied",
    Code.IDENTIFIER_REQUIRED: "Identifier is required",
    Code.INVALID_LICENSE_KEY: "Invalid license key",
    Code.LICENSE_BLOCKED: "License key blocked",
    Code.LICENSE_NOT_ASSIGNED: "This license key is not assigned",
    Code.LICENSE_EXPIRED: "License key expired",
    Code.PRODUCT_INACTIVE: "The product associated with this license key is not active or doesn't exist",
    Code.NO_ACTIVATION: "No activation found for this license key/identifier combination",
    Code.META_KEY_REQUIRED: "Meta key is required",
    Code.META_VALUE_REQUIRED: "Meta value is required",
    Code.META_KEY_EXISTS: "Meta key already exists",
    Code.META_CREATED: "Metadata created",
    Code.INCORRECT_DATA: "Incorrect data found",
}

CREATE_META_CAPABILITY = "create-license-key-meta"


class ExtensionCode(IntEnum):
    """keymeta's own codes, outside the vendor's table (docs/api.md lists them apart).

    Four digits so they can never collide with a vendor code (all three digits); 4290 reads as HTTP 429.
    Same envelope, same signing, same audit trail as a vendor code.
    """

    RATE_LIMITED = 4290

    @property
    def message(self) -> str:
        return _EXTENSION_MESSAGES[self]

    @property
    def http_status(self) -> int:
        return 429


_EXTENSION_MESSAGES = {
    ExtensionCode.RATE_LIMITED: "Too many requests",
}

AnyCode = Code | ExtensionCode
