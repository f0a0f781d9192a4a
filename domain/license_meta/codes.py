"""Outcome codes of the metadata family: exact message bytes and HTTP status (docs/api.md), and its operations."""

from __future__ import annotations

from enum import IntEnum, StrEnum


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
    DELETE_KEY_REQUIRED = 250
    DELETE_KEY_MISSING = 251
    META_DELETED = 252
    UPDATE_KEY_REQUIRED = 350
    UPDATE_VALUE_REQUIRED = 351
    UPDATE_KEY_MISSING = 352
    META_UPDATED = 353
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


_KEY_REQUIRED = "Meta key is required"
_VALUE_REQUIRED = "Meta value is required"
_KEY_MISSING = "Meta key doesn't exist"

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
    Code.DELETE_KEY_REQUIRED: _KEY_REQUIRED,
    Code.DELETE_KEY_MISSING: _KEY_MISSING,
    Code.META_DELETED: "Metadata deleted",
    Code.UPDATE_KEY_REQUIRED: _KEY_REQUIRED,
    Code.UPDATE_VALUE_REQUIRED: _VALUE_REQUIRED,
    Code.UPDATE_KEY_MISSING: _KEY_MISSING,
    Code.META_UPDATED: "Metadata updated",
    Code.META_KEY_REQUIRED: _KEY_REQUIRED,
    Code.META_VALUE_REQUIRED: _VALUE_REQUIRED,
    Code.META_KEY_EXISTS: "Meta key already exists",
    Code.META_CREATED: "Metadata created",
    Code.INCORRECT_DATA: "Incorrect data found",
}

CREATE_META_CAPABILITY = "create-license-key-meta"
UPDATE_META_CAPABILITY = "update-license-key-meta"
DELETE_META_CAPABILITY = "delete-license-key-meta"
GET_META_CAPABILITY = "get-license-key-meta"
META_CAPABILITIES = (CREATE_META_CAPABILITY, UPDATE_META_CAPABILITY, DELETE_META_CAPABILITY, GET_META_CAPABILITY)
CONSOLE_CAPABILITY = "console"  # may sign in to the operator console (/console)


class Operation(StrEnum):
    """One endpoint of the family; its name is its path's last segment and the capability it requires."""

    CREATE = CREATE_META_CAPABILITY
    UPDATE = UPDATE_META_CAPABILITY
    DELETE = DELETE_META_CAPABILITY
    GET = GET_META_CAPABILITY

    @property
    def capability(self) -> str:
        return self.value


class ExtensionCode(IntEnum):
    """keymeta's own codes, outside the vendor's table (docs/api.md lists them apart).

    Four digits so they can never collide with a vendor code (all three digits); the first three of a refusal
    read as its HTTP status (4290 is 429). Same envelope, same signing, same audit trail as a vendor code.
    """

    RATE_LIMITED = 4290
    IDEMPOTENCY_KEY_REUSED = 4220
    IDEMPOTENCY_IN_PROGRESS = 4090
    META_FOUND = 4540
    META_NOT_FOUND = 4541
    SERVICE_UNAVAILABLE = 5030  # the database cannot be reached: nothing was decided, retry after Retry-After

    @property
    def message(self) -> str:
        return _EXTENSION_MESSAGES[self]

    @property
    def http_status(self) -> int:
        return _EXTENSION_HTTP_STATUS.get(self, 200)


_EXTENSION_HTTP_STATUS = {
    ExtensionCode.RATE_LIMITED: 429,
    ExtensionCode.IDEMPOTENCY_KEY_REUSED: 422,
    ExtensionCode.IDEMPOTENCY_IN_PROGRESS: 409,
    ExtensionCode.SERVICE_UNAVAILABLE: 503,
}

_EXTENSION_MESSAGES = {
    ExtensionCode.RATE_LIMITED: "Too many requests",
    ExtensionCode.IDEMPOTENCY_KEY_REUSED: "Idempotency key reused with different parameters",
    ExtensionCode.IDEMPOTENCY_IN_PROGRESS: "A request with this idempotency key is in progress",
    ExtensionCode.META_FOUND: "Metadata found",
    ExtensionCode.META_NOT_FOUND: _KEY_MISSING,
    ExtensionCode.SERVICE_UNAVAILABLE: "Service temporarily unavailable",
}

AnyCode = Code | ExtensionCode
