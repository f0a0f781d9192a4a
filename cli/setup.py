"""``keymeta bootstrap``, and the master key every command that encrypts needs."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cli import main
from cli.support import CliError, json_option
from domain import catalog
from domain.access import api_keys
from domain.catalog.models import LicenseKey, LicenseStatus, Product
from domain.platform.database import unit_of_work
from domain.platform.settings import get_settings
from domain.signing.keys import GLOBAL_SCOPE, active_key, create_signing_key
from domain.signing.master_key import MasterKeyError, load_master_key

DEMO_PRODUCT = "Demo product"
DEMO_LICENSE_KEY = "DEMO-0000-0000-0001"
DEMO_IDENTIFIER = "demo.example"
DEMO_API_KEY_NAME = "demo"


def master_key_or_fail(create: bool = False) -> bytes:
    try:
        return load_master_key(get_settings(), create=create)
    except MasterKeyError as exc:
        raise CliError(str(exc)) from exc


# --- bootstrap --------------------------------------------------------------------------------------
@main.command()
@click.option("--demo", is_flag=True, help="Also create a demo API key, product, license key and activation.")
@json_option
def bootstrap(demo: bool) -> dict[str, Any]:
    """Idempotent: make sure a global signing key exists (and, with --demo, demo data)."""
    settings = get_settings()
    master_key = master_key_or_fail(create=True)
    result: dict[str, Any] = {}
    try:
        with unit_of_work() as session:
            key = active_key(session, GLOBAL_SCOPE) or create_signing_key(
                session, master_key, GLOBAL_SCOPE, key_size=settings.key_size)
            result["global_signing_key"] = key.kid
    except IntegrityError:  # another bootstrap created it at the same moment
        with unit_of_work() as session:
            existing = active_key(session, GLOBAL_SCOPE)
            result["global_signing_key"] = existing.kid if existing else None
    if demo:
        result["demo"] = _bootstrap_demo()
    return result


def _bootstrap_demo() -> dict[str, Any]:
    with unit_of_work() as session:
        product = session.scalar(select(Product).where(Product.name == DEMO_PRODUCT)) or \
            catalog.create_product(session, name=DEMO_PRODUCT)
        license_row = session.scalar(select(LicenseKey).where(LicenseKey.key == DEMO_LICENSE_KEY)) or \
            catalog.create_license_key(session, product_id=product.id, key=DEMO_LICENSE_KEY,
                                       status=LicenseStatus.ASSIGNED)
        catalog.activate(session, license_key=DEMO_LICENSE_KEY, identifier=DEMO_IDENTIFIER)
        # The demo key's secret was shown once; re-running bootstrap replaces it with a fresh one.
        for old in api_keys.active_keys_named(session, DEMO_API_KEY_NAME):
            api_keys.deactivate_api_key(session, old.id)
        issued = api_keys.create_api_key(session, name=DEMO_API_KEY_NAME)
        settings = get_settings()
        return {
            "api_key": issued.secret,
            "api_key_id": issued.row.id,
            "product_id": product.id,
            "license_key": license_row.key,
            "identifier": DEMO_IDENTIFIER,
            # Ready to paste once `make run` is up; a fresh meta key each time, so it answers 453.
            "try": (f"curl -s -X POST http://{settings.host}:{settings.port}/api/v1/create-license-key-meta"
                    f" -d api_key={issued.secret} -d license_key={license_row.key}"
                    f' -d identifier={DEMO_IDENTIFIER} -d "key=demo-$(date +%s)" -d "value=hello"'),
        }
