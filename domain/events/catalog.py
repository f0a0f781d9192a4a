"""The event catalog, as data: every webhook event type, its description, the JSON Schema (draft 2020-12) of its
whole payload and an example that validates. ``GET /api/v1/event-types`` serves it.

A schema describes what the service really sends (``domain.webhooks.fan_out`` builds the bodies), so a consumer
may validate every delivery with it; ``tests/domain/webhooks/test_payload_schemas.py`` holds the service to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.events.outbox import (
    META_CREATED,
    META_DELETED,
    META_UPDATED,
    SIGNING_KEY_ACTIVATED,
    SIGNING_KEY_CREATED,
    SIGNING_KEY_RETIRED,
    SIGNING_KEY_REVOKED,
)

# Sent only on request, to one endpoint (``domain.webhooks.test_events``): in the catalog so consumers can
# validate it, never subscribable and never fanned out.
WEBHOOK_TEST = "webhook.test"

DIALECT = "https://json-schema.org/draft/2020-12/schema"
Schema = dict[str, Any]

# --- shared pieces ---------------------------------------------------------------------------------------
TIMESTAMP: Schema = {"type": "string", "format": "date-time", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
                     "description": "UTC, ISO 8601, seconds precision, `Z` suffix"}
ROW_ID: Schema = {"type": "integer", "minimum": 1}
SHORT_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": 255}
# 10 KiB of UTF-8 is at most 10240 characters.
META_VALUE: Schema = {"type": "string", "minLength": 1, "maxLength": 10240}


def _object(properties: dict[str, Schema], description: str | None = None) -> Schema:
    """A fixed shape: every property required, nothing else allowed."""
    schema: Schema = {"type": "object", "required": list(properties), "properties": properties,
                      "additionalProperties": False}
    if description:
        schema["description"] = description
    return schema


def _meta_fields(version: Schema) -> dict[str, Schema]:
    """What every ``license_key_meta.*`` event says about the row (``version`` differs per type)."""
    return {
        "meta_id": {**ROW_ID, "description": "the meta row; a re-created key is a new meta_id"},
        "version": {**version, "description": "changes of this row: 1 at create, +1 per changed value, +1 at "
                                              "delete; apply only a version higher than the one you hold"},
        "license_key": {**SHORT_TEXT, "description": "the full license key"},
        "product_id": ROW_ID,
        "identifier": {"type": ["string", "null"], "minLength": 1, "maxLength": 255,
                       "description": "who wrote the row; null when a management API key wrote it"},
        "key": {**SHORT_TEXT, "description": "the meta key"},
        "value": META_VALUE,
        "created_at": TIMESTAMP,
    }


_SIGNING_STATES = ["pending", "active", "retired", "revoked"]


def _signing_key_fields(from_state: Schema, to_state: str) -> dict[str, Schema]:
    """What every ``signing_key.*`` event says about the key (never key material)."""
    return {
        "kid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$",
                "description": "RFC 7638 thumbprint, as in /api/v1/public-keys and the JWKS"},
        "scope": {"type": "string", "pattern": "^(global|product:[0-9]+)$"},
        "product_id": {"type": ["integer", "null"], "minimum": 1,
                       "description": "the product of a `product:<id>` scope; null for `global`"},
        "from_state": from_state,
        "to_state": {"const": to_state},
        "reason": {"type": "string", "minLength": 1, "description": "why the transition happened, for humans"},
        "key_size": {"type": "integer", "enum": [2048, 3072, 4096], "description": "RSA modulus bits"},
    }


def _state(*states: str) -> Schema:
    return {"type": "string", "enum": list(states)} if len(states) > 1 else {"const": states[0]}


# --- the catalog -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    data_schema: Schema
    example_data: dict[str, Any]
    example_timestamp: str = "2026-11-26T18:00:00Z"

    @property
    def schema(self) -> Schema:
        """The whole webhook body: ``{"type", "timestamp", "data"}``."""
        return {
            "$schema": DIALECT,
            "$id": f"urn:keymeta:event-type:{self.name}",
            "title": self.name,
            "description": self.description,
            **_object({"type": {"const": self.name}, "timestamp": TIMESTAMP, "data": self.data_schema}),
        }

    @property
    def example(self) -> dict[str, Any]:
        return {"type": self.name, "timestamp": self.example_timestamp, "data": self.example_data}

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "schema": self.schema, "example": self.example}


_META_EXAMPLE: dict[str, Any] = {"meta_id": 1, "version": 1, "license_key": "DEMO-0000-0000-0001", "product_id": 1,
                                 "identifier": "domain.ltd", "key": "test-key", "value": "test value",
                                 "created_at": "2026-11-26T18:00:00Z"}
_KEY_EXAMPLE: dict[str, Any] = {"kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "scope": "product:7",
                                "product_id": 7, "key_size": 2048}

EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        META_CREATED,
        "A meta key was created on a license key (code 453).",
        _object(_meta_fields({"const": 1})),
        _META_EXAMPLE,
    ),
    EventType(
        META_UPDATED,
        "A meta key's value was replaced by a different one (code 353; an update to the same value sends none).",
        _object({**_meta_fields({"type": "integer", "minimum": 2}),
                 "previous_value": META_VALUE, "updated_at": TIMESTAMP}),
        {**_META_EXAMPLE, "version": 2, "value": "new value", "previous_value": "test value",
         "updated_at": "2026-11-27T09:30:00Z"},
        "2026-11-27T09:30:00Z",
    ),
    EventType(
        META_DELETED,
        "A meta key was deleted from a license key (code 252); `value` is its last value.",
        _object({**_meta_fields({"type": "integer", "minimum": 2}), "deleted_at": TIMESTAMP}),
        {**_META_EXAMPLE, "version": 2, "deleted_at": "2026-11-28T12:00:00Z"},
        "2026-11-28T12:00:00Z",
    ),
    EventType(
        SIGNING_KEY_CREATED,
        "A new signing key was created `pending`: published at once, it signs after the overlap.",
        _object(_signing_key_fields({"type": "null"}, "pending")),
        {**_KEY_EXAMPLE, "from_state": None, "to_state": "pending", "reason": "rotation requested"},
    ),
    EventType(
        SIGNING_KEY_ACTIVATED,
        "A pending signing key became `active`: responses of its scope are signed with it from now on.",
        _object(_signing_key_fields(_state("pending"), "active")),
        {**_KEY_EXAMPLE, "from_state": "pending", "to_state": "active", "reason": "overlap elapsed"},
    ),
    EventType(
        SIGNING_KEY_RETIRED,
        "The active signing key was replaced and is `retired`: it signs nothing more, its public half stays "
        "published so its signatures still verify.",
        _object(_signing_key_fields(_state("active"), "retired")),
        {**_KEY_EXAMPLE, "from_state": "active", "to_state": "retired", "reason": "overlap elapsed"},
    ),
    EventType(
        SIGNING_KEY_REVOKED,
        "A signing key was `revoked`: stop trusting signatures made with it.",
        _object(_signing_key_fields(_state("pending", "active", "retired"), "revoked")),
        {**_KEY_EXAMPLE, "from_state": "active", "to_state": "revoked", "reason": "revoked by operator"},
    ),
    EventType(
        WEBHOOK_TEST,
        "A test event, sent to one endpoint only when an operator or the endpoint's consumer asks for it (console, "
        "portal); it reports no change and needs no subscription.",
        _object({"endpoint_id": {**ROW_ID, "description": "the endpoint it was sent to"},
                 "message": {"type": "string", "minLength": 1, "maxLength": 255}}),
        {"endpoint_id": 12, "message": "A test event sent on request; it reports no change."},
    ),
)
# Types sent only on request, outside fan-out: every other type in the catalog is subscribable.
ON_REQUEST_TYPES: frozenset[str] = frozenset({WEBHOOK_TEST})

BY_NAME: dict[str, EventType] = {event_type.name: event_type for event_type in EVENT_TYPES}


def schema_of(event_type: str) -> Schema:
    """The payload schema of a webhook event type; ``KeyError`` for a type that is not in the catalog."""
    return BY_NAME[event_type].schema


def catalog_document() -> dict[str, Any]:
    """``GET /api/v1/event-types``: every type, in catalog order."""
    return {"event_types": [event_type.document() for event_type in EVENT_TYPES]}
