"""The operator CLI (docs/operations.md) — results with --json, one-line ``error: ...`` and non-zero exit on failure."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from domain.access.models import ApiKey, BlockRule
from domain.catalog.models import LicenseKey, Product
from domain.platform.database import reset_engines, unit_of_work
from domain.platform.migrate import head_revision
from domain.platform.settings import get_settings
from domain.signing.keys import GLOBAL_SCOPE, product_scope
from domain.signing.models import SigningKey
from domain.signing.verification import verify_envelope
from tests.backends import fresh_postgres_database
from tests.cli.invoke import fails, ok_json, run

ENDPOINT = "/api/v1/create-license-key-meta"


def count(model: type) -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def product_id(settings) -> int:
    return ok_json("products", "create", "--name", "cli product")["id"]


# --- db upgrade, bootstrap ---------------------------------------------------------------------------
def test_db_upgrade_is_idempotent_on_a_migrated_database(settings) -> None:
    assert ok_json("db", "upgrade") == {"revision": head_revision()}
    assert ok_json("db", "upgrade") == {"revision": head_revision()}


@pytest.fixture
def fresh_database(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty database and no master key anywhere: the very first run of an operator."""
    var_dir = tmp_path / "fresh-var"
    with fresh_postgres_database() as url:
        monkeypatch.setenv("KEYMETA_DATABASE_URL", url)
        monkeypatch.setenv("KEYMETA_VAR_DIR", str(var_dir))
        monkeypatch.delenv("KEYMETA_MASTER_KEY")
        get_settings.cache_clear()
        reset_engines()
        yield var_dir
        reset_engines()  # close the pool before the database is dropped


def test_first_run_upgrade_then_bootstrap_twice_keeps_one_global_key(fresh_database: Path) -> None:
    assert ok_json("db", "upgrade") == {"revision": head_revision()}
    first = ok_json("bootstrap")
    second = ok_json("bootstrap")
    assert first == second and set(first) == {"global_signing_key"}
    master_key = fresh_database / "master.key"
    assert stat.S_IMODE(master_key.stat().st_mode) == 0o600
    with unit_of_work() as session:
        keys = session.scalars(select(SigningKey)).all()
    assert [(k.kid, k.scope, k.state) for k in keys] == [(first["global_signing_key"], GLOBAL_SCOPE, "active")]


def test_bootstrap_before_db_upgrade_fails_in_one_line(fresh_database: Path) -> None:
    fails("bootstrap", match="database")


def test_bootstrap_is_idempotent_on_the_session_database(settings) -> None:
    with unit_of_work() as session:
        active = session.scalar(select(SigningKey.kid).where(SigningKey.scope == GLOBAL_SCOPE,
                                                             SigningKey.state == "active"))
    assert ok_json("bootstrap") == {"global_signing_key": active}
    assert ok_json("bootstrap") == {"global_signing_key": active}


def test_bootstrap_demo_prints_a_working_setup(settings, client) -> None:
    result = ok_json("bootstrap", "--demo")
    demo = result["demo"]
    assert set(demo) >= {"api_key", "api_key_id", "product_id", "license_key", "identifier"}
    form = {"api_key": demo["api_key"], "license_key": demo["license_key"], "identifier": demo["identifier"],
            "key": "cli-demo", "value": "it works"}
    response = client.post(ENDPOINT, data=form)
    assert response.json()["response"]["code"] in (453, 452)  # 452 when another test ran --demo first
    with unit_of_work() as session:
        pems = {row.kid: row.public_pem for row in session.scalars(select(SigningKey))}
    assert verify_envelope(response.content, pems) == result["global_signing_key"]

    again = ok_json("bootstrap", "--demo")["demo"]
    assert again["api_key"] != demo["api_key"]  # a fresh secret, the old demo key retired
    stable = ("product_id", "license_key", "identifier")
    assert {k: again[k] for k in stable} == {k: demo[k] for k in stable}
    assert client.post(ENDPOINT, data=form).json()["response"]["code"] == 101
    form["api_key"] = again["api_key"]
    assert client.post(ENDPOINT, data={**form, "key": "cli-demo-2"}).json()["response"]["code"] in (453, 452)


def test_bootstrap_human_output(settings) -> None:
    result = run("bootstrap")
    assert result.exit_code == 0
    assert re.fullmatch(r"global_signing_key: [A-Za-z0-9_-]{43}\n", result.stdout)


# --- api-keys ----------------------------------------------------------------------------------------
def test_api_keys_create_shows_the_secret_once_and_stores_a_digest(settings, client) -> None:
    created = ok_json("api-keys", "create", "--name", "cli key", "--capability", "create-license-key-meta",
                      "--capability", "manage-webhooks", "--allow-ip", "203.0.113.0/24", "--allow-ip", "2001:db8::1")
    assert created["api_key"].startswith("km_") and len(created["api_key"]) > 40
    assert created["capabilities"] == ["create-license-key-meta", "manage-webhooks"]
    assert created["allowed_cidrs"] == ["203.0.113.0/24", "2001:db8::1/128"]
    assert created["expires_at"] is None
    with unit_of_work() as session:
        row = session.get(ApiKey, created["id"])
        assert row is not None
        stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert not any(created["api_key"] in value for value in stored)


def test_api_keys_create_defaults_and_expiry(settings) -> None:
    created = ok_json("api-keys", "create", "--expires-at", "2030-01-02T03:04:05+01:00")
    assert created["name"] == "api key"
    assert created["capabilities"] == ["create-license-key-meta"] and created["allowed_cidrs"] == []
    assert created["expires_at"] == "2030-01-02T02:04:05Z"
    assert ok_json("api-keys", "create", "--expires-at", "1900000000")["expires_at"] == "2030-03-17T17:46:40Z"


def test_api_keys_deactivate(settings, client) -> None:
    product = ok_json("products", "create", "--name", "deactivation")
    license_key = ok_json("license-keys", "create", "--product", str(product["id"]), "--status", "assigned")
    ok_json("license-keys", "activate", license_key["key"], "--identifier", "d.example")
    created = ok_json("api-keys", "create")
    form = {"api_key": created["api_key"], "license_key": license_key["key"], "identifier": "d.example",
            "key": "k", "value": "v"}
    assert client.post(ENDPOINT, data=form).json()["response"]["code"] == 453
    assert ok_json("api-keys", "deactivate", str(created["id"])) == \
        {"id": created["id"], "name": "api key", "active": False}
    assert client.post(ENDPOINT, data=form).json()["response"]["code"] == 101


def test_api_keys_create_management_and_signature_scheme(settings) -> None:
    plain = ok_json("api-keys", "create")
    assert (plain["management"], plain["signature_scheme"]) == (False, "response_base64")
    sdk = ok_json("api-keys", "create", "--management", "--signature-scheme", "envelope")
    assert (sdk["management"], sdk["signature_scheme"]) == (True, "envelope")
    with unit_of_work() as session:
        row = session.get(ApiKey, sdk["id"])
        assert row is not None and (row.management, row.signature_scheme) == (True, "envelope")
    result = run("api-keys", "create", "--signature-scheme", "sorted")
    assert result.exit_code != 0 and "sorted" in result.stderr


def test_api_keys_human_output_prints_the_secret(settings) -> None:
    result = run("api-keys", "create", "--name", "human")
    assert result.exit_code == 0
    assert re.search(r"^api_key: km_\S+$", result.stdout, re.MULTILINE)
    assert re.search(r"^allowed_cidrs: -$", result.stdout, re.MULTILINE)


# --- products, license keys --------------------------------------------------------------------------
def test_products_create(settings) -> None:
    assert ok_json("products", "create", "--name", " Plain ") | {"id": 0} == \
        {"id": 0, "name": "Plain", "active": True, "own_key": False}
    inactive = ok_json("products", "create", "--name", "Off", "--inactive")
    assert (inactive["active"], inactive["own_key"]) == (False, False)


def test_products_create_with_own_key_makes_an_active_product_key(settings) -> None:
    created = ok_json("products", "create", "--name", "Own", "--own-key")
    assert created["own_key"] is True
    with unit_of_work() as session:
        states = session.scalars(select(SigningKey.state).where(SigningKey.scope == product_scope(created["id"])))
        assert list(states) == ["active"]


def test_license_keys_create_defaults(settings, product_id: int) -> None:
    created = ok_json("license-keys", "create", "--product", str(product_id))
    assert re.fullmatch(r"[A-Z0-9]{4}(-[A-Z0-9]{4}){3}", created["key"])
    assert (created["product_id"], created["status"], created["validity_days"], created["assigned_at"]) == \
        (product_id, "available", 0, None)


def test_license_keys_create_assigned(settings, product_id: int) -> None:
    created = ok_json("license-keys", "create", "--product", str(product_id), "--key", "CLI-KEY-0001",
                      "--status", "assigned", "--validity-days", "30", "--assigned-at", "2026-01-01T00:00:00Z")
    assert created | {"id": 0} == {"id": 0, "key": "CLI-KEY-0001", "product_id": product_id,
                                   "status": "assigned", "validity_days": 30,
                                   "assigned_at": "2026-01-01T00:00:00Z"}
    now_assigned = ok_json("license-keys", "create", "--product", str(product_id), "--status", "assigned")
    assert now_assigned["assigned_at"] is not None


def test_license_keys_activate_is_idempotent(settings, product_id: int) -> None:
    key = ok_json("license-keys", "create", "--product", str(product_id))["key"]
    first = ok_json("license-keys", "activate", key, "--identifier", "a.example")
    second = ok_json("license-keys", "activate", key, "--identifier", "a.example")
    assert (first["created"], second["created"]) == (True, False)
    assert first["id"] == second["id"] and first["license_key"] == key and first["identifier"] == "a.example"


# --- blocklist ---------------------------------------------------------------------------------------
def test_blocklist_add(settings) -> None:
    first = ok_json("blocklist", "add", "--ip", "192.0.2.1/24")
    assert first | {"id": 0} == {"id": 0, "kind": "ip", "value": "192.0.2.0/24", "created": True}
    assert ok_json("blocklist", "add", "--ip", "192.0.2.0/24")["created"] is False
    ident = ok_json("blocklist", "add", "--identifier", " Bad.Example ")
    assert (ident["kind"], ident["value"], ident["created"]) == ("identifier", "bad.example", True)


# --- failures: one line, non-zero, nothing written -----------------------------------------------------
def test_unknown_product(settings) -> None:
    before = count(LicenseKey)
    fails("license-keys", "create", "--product", "987654321", match="no product with id 987654321")
    assert count(LicenseKey) == before


def test_malformed_cidr(settings) -> None:
    before = (count(ApiKey), count(BlockRule))
    fails("api-keys", "create", "--allow-ip", "10.0.0.0/33", match="malformed CIDR '10.0.0.0/33'")
    fails("api-keys", "create", "--allow-ip", "10.0.0.0/8", "--allow-ip", "nope", match="malformed CIDR 'nope'")
    fails("blocklist", "add", "--ip", "300.1.1.1", match="malformed CIDR")
    assert (count(ApiKey), count(BlockRule)) == before


def test_duplicate_license_key(settings, product_id: int) -> None:
    ok_json("license-keys", "create", "--product", str(product_id), "--key", "DUP-0001")
    fails("license-keys", "create", "--product", str(product_id), "--key", "DUP-0001", match="already exists")
    fails("license-keys", "create", "--product", str(product_id), "--key", " DUP-0001 ", match="already exists")


def test_unknown_capability(settings) -> None:
    before = count(ApiKey)
    fails("api-keys", "create", "--capability", "root", match="unknown capability 'root'")
    assert count(ApiKey) == before


def test_unknown_api_key_id(settings) -> None:
    fails("api-keys", "deactivate", "987654321", match="no API key with id 987654321")


def test_bad_time(settings, product_id: int) -> None:
    before = (count(ApiKey), count(LicenseKey))
    fails("api-keys", "create", "--expires-at", "tomorrow", match="not a time: 'tomorrow'")
    fails("license-keys", "create", "--product", str(product_id), "--assigned-at", "2026-13-01", match="not a time")
    assert (count(ApiKey), count(LicenseKey)) == before


def test_other_refusals(settings, product_id: int) -> None:
    before = (count(Product), count(LicenseKey), count(BlockRule))
    fails("products", "create", "--name", "   ", match="must not be empty")
    fails("products", "create", "--name", "x" * 256, match="at most 255")
    fails("license-keys", "create", "--product", str(product_id), "--validity-days", "-1", match="validity")
    fails("license-keys", "create", "--product", str(product_id), "--key", "K" * 256, match="at most 255")
    fails("license-keys", "activate", "NO-SUCH-KEY", "--identifier", "x", match="no license key")
    fails("blocklist", "add", match="exactly one of --ip or --identifier")
    fails("blocklist", "add", "--ip", "192.0.2.1", "--identifier", "x", match="exactly one")
    assert (count(Product), count(LicenseKey), count(BlockRule)) == before


def test_errors_stay_one_line_with_json(settings) -> None:
    result = run("api-keys", "deactivate", "987654321", "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: no API key with id 987654321\n"


def test_products_own_key_without_master_key(settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KEYMETA_MASTER_KEY")
    monkeypatch.setenv("KEYMETA_VAR_DIR", str(tmp_path / "no-key-here"))
    get_settings.cache_clear()
    before = count(Product)
    fails("products", "create", "--name", "x", "--own-key", match="master key")
    assert count(Product) == before
