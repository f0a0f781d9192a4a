"""The event catalog (domain.events.catalog): valid draft 2020-12 schemas, examples that validate, exactly the
webhook-subscribable types, and schemas strict enough to refuse a wrong payload."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from domain.events.catalog import BY_NAME, EVENT_TYPES, ON_REQUEST_TYPES, EventType, catalog_document, schema_of
from domain.events.outbox import WEBHOOK_EVENT_TYPES, needs_fan_out

NAMES = [event_type.name for event_type in EVENT_TYPES]
META_TYPES = [name for name in NAMES if name.startswith("license_key_meta.")]
SIGNING_KEY_TYPES = [name for name in NAMES if name.startswith("signing_key.")]


def errors(event_type: str, payload: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema_of(event_type),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return [error.message for error in validator.iter_errors(payload)]


def example(event_type: str) -> dict[str, Any]:
    return copy.deepcopy(BY_NAME[event_type].example)


@pytest.fixture(params=EVENT_TYPES, ids=lambda event_type: event_type.name)
def event_type(request: pytest.FixtureRequest) -> EventType:
    event_type: EventType = request.param
    return event_type


def test_the_catalog_lists_every_webhook_type_and_nothing_else() -> None:
    assert len(NAMES) == len(set(NAMES)), "a type is listed twice"
    assert set(NAMES) - WEBHOOK_EVENT_TYPES - ON_REQUEST_TYPES == set(), "listed, but never sent"
    assert WEBHOOK_EVENT_TYPES - set(NAMES) == set(), "subscribable, but missing from the catalog"


def test_a_type_sent_on_request_is_never_subscribable_or_fanned_out() -> None:
    assert {"webhook.test"} == ON_REQUEST_TYPES
    assert not ON_REQUEST_TYPES & WEBHOOK_EVENT_TYPES
    assert not any(needs_fan_out(name) for name in ON_REQUEST_TYPES)


def test_the_catalog_covers_the_spec_types() -> None:
    assert set(NAMES) == {"license_key_meta.created", "license_key_meta.updated", "license_key_meta.deleted",
                          "signing_key.created", "signing_key.activated", "signing_key.retired",
                          "signing_key.revoked", "webhook.test"}


def test_every_schema_is_a_valid_draft_2020_12_schema(event_type: EventType) -> None:
    schema = event_type.schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_example_validates_against_its_schema(event_type: EventType) -> None:
    assert event_type.example["type"] == event_type.name
    assert errors(event_type.name, event_type.example) == []


def test_every_entry_has_a_description(event_type: EventType) -> None:
    assert event_type.description.strip()
    assert event_type.schema["description"] == event_type.description


def test_the_document_is_json_and_lists_the_catalog_in_order() -> None:
    document = json.loads(json.dumps(catalog_document()))
    assert [entry["name"] for entry in document["event_types"]] == NAMES
    assert all(set(entry) == {"name", "description", "schema", "example"} for entry in document["event_types"])


def test_the_spec_example_of_a_created_event_validates() -> None:
    """SPEC §2's published payload, copied verbatim."""
    payload = {"type": "license_key_meta.created", "timestamp": "2026-11-26T18:00:00Z",
               "data": {"meta_id": 1, "version": 1, "license_key": "...", "product_id": 1, "identifier": "domain.ltd",
                        "key": "test-key", "value": "test value", "created_at": "2026-11-26T18:00:00Z"}}
    assert errors("license_key_meta.created", payload) == []


@pytest.mark.parametrize("name", META_TYPES)
def test_a_meta_event_without_an_identifier_validates(name: str) -> None:
    payload = example(name)
    payload["data"]["identifier"] = None
    assert errors(name, payload) == []


# --- the schemas refuse what is wrong ------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["type", "timestamp", "data"])
def test_a_payload_missing_an_envelope_field_fails(event_type: EventType, field: str) -> None:
    payload = example(event_type.name)
    del payload[field]
    assert errors(event_type.name, payload)


def test_every_data_field_is_required(event_type: EventType) -> None:
    for field in event_type.example_data:
        payload = example(event_type.name)
        del payload["data"][field]
        assert errors(event_type.name, payload), f"{event_type.name} accepts a payload without data.{field}"


def test_an_unknown_data_field_fails(event_type: EventType) -> None:
    payload = example(event_type.name)
    payload["data"]["surprise"] = 1
    assert errors(event_type.name, payload)


def test_an_unknown_envelope_field_fails(event_type: EventType) -> None:
    payload = example(event_type.name)
    payload["surprise"] = 1
    assert errors(event_type.name, payload)


def test_another_types_name_fails(event_type: EventType) -> None:
    payload = example(event_type.name)
    payload["type"] = next(name for name in NAMES if name != event_type.name)
    assert errors(event_type.name, payload)


@pytest.mark.parametrize("timestamp", ["2026-11-26T18:00:00+00:00", "2026-11-26T18:00:00.123Z", "2026-11-26",
                                       1795720800, "2026-11-26 18:00:00Z"])
def test_a_timestamp_not_in_utc_seconds_with_z_fails(event_type: EventType, timestamp: Any) -> None:
    payload = example(event_type.name)
    payload["timestamp"] = timestamp
    assert errors(event_type.name, payload)


@pytest.mark.parametrize("name", META_TYPES)
@pytest.mark.parametrize(("field", "wrong"), [
    ("meta_id", "1"), ("meta_id", 0), ("meta_id", 1.5), ("version", "1"), ("license_key", 1), ("license_key", ""),
    ("product_id", None), ("identifier", 7), ("key", None), ("value", 1), ("value", ""), ("created_at", "yesterday"),
])
def test_a_meta_field_of_the_wrong_type_fails(name: str, field: str, wrong: Any) -> None:
    payload = example(name)
    payload["data"][field] = wrong
    assert errors(name, payload), f"{name} accepts data.{field} = {wrong!r}"


def test_versions_follow_the_row_lifecycle() -> None:
    created = example("license_key_meta.created")
    created["data"]["version"] = 2
    assert errors("license_key_meta.created", created), "a created event is always version 1"
    for name in ("license_key_meta.updated", "license_key_meta.deleted"):
        payload = example(name)
        payload["data"]["version"] = 1
        assert errors(name, payload), f"{name} follows a create: version 2 or more"


@pytest.mark.parametrize(("name", "field"), [("license_key_meta.updated", "previous_value"),
                                             ("license_key_meta.updated", "updated_at"),
                                             ("license_key_meta.deleted", "deleted_at")])
def test_the_fields_of_one_type_are_refused_in_the_others(name: str, field: str) -> None:
    payload = example("license_key_meta.created")
    payload["data"][field] = example(name)["data"][field]
    assert errors("license_key_meta.created", payload)


@pytest.mark.parametrize("name", SIGNING_KEY_TYPES)
@pytest.mark.parametrize(("field", "wrong"), [
    ("kid", "short"), ("kid", None), ("scope", "product:"), ("scope", "tenant:1"), ("product_id", "7"),
    ("to_state", "deleted"), ("reason", ""), ("key_size", 1024), ("key_size", "2048"),
])
def test_a_signing_key_field_of_the_wrong_type_fails(name: str, field: str, wrong: Any) -> None:
    payload = example(name)
    payload["data"][field] = wrong
    assert errors(name, payload), f"{name} accepts data.{field} = {wrong!r}"


@pytest.mark.parametrize(("name", "from_state", "to_state"), [
    ("signing_key.created", "active", "pending"),
    ("signing_key.activated", "retired", "active"),
    ("signing_key.activated", "pending", "retired"),
    ("signing_key.retired", "pending", "retired"),
    ("signing_key.revoked", None, "revoked"),
    ("signing_key.revoked", "revoked", "revoked"),
])
def test_a_transition_the_state_machine_never_makes_fails(name: str, from_state: str | None, to_state: str) -> None:
    payload = example(name)
    payload["data"].update(from_state=from_state, to_state=to_state)
    assert errors(name, payload)


@pytest.mark.parametrize("name", SIGNING_KEY_TYPES)
def test_a_global_scope_key_has_no_product(name: str) -> None:
    payload = example(name)
    payload["data"].update(scope="global", product_id=None)
    assert errors(name, payload) == []


def test_signing_key_events_carry_no_audit_context_and_no_key_material() -> None:
    for name in SIGNING_KEY_TYPES:
        properties = set(BY_NAME[name].data_schema["properties"])
        assert properties == {"kid", "scope", "product_id", "from_state", "to_state", "reason", "key_size"}
