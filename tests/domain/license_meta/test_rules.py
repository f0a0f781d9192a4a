"""The pure decisions of create-license-key-meta (docs/api.md): access (steps 1–5), license (7–12), meta
fields (13–14), codes."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from domain.access.checks import ApiKeyRecord, BlockList, check_access, parse_address, parse_network
from domain.license_meta.codes import CREATE_META_CAPABILITY, Code, ExtensionCode, Operation
from domain.license_meta.rules import (
    LicenseView,
    fields_decision,
    is_expired,
    license_decision,
)
from domain.license_meta.service import mask_license_key

NOW = dt.datetime(2026, 11, 26, 18, 0, tzinfo=dt.UTC)

GOOD = LicenseView(id=1, status="assigned", validity_days=0, assigned_at=NOW - dt.timedelta(days=400),
                   product_id=7, product_active=True, product_own_key=False, activated=True)


def view(**changes: object) -> LicenseView:
    return dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]


# --- license_decision --------------------------------------------------------------------------------
def test_good_license_passes() -> None:
    assert license_decision(GOOD, NOW) is None


@pytest.mark.parametrize(("changes", "code"), [
    ({"status": "blocked"}, Code.LICENSE_BLOCKED),
    ({"status": "available"}, Code.LICENSE_NOT_ASSIGNED),
    ({"status": "reserved"}, Code.LICENSE_NOT_ASSIGNED),
    ({"validity_days": 30, "assigned_at": NOW - dt.timedelta(days=30)}, Code.LICENSE_EXPIRED),
    ({"product_active": False}, Code.PRODUCT_INACTIVE),
    ({"product_active": None}, Code.PRODUCT_INACTIVE),  # the product row does not exist
    ({"activated": False}, Code.NO_ACTIVATION),
])
def test_each_license_check(changes: dict, code: Code) -> None:
    assert license_decision(view(**changes), NOW) is code


def test_unknown_license() -> None:
    assert license_decision(None, NOW) is Code.INVALID_LICENSE_KEY


@pytest.mark.parametrize(("changes", "code"), [
    ({"status": "blocked", "validity_days": 1, "product_active": False, "activated": False}, Code.LICENSE_BLOCKED),
    ({"status": "reserved", "validity_days": 1, "product_active": None, "activated": False},
     Code.LICENSE_NOT_ASSIGNED),
    ({"validity_days": 1, "product_active": False, "activated": False}, Code.LICENSE_EXPIRED),
    ({"product_active": False, "activated": False}, Code.PRODUCT_INACTIVE),
])
def test_license_checks_in_spec_order(changes: dict, code: Code) -> None:
    assert license_decision(view(**changes), NOW) is code


# --- is_expired --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("validity_days", "age", "expired"), [
    (0, dt.timedelta(days=100_000), False),  # 0 = never
    (30, dt.timedelta(days=29, hours=23, minutes=59, seconds=59), False),
    (30, dt.timedelta(days=30), True),  # valid for 30 days, not 30 days and a moment
    (30, dt.timedelta(days=31), True),
    (1, dt.timedelta(0), False),
    (1, -dt.timedelta(days=5), False),  # assigned in the future (clock skew): not expired
])
def test_is_expired(validity_days: int, age: dt.timedelta, expired: bool) -> None:
    assert is_expired(view(validity_days=validity_days, assigned_at=NOW - age), NOW) is expired


def test_assigned_license_without_assignment_time_never_expires() -> None:
    assert is_expired(view(validity_days=1, assigned_at=None), NOW) is False


# --- meta fields, signing scope ------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value", "code"), [
    ("k", "v", None),
    (None, "v", Code.META_KEY_REQUIRED),
    (None, None, Code.META_KEY_REQUIRED),
    ("k", None, Code.META_VALUE_REQUIRED),
])
def test_meta_fields_decision(key: str | None, value: str | None, code: Code | None) -> None:
    assert fields_decision(Operation.CREATE, key, value) is code


def test_signing_scope() -> None:
    assert GOOD.signing_scope == "global"
    assert view(product_own_key=True).signing_scope == "product:7"
    assert view(product_own_key=True, product_id=None).signing_scope == "global"


# --- check_access ------------------------------------------------------------------------------------
KEY = ApiKeyRecord(id=1, active=True, expires_at=None, capabilities=frozenset({CREATE_META_CAPABILITY}),
                   allowed_networks=())
EMPTY = BlockList(networks=(), identifiers=frozenset())
CLIENT = parse_address("203.0.113.10")


def access(key: ApiKeyRecord | None = KEY, address=CLIENT, identifier: str | None = "i.example",
           blocklist: BlockList = EMPTY) -> Code | None:
    return check_access(key, CREATE_META_CAPABILITY, address, identifier, blocklist, NOW)


def key(**changes: object) -> ApiKeyRecord:
    return dataclasses.replace(KEY, **changes)  # type: ignore[arg-type]


def test_access_granted() -> None:
    assert access() is None


@pytest.mark.parametrize(("record", "code"), [
    (None, Code.INVALID_API_KEY),
    (key(active=False), Code.INACTIVE_API_KEY),
    (key(expires_at=NOW), Code.INACTIVE_API_KEY),
    (key(expires_at=NOW - dt.timedelta(seconds=1)), Code.INACTIVE_API_KEY),
    (key(capabilities=frozenset({"manage-webhooks"})), Code.MISSING_CAPABILITY),
    (key(capabilities=frozenset()), Code.MISSING_CAPABILITY),
    (key(allowed_networks=(parse_network("198.51.100.0/24"),)), Code.IP_NOT_ALLOWED),
])
def test_each_key_check(record: ApiKeyRecord | None, code: Code) -> None:
    assert access(record) is code


def test_key_expiring_later_and_allowed_network_pass() -> None:
    assert access(key(expires_at=NOW + dt.timedelta(seconds=1))) is None
    assert access(key(allowed_networks=(parse_network("203.0.113.0/24"),))) is None
    assert access(key(allowed_networks=(parse_network("203.0.113.0/24"),)),
                  address=parse_address("::ffff:203.0.113.10")) is None


def test_allowed_networks_with_unknown_address_refuse() -> None:
    assert access(key(allowed_networks=(parse_network("0.0.0.0/0"),)), address=None) is Code.IP_NOT_ALLOWED


def test_access_checks_in_spec_order() -> None:
    blocked = BlockList(networks=(parse_network("203.0.113.0/24"),), identifiers=frozenset())
    everything_wrong = key(active=False, capabilities=frozenset(), allowed_networks=(parse_network("10.0.0.0/8"),))
    assert access(None, blocklist=blocked) is Code.INVALID_API_KEY
    assert access(everything_wrong, blocklist=blocked) is Code.INACTIVE_API_KEY
    assert access(key(capabilities=frozenset(), allowed_networks=everything_wrong.allowed_networks),
                  blocklist=blocked) is Code.MISSING_CAPABILITY
    assert access(key(allowed_networks=everything_wrong.allowed_networks), blocklist=blocked) is Code.IP_NOT_ALLOWED
    assert access(blocklist=blocked) is Code.ACCESS_DENIED


@pytest.mark.parametrize(("blocklist", "address", "identifier", "blocked"), [
    (BlockList((parse_network("203.0.113.10/32"),), frozenset()), CLIENT, "x", True),
    (BlockList((parse_network("203.0.113.0/24"),), frozenset()), CLIENT, None, True),
    (BlockList((parse_network("2001:db8::/32"),), frozenset()), parse_address("2001:db8::1"), None, True),
    (BlockList((parse_network("203.0.113.11/32"),), frozenset()), CLIENT, "x", False),
    (BlockList((), frozenset({"evil.example"})), CLIENT, "evil.example", True),
    (BlockList((), frozenset({"evil.example"})), CLIENT, " Evil.EXAMPLE ", True),
    (BlockList((), frozenset({"evil.example"})), CLIENT, "evil.example.org", False),
    (BlockList((), frozenset({"evil.example"})), CLIENT, None, False),
    (BlockList((parse_network("203.0.113.0/24"),), frozenset()), None, None, False),
])
def test_block_list(blocklist: BlockList, address, identifier: str | None, blocked: bool) -> None:
    assert (access(address=address, identifier=identifier, blocklist=blocklist) is Code.ACCESS_DENIED) is blocked


# --- codes ------------------------------------------------------------------------------------------
CODE_TABLE = [
    (100, "Invalid API Key", 401),
    (101, "Inactive API Key", 401),
    (102, "The used API key doesn't have the required capability to access this endpoint", 401),
    (103, "API key can't be used from this IP address", 401),
    (150, "Access denied", 403),
    (215, "Identifier is required", 200),
    (210, "Invalid license key", 200),
    (204, "License key blocked", 200),
    (201, "This license key is not assigned", 200),
    (205, "License key expired", 200),
    (203, "The product associated with this license key is not active or doesn't exist", 200),
    (202, "No activation found for this license key/identifier combination", 200),
    (450, "Meta key is required", 200),
    (451, "Meta value is required", 200),
    (452, "Meta key already exists", 200),
    (453, "Metadata created", 200),
    (901, "Incorrect data found", 200),
    (350, "Meta key is required", 200),
    (351, "Meta value is required", 200),
    (352, "Meta key doesn't exist", 200),
    (353, "Metadata updated", 200),
    (250, "Meta key is required", 200),
    (251, "Meta key doesn't exist", 200),
    (252, "Metadata deleted", 200),
]
EXTENSION_TABLE = [
    (4290, "Too many requests", 429),
    (4220, "Idempotency key reused with different parameters", 422),
    (4090, "A request with this idempotency key is in progress", 409),
    (4540, "Metadata found", 200),
    (4541, "Meta key doesn't exist", 200),
    (5030, "Service temporarily unavailable", 503),
]


@pytest.mark.parametrize(("number", "message", "status"), CODE_TABLE)
def test_code_message_and_status(number: int, message: str, status: int) -> None:
    code = Code(number)
    assert code.message.encode("utf-8") == message.encode("utf-8")
    assert code.http_status == status


def test_every_code_is_in_the_spec_table() -> None:
    assert {int(c) for c in Code} == {number for number, _, _ in CODE_TABLE}


@pytest.mark.parametrize(("number", "message", "status"), EXTENSION_TABLE)
def test_extension_code_message_and_status(number: int, message: str, status: int) -> None:
    code = ExtensionCode(number)
    assert code.message.encode("utf-8") == message.encode("utf-8")
    assert code.http_status == status


def test_every_extension_code_is_in_the_table() -> None:
    assert {int(c) for c in ExtensionCode} == {number for number, _, _ in EXTENSION_TABLE}


# --- steps 13–14 of each operation ----------------------------------------------------------------------
@pytest.mark.parametrize(("operation", "key", "value", "code"), [
    (Operation.UPDATE, None, "v", Code.UPDATE_KEY_REQUIRED),
    (Operation.UPDATE, None, None, Code.UPDATE_KEY_REQUIRED),
    (Operation.UPDATE, "k", None, Code.UPDATE_VALUE_REQUIRED),
    (Operation.UPDATE, "k", "v", None),
    (Operation.DELETE, None, None, Code.DELETE_KEY_REQUIRED),
    (Operation.DELETE, "k", None, None),  # a delete has no value
    (Operation.GET, None, None, None),  # the key is optional
    (Operation.GET, "k", None, None),
    (Operation.CREATE, "k", None, Code.META_VALUE_REQUIRED),
])
def test_fields_decision(operation: Operation, key: str | None, value: str | None, code: Code | None) -> None:
    assert fields_decision(operation, key, value) is code


def test_each_operation_is_its_own_capability() -> None:
    assert [op.capability for op in Operation] == ["create-license-key-meta", "update-license-key-meta",
                                                   "delete-license-key-meta", "get-license-key-meta"]


# --- audit masking -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("license_key", "masked"), [
    (None, None),
    ("", None),
    ("ABCD", "****"),
    ("ABCDEFGH", "********"),
    ("ABCDEFGHIJ", "AB…IJ"),  # never more than half of the key
    ("ABCDEFGHIJKL", "ABC…JKL"),
    ("ABCDEFGHIJKLMNOP", "ABCD…MNOP"),
    ("ABCD-EFGH-IJKL-MNOP", "ABCD…MNOP"),
])
def test_mask_license_key(license_key: str | None, masked: str | None) -> None:
    assert mask_license_key(license_key) == masked
