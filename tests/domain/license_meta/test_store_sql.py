"""The statements of the metadata family name license statuses through ``LicenseStatus``, never as typed text."""

from __future__ import annotations

import re

from domain.catalog.models import LicenseStatus
from domain.license_meta import store

STATEMENTS = {"create": store._CREATE, "create_many": store._CREATE_MANY, "update": store._UPDATE,
              "delete": store._DELETE, "read": store._READ}


def test_the_assigned_status_is_built_from_the_enum() -> None:
    assert store._compose("lic.status = {assigned}") == f"lic.status = '{LicenseStatus.ASSIGNED.value}'"


def test_every_statement_checks_the_status_and_leaves_no_placeholder() -> None:
    for name, sql in STATEMENTS.items():
        assert "{" + "assigned}" not in sql, name
        assert re.findall(r"status = '(\w+)'", sql) == [LicenseStatus.ASSIGNED.value], name
