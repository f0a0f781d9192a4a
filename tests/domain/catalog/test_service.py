"""Products, license keys and activations: what operators create, and what they are refused."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from domain import catalog
from domain.catalog.models import LicenseStatus
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings


def new_key() -> str:
    return f"LK-{uuid.uuid4().hex[:12].upper()}"


def test_an_assigned_key_records_when_it_was_assigned(settings: Settings) -> None:
    with unit_of_work() as session:
        product = catalog.create_product(session, name="assigned product")
        row = catalog.create_license_key(session, product_id=product.id, key=new_key(), status="assigned")
        available = catalog.create_license_key(session, product_id=product.id, key=new_key())
        assert row.status is LicenseStatus.ASSIGNED and row.assigned_at is not None
        assert available.status is LicenseStatus.AVAILABLE and available.assigned_at is None


def test_a_given_assignment_time_is_kept(settings: Settings) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with unit_of_work() as session:
        product = catalog.create_product(session, name="dated product")
        row = catalog.create_license_key(session, product_id=product.id, key=new_key(), status="assigned",
                                         assigned_at=when)
        assert row.assigned_at == when


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"status": "sold"}, "unknown status 'sold'"),
    ({"validity_days": -1}, "validity days must be 0"),
    ({"key": "   "}, "license key must not be empty"),
    ({"product_id": 0}, "no product with id 0"),
])
def test_malformed_license_keys_are_refused(settings: Settings, overrides: dict[str, object], reason: str) -> None:
    with unit_of_work() as session:
        product = catalog.create_product(session, name="strict product")
        arguments: dict[str, object] = {"product_id": product.id, "key": new_key(), **overrides}
        with pytest.raises(catalog.CatalogError, match=reason):
            catalog.create_license_key(session, **arguments)


def test_a_license_key_exists_once(settings: Settings) -> None:
    key = new_key()
    with unit_of_work() as session:
        product = catalog.create_product(session, name="unique product")
        catalog.create_license_key(session, product_id=product.id, key=key)
        with pytest.raises(catalog.CatalogError, match="already exists"):
            catalog.create_license_key(session, product_id=product.id, key=key)


def test_activating_twice_returns_the_first_activation(settings: Settings) -> None:
    with unit_of_work() as session:
        product = catalog.create_product(session, name="activated product")
        row = catalog.create_license_key(session, product_id=product.id, key=new_key(), status="assigned")
        first, created = catalog.activate(session, license_key=row.key, identifier="site.example")
        again, created_again = catalog.activate(session, license_key=f"  {row.key} ", identifier="site.example")
        assert created and not created_again and again.id == first.id
        with pytest.raises(catalog.CatalogError, match="no license key"):
            catalog.activate(session, license_key="LK-NOPE", identifier="site.example")
