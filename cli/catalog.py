"""``keymeta products`` and ``keymeta license-keys``."""

from __future__ import annotations

from typing import Any

import click

from cli import main
from cli.setup import master_key_or_fail
from cli.support import CliError, json_option, parse_time
from domain import catalog
from domain.catalog.models import LicenseStatus
from domain.platform.database import unit_of_work
from domain.platform.settings import get_settings


@main.group()
def products() -> None:
    """Products."""


@products.command("create")
@click.option("--name", required=True)
@click.option("--own-key", is_flag=True, help="Give the product its own signing key.")
@click.option("--inactive", is_flag=True)
@json_option
def products_create(name: str, own_key: bool, inactive: bool) -> dict[str, Any]:
    master_key = master_key_or_fail() if own_key else None
    try:
        with unit_of_work() as session:
            product = catalog.create_product(session, name=name, active=not inactive, own_key=own_key,
                                             master_key=master_key, key_size=get_settings().key_size)
            return {"id": product.id, "name": product.name, "active": product.active,
                    "own_key": product.own_signing_key}
    except catalog.CatalogError as exc:
        raise CliError(str(exc)) from exc


@main.group("license-keys")
def license_keys() -> None:
    """License keys and their activations."""


@license_keys.command("create")
@click.option("--product", "product_id", type=int, required=True)
@click.option("--key", default=None, help="Default: a generated XXXX-XXXX-XXXX-XXXX key.")
@click.option("--status", default=LicenseStatus.AVAILABLE.value, show_default=True,
              type=click.Choice([status.value for status in LicenseStatus]))
@click.option("--validity-days", type=int, default=0, show_default=True, help="0 = never expires.")
@click.option("--assigned-at", default=None, help="ISO 8601 or Unix seconds; default now when assigned.")
@json_option
def license_keys_create(product_id: int, key: str | None, status: str, validity_days: int,
                        assigned_at: str | None) -> dict[str, Any]:
    try:
        with unit_of_work() as session:
            row = catalog.create_license_key(
                session, product_id=product_id, key=key, status=status, validity_days=validity_days,
                assigned_at=parse_time(assigned_at) if assigned_at else None)
            return {"id": row.id, "key": row.key, "product_id": row.product_id, "status": row.status,
                    "validity_days": row.validity_days, "assigned_at": row.assigned_at}
    except catalog.CatalogError as exc:
        raise CliError(str(exc)) from exc


@license_keys.command("activate")
@click.argument("license_key")
@click.option("--identifier", required=True)
@json_option
def license_keys_activate(license_key: str, identifier: str) -> dict[str, Any]:
    try:
        with unit_of_work() as session:
            row, created = catalog.activate(session, license_key=license_key, identifier=identifier)
            return {"id": row.id, "license_key": license_key.strip(), "identifier": row.identifier,
                    "created": created}
    except catalog.CatalogError as exc:
        raise CliError(str(exc)) from exc
