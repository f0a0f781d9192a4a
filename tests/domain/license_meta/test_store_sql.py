"""The statements of the metadata family name license statuses through ``LicenseStatus``, never as typed text."""

from __future__ import annotations

import re

from domain.catalog.models import LicenseStatus
from domain.license_meta import store

STATEMENTS = {"create": store._CREATE, "create_many": store._CREATE_MANY, "update": store._UPDATE,
              "update_many": store._UPDATE_MANY, "delete": store._DELETE, "delete_many": store._DELETE_MANY,
              "read": store._READ, "read_many": store._READ_MANY}


def test_the_assigned_status_is_built_from_the_enum() -> None:
    assert store._compose("lic.status = {assigned}") == f"lic.status = '{LicenseStatus.ASSIGNED.value}'"


def test_every_statement_checks_the_status_and_leaves_no_placeholder() -> None:
    for name, sql in STATEMENTS.items():
        assert not re.search(r"\{\w+\}", sql.replace("'{}'", "")), name
        assert re.findall(r"status = '(\w+)'", sql) == [LicenseStatus.ASSIGNED.value], name
