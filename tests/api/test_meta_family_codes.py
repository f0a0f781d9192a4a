"""update-, delete- and get-license-key-meta (docs/api.md): steps 1–12 exactly as create runs them, with each
endpoint's own capability, then each endpoint's own checks with exact messages, status and signature; every
request leaves exactly one outbox event."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from domain.access import api_keys, block_rules
from domain.catalog.models import LicenseKey
from domain.license_meta.codes import (
    CREATE_META_CAPABILITY,
    DELETE_META_CAPABILITY,
    GET_META_CAPABILITY,
    UPDATE_META_CAPABILITY,
)
from domain.platform.database import unit_of_work
from domain.platform.models import utcnow
from domain.signing.keys import product_scope
from tests.api.conftest import (
    MESSAGES,
    assert_envelope,
    counts,
    meta_rows,
    new_outbox_events,
    unique_ip,
)
from tests.conftest import World, make_world

MESSAGES.update({
    350: "Meta key is required", 351: "Meta value is required", 352: "Meta key doesn't exist",
    353: "Metadata updated", 250: "Meta key is required", 251: "Meta key doesn't exist", 252: "Metadata deleted",
    4540: "Metadata found", 4541: "Meta key doesn't exist",
})
ALL = [CREATE_META_CAPABILITY, UPDATE_META_CAPABILITY, DELETE_META_CAPABILITY, GET_META_CAPABILITY]
OPERATIONS = ["update", "delete", "get"]
REFUSED_TYPE = {"update": "license_key_meta.update_refused", "delete": "license_key_meta.delete_refused",
                "get": "license_key_meta.read_refused"}


@pytest.fixture
def client(shared_client):
    return shared_client


def family_world(**kwargs: object) -> World:
    return make_world(capabilities=ALL, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def world(settings) -> World:
    return family_world()


def path(operation: str, prefix: str = "/api/v1/") -> str:
    return f"{prefix}{operation}-license-key-meta"


def post(client, operation: str, world: World, prefix: str = "/api/v1/", **overrides: str | None):
    form = world.form(**{k: v for k, v in overrides.items() if v is not None})
    for name in [k for k, v in overrides.items() if v is None]:
        del form[name]
    if operation in ("delete", "get"):
        form.pop("value")
    return client.post(path(operation, prefix), data=form)


def create(client, world: World, key: str, value: str = "first") -> int:
    inner = assert_envelope(post(client, "create", world, key=key, value=value), 453)
    return int(inner["meta_id"])


def refused(client, operation: str, world: World, code: int, *, used: str = "global", scope: str = "global",
            **overrides: str | None) -> dict:
    before = counts()
    response = post(client, operation, world, **overrides)
    inner = assert_envelope(response, code, used=used, scope=scope)
    after = counts()
    assert after.meta == before.meta, "a refused request changed the meta rows"
    [event] = new_outbox_events(before)
    assert (event.type, event.outcome_code) == (REFUSED_TYPE[operation], code)
    assert event.request_id == response.headers["x-request-id"]
    return inner


def _key_with(**kwargs: object) -> str:
    with unit_of_work() as session:
        return api_keys.create_api_key(session, name="family", **kwargs).secret  # type: ignore[arg-type]


def _set_license(world: World, **values: object) -> None:
    with unit_of_work() as session:
        session.execute(update(LicenseKey).where(LicenseKey.key == world.license_key).values(**values))


# --- steps 1–12, per operation -----------------------------------------------------------------------------
@pytest.mark.parametrize("operation", OPERATIONS)
def test_steps_1_to_12_in_order(client, client_at, settings, operation: str) -> None:
    world = family_world()
    create(client, world, "present")
    refused(client, operation, world, 100, api_key="km_not-a-key", key="present")
    with unit_of_work() as session:
        issued = api_keys.create_api_key(session, name="t", capabilities=ALL)
        api_keys.deactivate_api_key(session, issued.row.id)
    refused(client, operation, world, 101, api_key=issued.secret, key="present")
    expired = _key_with(capabilities=ALL, expires_at=utcnow() - dt.timedelta(minutes=1))
    refused(client, operation, world, 101, api_key=expired, key="present")
    refused(client, operation, world, 103, api_key=_key_with(capabilities=ALL, allowed_cidrs=["198.51.100.0/24"]),
            key="present")
    ip = unique_ip()
    with unit_of_work() as session:
        block_rules.add_block_rule(session, ip=f"{ip}/32")
    refused(client_at(ip), operation, world, 150, key="present")
    refused(client, operation, world, 215, identifier="  ", key="present")
    refused(client, operation, world, 210, license_key="NO-SUCH-KEY", key="present")
    refused(client, operation, world, 210, license_key=None, key="present")
    refused(client, operation, world, 202, identifier="someone-else.example", key="present")
    assert [row.key for row in meta_rows(world.license_key)] == ["present"]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_102_each_endpoint_needs_its_own_capability(client, settings, operation: str) -> None:
    others = [c for c in ALL if not c.startswith(operation)]
    world = make_world(capabilities=others)
    refused(client, operation, world, 102)
    assert_envelope(post(client, operation, make_world(capabilities=[f"{operation}-license-key-meta"])),
                    {"update": 352, "delete": 251, "get": 4541}[operation])


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(("kwargs", "code"), [
    ({"status": "blocked"}, 204), ({"status": "available"}, 201), ({"status": "reserved"}, 201),
    ({"product_active": False}, 203), ({"activate": False}, 202),
])
def test_license_checks_sign_with_the_product_key(client, settings, operation: str, kwargs: dict,
                                                  code: int) -> None:
    world = family_world(own_key=True, **kwargs)
    refused(client, operation, world, code, used="product", scope=product_scope(world.product_id), key="k")


@pytest.mark.parametrize("operation", OPERATIONS)
def test_205_expired_license(client, settings, operation: str) -> None:
    world = family_world(validity_days=1)
    _set_license(world, assigned_at=utcnow() - dt.timedelta(days=2))
    refused(client, operation, world, 205, key="k")


@pytest.mark.parametrize("operation", OPERATIONS)
def test_901_over_a_limit_before_authentication(client, world, operation: str) -> None:
    inner = refused(client, operation, world, 901, api_key="km_unknown", key="k" * 256)
    assert inner["errors"] == {"key": ["must be at most 255 characters (got 256)"]}


# --- update ------------------------------------------------------------------------------------------------
def test_350_update_without_key(client, world) -> None:
    refused(client, "update", world, 350, key="")


def test_350_before_351(client, world) -> None:
    refused(client, "update", world, 350, key=None, value=None)


def test_351_update_without_value(client, world) -> None:
    create(client, world, "k")
    refused(client, "update", world, 351, key="k", value=" ")


def test_352_update_of_a_missing_key(client, world) -> None:
    refused(client, "update", world, 352, key="never-created")


def test_353_update_replaces_the_value_bumps_the_version_and_emits_updated(client, world) -> None:
    meta_id = create(client, world, "color", "blue")
    before = counts()
    response = post(client, "update", world, key="color", value="red")
    inner = assert_envelope(response, 353)
    assert list(inner) == ["code", "message", "meta_id", "timestamp"] and inner["meta_id"] == meta_id
    [row] = meta_rows(world.license_key)
    assert (row.id, row.value, row.version, row.identifier) == (meta_id, "red", 2, world.identifier)
    assert row.updated_at is not None
    [event] = new_outbox_events(before)
    assert (event.type, event.subject_id, event.outcome_code) == ("license_key_meta.updated", meta_id, 353)
    assert event.fanned_out_at is None  # waits for fan-out
    data = event.payload["data"]
    assert data["previous_value"] == "blue" and data["value"] == "red" and data["version"] == 2
    assert event.payload["meta_key"] == "color" and event.payload["api_key_id"] == world.api_key_id


def test_353_same_value_changes_nothing_and_emits_no_webhook_event(client, world) -> None:
    meta_id = create(client, world, "same", "v")
    before = counts()
    inner = assert_envelope(post(client, "update", world, key="same", value="v"), 353)
    assert inner["meta_id"] == meta_id
    [row] = meta_rows(world.license_key)
    assert (row.version, row.updated_at) == (1, None)
    [event] = new_outbox_events(before)
    assert (event.type, event.outcome_code) == ("license_key_meta.update_unchanged", 353)
    assert "data" not in event.payload and event.fanned_out_at is not None  # audit only


def test_update_by_another_activated_identifier_records_the_writer(client, world) -> None:
    from domain import catalog

    with unit_of_work() as session:
        catalog.activate(session, license_key=world.license_key, identifier="second.example")
    create(client, world, "shared")
    assert_envelope(post(client, "update", world, key="shared", value="x", identifier="second.example"), 353)
    [row] = meta_rows(world.license_key)
    assert row.identifier == "second.example"


def test_aliases_meta_key_and_meta_value_on_update(client, world) -> None:
    create(client, world, "aliased")
    form = {"api_key": world.api_key, "license_key": world.license_key, "identifier": world.identifier,
            "meta_key": "aliased", "meta_value": "via alias"}
    assert_envelope(client.post(path("update"), json=form), 353)
    assert meta_rows(world.license_key)[0].value == "via alias"


# --- delete ------------------------------------------------------------------------------------------------
def test_250_delete_without_key(client, world) -> None:
    refused(client, "delete", world, 250, key=" ")


def test_251_delete_of_a_missing_key(client, world) -> None:
    refused(client, "delete", world, 251, key="never-created")


def test_252_delete_removes_the_row_and_emits_deleted_with_the_last_value(client, world) -> None:
    meta_id = create(client, world, "gone", "v1")
    assert_envelope(post(client, "update", world, key="gone", value="v2"), 353)
    before = counts()
    response = post(client, "delete", world, key="gone")
    inner = assert_envelope(response, 252)
    assert list(inner) == ["code", "message", "timestamp"]  # no meta_id
    assert meta_rows(world.license_key) == []
    [event] = new_outbox_events(before)
    assert (event.type, event.subject_id, event.outcome_code) == ("license_key_meta.deleted", meta_id, 252)
    data = event.payload["data"]
    assert (data["value"], data["version"], data["key"]) == ("v2", 3, "gone")
    assert data["deleted_at"].endswith("Z")
    refused(client, "delete", world, 251, key="gone")


def test_create_after_delete_is_a_new_meta_id_at_version_1(client, world) -> None:
    first = create(client, world, "again")
    assert_envelope(post(client, "delete", world, key="again"), 252)
    second = create(client, world, "again")
    assert second != first
    [row] = meta_rows(world.license_key)
    assert (row.id, row.version) == (second, 1)


# --- get ---------------------------------------------------------------------------------------------------
def test_4540_get_without_key_lists_every_key_in_byte_order(client, world) -> None:
    for key in ["b", "a", "B", "a-1"]:
        create(client, world, key, f"value of {key}")
    assert_envelope(post(client, "update", world, key="a", value="changed"), 353)
    before = counts()
    response = post(client, "get", world, key=None)
    inner = assert_envelope(response, 4540)
    assert list(inner) == ["code", "message", "meta", "timestamp"]
    assert [m["key"] for m in inner["meta"]] == ["B", "a", "a-1", "b"]
    first = inner["meta"][1]
    assert list(first) == ["meta_id", "key", "value", "version", "created_at", "updated_at"]
    assert (first["value"], first["version"]) == ("changed", 2)
    assert first["created_at"].endswith("Z") and first["updated_at"].endswith("Z")
    assert inner["meta"][0]["updated_at"] is None
    [event] = new_outbox_events(before)
    assert (event.type, event.outcome_code) == ("license_key_meta.read", 4540)
    assert event.fanned_out_at is not None and counts().meta == before.meta


def test_4540_get_with_key_is_one_element(client, world) -> None:
    meta_id = create(client, world, "one", "v")
    create(client, world, "two", "w")
    inner = assert_envelope(post(client, "get", world, key="one"), 4540)
    assert [(m["meta_id"], m["key"], m["value"]) for m in inner["meta"]] == [(meta_id, "one", "v")]


def test_4540_get_of_a_license_without_keys_is_an_empty_list(client, world) -> None:
    response = post(client, "get", world, key=None)
    inner = assert_envelope(response, 4540)
    assert inner["meta"] == []
    assert b'"meta":[]' in response.content


def test_4541_get_of_a_missing_key(client, world) -> None:
    refused(client, "get", world, 4541, key="never-created")


def test_get_of_100_keys(client, world) -> None:
    from sqlalchemy import select

    from domain.license_meta.models import LicenseKeyMeta

    with unit_of_work() as session:
        license_id = session.scalar(select(LicenseKey.id).where(LicenseKey.key == world.license_key))
        session.add_all([LicenseKeyMeta(license_key_id=license_id, key=f"k{i:03d}", value="v" * 100,
                                        identifier=world.identifier) for i in range(100)])
    inner = assert_envelope(post(client, "get", world, key=None), 4540)
    assert [m["key"] for m in inner["meta"]] == [f"k{i:03d}" for i in range(100)]


# --- every member of the family also answers at /v1/<name> --------------------------------------------------
@pytest.mark.parametrize("operation", ["create", "update", "delete", "get"])
def test_v1_alias_answers_and_is_audited(client, world, operation: str) -> None:
    if operation != "create":
        create(client, world, "aliased")
    before = counts()
    response = post(client, operation, world, prefix="/v1/", key="aliased")
    inner = assert_envelope(response, {"create": 453, "update": 353, "delete": 252, "get": 4540}[operation])
    [event] = new_outbox_events(before)
    assert event.request_id == response.headers["x-request-id"] and event.outcome_code == inner["code"]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_other_methods_are_a_signed_audited_405(client, world, operation: str) -> None:
    before = counts()
    response = client.get(path(operation, "/v1/"))
    inner = assert_envelope(response, 901, http_status=405)
    assert inner["errors"] == {"method": ["use POST, not GET"]} and response.headers["allow"] == "POST"
    assert len(new_outbox_events(before)) == 1
