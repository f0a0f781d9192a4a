"""The checks of create-license-key-meta (docs/api.md): every code with its exact message and HTTP status,
and the order."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from domain import catalog
from domain.access import api_keys, block_rules
from domain.catalog.models import LicenseKey
from domain.platform.database import unit_of_work
from domain.platform.models import utcnow
from domain.signing.keys import product_scope
from domain.signing.models import SigningKey
from tests.api.conftest import (
    ENDPOINT,
    assert_envelope,
    assert_refused_and_audited,
    counts,
    meta_rows,
    new_outbox_events,
    unique_ip,
)
from tests.conftest import CLIENT_IP, World, make_world


@pytest.fixture
def client(shared_client):
    return shared_client


def _set_license(world: World, **values: object) -> None:
    with unit_of_work() as session:
        session.execute(update(LicenseKey).where(LicenseKey.key == world.license_key).values(**values))


def _key_with(**kwargs: object) -> str:
    with unit_of_work() as session:
        return api_keys.create_api_key(session, name="codes test", **kwargs).secret  # type: ignore[arg-type]


def _inactive_key() -> str:
    with unit_of_work() as session:
        issued = api_keys.create_api_key(session, name="codes test")
        api_keys.deactivate_api_key(session, issued.row.id)
        return issued.secret


def _block(*, ip: str | None = None, identifier: str | None = None) -> None:
    with unit_of_work() as session:
        block_rules.add_block_rule(session, ip=ip, identifier=identifier)


def _post(client, world: World, **overrides: str):
    return client.post(ENDPOINT, data=world.form(**overrides))


def _refused(client, world: World, code: int, *, used: str = "global", scope: str = "global",
             **overrides: str) -> dict:
    before = counts()
    response = _post(client, world, **overrides)
    inner = assert_envelope(response, code, used=used, scope=scope)
    assert_refused_and_audited(before, response, code)
    return inner


# --- one test per check, in order -------------------------------------------------------------------
def test_100_unknown_api_key(client, world) -> None:
    _refused(client, world, 100, api_key="km_not-a-key")


def _refused_without(client, world, field: str, code: int) -> None:
    form = world.form()
    del form[field]
    before = counts()
    response = client.post(ENDPOINT, data=form)
    assert_envelope(response, code)
    assert_refused_and_audited(before, response, code)


def test_100_missing_api_key(client, world) -> None:
    _refused_without(client, world, "api_key", 100)


def test_101_inactive_api_key(client, world) -> None:
    _refused(client, world, 101, api_key=_inactive_key())


def test_101_expired_api_key(client, world) -> None:
    _refused(client, world, 101, api_key=_key_with(expires_at=utcnow() - dt.timedelta(seconds=1)))


def test_api_key_expiring_later_is_accepted(client, world) -> None:
    response = _post(client, world, api_key=_key_with(expires_at=utcnow() + dt.timedelta(hours=1)))
    assert_envelope(response, 453)


def test_102_missing_capability(client, settings) -> None:
    world = make_world(capabilities=[api_keys.MANAGE_WEBHOOKS_CAPABILITY])
    _refused(client, world, 102)


def test_103_ip_not_allowed(client, settings) -> None:
    world = make_world(allowed_cidrs=["198.51.100.0/24"])
    _refused(client, world, 103)


def test_103_passes_when_ip_is_in_an_allowed_cidr(client, settings) -> None:
    world = make_world(allowed_cidrs=["198.51.100.0/24", f"{CLIENT_IP}/32"])
    assert_envelope(_post(client, world), 453)


def test_150_blocked_ip(client_at, world) -> None:
    ip = unique_ip()
    _block(ip=f"{ip}/32")
    _refused(client_at(ip), world, 150)


def test_150_blocked_ip_range(client_at, world) -> None:
    ip = unique_ip()
    _block(ip=f"{ip}/31")
    _refused(client_at(ip), world, 150)


def test_150_blocked_identifier_case_insensitively(client, world) -> None:
    _block(identifier=world.identifier.upper())
    _refused(client, world, 150)


def test_215_missing_identifier(client, world) -> None:
    _refused(client, world, 215, identifier="")


def test_210_unknown_license_key(client, world) -> None:
    _refused(client, world, 210, license_key="NO-SUCH-KEY")


def test_210_license_key_is_case_sensitive_on_every_backend(client, world) -> None:
    _refused(client, world, 210, license_key=world.license_key.lower())


def test_210_missing_license_key(client, world) -> None:
    _refused_without(client, world, "license_key", 210)


def test_204_blocked_license(client, settings) -> None:
    _refused(client, make_world(status="blocked"), 204)


@pytest.mark.parametrize("status", ["available", "reserved"])
def test_201_license_not_assigned(client, settings, status: str) -> None:
    _refused(client, make_world(status=status), 201)


def test_205_license_expired(client, settings) -> None:
    world = make_world(validity_days=30)
    _set_license(world, assigned_at=utcnow() - dt.timedelta(days=30, seconds=1))
    _refused(client, world, 205)


def test_license_within_validity_is_accepted(client, settings) -> None:
    world = make_world(validity_days=30)
    _set_license(world, assigned_at=utcnow() - dt.timedelta(days=29, hours=23))
    assert_envelope(_post(client, world), 453)


def test_validity_zero_never_expires(client, settings) -> None:
    world = make_world(validity_days=0)
    _set_license(world, assigned_at=utcnow() - dt.timedelta(days=365 * 30))
    assert_envelope(_post(client, world), 453)


def test_203_product_inactive(client, settings) -> None:
    _refused(client, make_world(product_active=False), 203)


def test_202_no_activation(client, settings) -> None:
    _refused(client, make_world(activate=False), 202)


def test_202_activation_is_for_another_identifier(client, world) -> None:
    _refused(client, world, 202, identifier="someone-else.example")


def test_450_missing_meta_key(client, world) -> None:
    _refused(client, world, 450, key="")


def test_451_missing_meta_value(client, world) -> None:
    _refused(client, world, 451, value="")


def test_452_meta_key_exists_on_the_license(client, world) -> None:
    first = _post(client, world, key="dup")
    assert_envelope(first, 453)
    before = counts()
    second = _post(client, world, key="dup", value="other value")
    assert_envelope(second, 452)
    after = counts()
    assert after.meta == before.meta and after.outbox == before.outbox + 1
    assert [event.outcome_code for event in new_outbox_events(before)] == [452]
    [row] = meta_rows(world.license_key)
    assert row.value == "test value"


def test_452_key_belongs_to_the_license_not_the_identifier(client, world) -> None:
    other_identifier = "second.example"
    with unit_of_work() as session:
        catalog.activate(session, license_key=world.license_key, identifier=other_identifier)
    assert_envelope(_post(client, world, key="shared"), 453)
    assert_envelope(_post(client, world, key="shared", identifier=other_identifier), 452)


def test_453_created_stores_the_row_and_one_created_event(client, world) -> None:
    before = counts()
    response = _post(client, world, key="color", value="blue")
    inner = assert_envelope(response, 453)
    assert list(inner) == ["code", "message", "meta_id", "timestamp"]
    [row] = meta_rows(world.license_key)
    assert (row.id, row.key, row.value, row.identifier) == (inner["meta_id"], "color", "blue", world.identifier)
    after = counts()
    assert (after.meta, after.outbox) == (before.meta + 1, before.outbox + 1)
    [event] = new_outbox_events(before)
    assert (event.type, event.subject_id, event.outcome_code) == ("license_key_meta.created", row.id, 453)
    assert event.request_id == response.headers["x-request-id"]


def test_same_key_on_two_licenses_is_two_rows(client, settings) -> None:
    a, b = make_world(), make_world()
    assert_envelope(_post(client, a, key="same"), 453)
    assert_envelope(_post(client, b, key="same"), 453)


# --- order: a request failing two checks gets the earlier code --------------------------------------
def test_order_901_before_authentication(client, world) -> None:
    _refused(client, world, 901, api_key="km_unknown", key="k" * 256)


def test_order_100_before_150(client_at, world) -> None:
    ip = unique_ip()
    _block(ip=ip)
    _refused(client_at(ip), world, 100, api_key="km_unknown")


def test_order_101_before_102(client, world) -> None:
    with unit_of_work() as session:
        issued = api_keys.create_api_key(session, name="t", capabilities=[api_keys.MANAGE_WEBHOOKS_CAPABILITY])
        api_keys.deactivate_api_key(session, issued.row.id)
    _refused(client, world, 101, api_key=issued.secret)


def test_order_expired_101_before_102(client, world) -> None:
    key = _key_with(capabilities=[api_keys.MANAGE_WEBHOOKS_CAPABILITY], expires_at=utcnow() - dt.timedelta(days=1))
    _refused(client, world, 101, api_key=key)


def test_order_102_before_103(client, world) -> None:
    key = _key_with(capabilities=[api_keys.MANAGE_WEBHOOKS_CAPABILITY], allowed_cidrs=["198.51.100.0/24"])
    _refused(client, world, 102, api_key=key)


def test_order_103_before_150(client_at, world) -> None:
    ip = unique_ip()
    _block(ip=ip)
    key = _key_with(allowed_cidrs=["198.51.100.0/24"])
    _refused(client_at(ip), world, 103, api_key=key)


def test_order_150_before_215(client_at, world) -> None:
    ip = unique_ip()
    _block(ip=ip)
    _refused(client_at(ip), world, 150, identifier="")


def test_order_215_before_210(client, world) -> None:
    _refused(client, world, 215, identifier=" ", license_key="NO-SUCH-KEY")


def test_order_210_before_450(client, world) -> None:
    _refused(client, world, 210, license_key="NO-SUCH-KEY", key="", value="")


def test_order_204_before_201_205_203_202(client, settings) -> None:
    world = make_world(status="blocked", validity_days=1, product_active=False, activate=False)
    _set_license(world, assigned_at=utcnow() - dt.timedelta(days=10))
    _refused(client, world, 204, key="", value="")


def test_order_201_before_203_202(client, settings) -> None:
    _refused(client, make_world(status="reserved", product_active=False, activate=False), 201)


def test_order_205_before_203_202(client, settings) -> None:
    world = make_world(validity_days=1, product_active=False, activate=False)
    _set_license(world, assigned_at=utcnow() - dt.timedelta(days=2))
    _refused(client, world, 205)


def test_order_203_before_202_450(client, settings) -> None:
    _refused(client, make_world(product_active=False, activate=False), 203, key="")


def test_order_202_before_450(client, settings) -> None:
    _refused(client, make_world(activate=False), 202, key="", value="")


def test_order_450_before_451(client, world) -> None:
    _refused(client, world, 450, key="", value="")


def test_order_451_before_452(client, world) -> None:
    assert_envelope(_post(client, world, key="taken"), 453)
    _refused(client, world, 451, key="taken", value="  ")


# --- private_key_used --------------------------------------------------------------------------------
def _own(**kwargs: object) -> World:
    return make_world(own_key=True, **kwargs)  # type: ignore[arg-type]


def test_product_key_signs_success_and_452(client, settings) -> None:
    world = _own()
    scope = product_scope(world.product_id)
    assert_envelope(_post(client, world, key="k"), 453, used="product", scope=scope)
    assert_envelope(_post(client, world, key="k"), 452, used="product", scope=scope)
    assert_envelope(_post(client, world, key=""), 450, used="product", scope=scope)
    assert_envelope(_post(client, world, value=""), 451, used="product", scope=scope)
    assert_envelope(_post(client, world, identifier="not-activated.example"), 202, used="product", scope=scope)


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"status": "blocked"}, 204),
    ({"status": "available"}, 201),
    ({"product_active": False}, 203),
])
def test_product_key_signs_license_refusals_after_resolution(client, settings, kwargs: dict, code: int) -> None:
    world = _own(**kwargs)
    _refused(client, world, code, used="product", scope=product_scope(world.product_id))


def test_product_key_signs_205(client, settings) -> None:
    world = _own(validity_days=1)
    _set_license(world, assigned_at=utcnow() - dt.timedelta(days=2))
    _refused(client, world, 205, used="product", scope=product_scope(world.product_id))


def test_global_key_signs_before_product_resolution(client, settings) -> None:
    world = _own()
    for overrides, code in [({"api_key": "km_unknown"}, 100), ({"identifier": ""}, 215),
                            ({"license_key": "NO-SUCH-KEY"}, 210), ({"key": "k" * 256}, 901)]:
        _refused(client, world, code, **overrides)


def test_global_key_signs_101_102_103_150_even_for_an_own_key_product(client_at, settings) -> None:
    world = _own()
    client = client_at(CLIENT_IP)
    _refused(client, world, 101, api_key=_inactive_key())
    _refused(client, world, 102, api_key=_key_with(capabilities=[api_keys.MANAGE_WEBHOOKS_CAPABILITY]))
    _refused(client, world, 103, api_key=_key_with(allowed_cidrs=["198.51.100.0/24"]))
    ip = unique_ip()
    _block(ip=ip)
    _refused(client_at(ip), world, 150)


def test_product_without_own_key_is_signed_globally(client, world) -> None:
    assert_envelope(_post(client, world), 453, used="global")


def test_own_key_product_whose_key_is_retired_falls_back_to_global(client, settings) -> None:
    world = _own()
    with unit_of_work() as session:
        session.execute(update(SigningKey).where(SigningKey.scope == product_scope(world.product_id))
                        .values(state="retired", private_key_encrypted=None))
    assert_envelope(_post(client, world), 453, used="global")
