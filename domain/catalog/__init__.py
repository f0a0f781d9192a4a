"""Products, license keys and activations: what the license checks read."""

from domain.catalog.service import (
    CatalogError,
    activate,
    create_license_key,
    create_product,
    generate_license_key,
)

__all__ = ["CatalogError", "activate", "create_license_key", "create_product",
           "generate_license_key"]
