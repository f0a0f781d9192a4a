"""The event pipeline end to end, on real processes: uvicorn API, Celery workers and beat."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from domain.access.models import ApiKey
from domain.events.models import AuditRecord
from domain.platform.database import unit_of_work
from tests.conftest import make_world
from tests.integration.helpers import assert_audit_complete, audit_count, cli, create_many
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def test_every_request_becomes_exactly_one_audit_record(stack) -> None:
    world = make_world()
    stack.audit_pipeline()
    _, base = stack.api()

    created = create_many(base, world, 12)
    duplicate = create_many(base, world, 3, key="same-key")
    refused = create_many(base, world, 4, api_key="km_not-a-key")
    responses = created + duplicate + refused
    codes = Counter(r.json()["response"]["code"] for r in responses)
    assert codes == {453: 13, 452: 2, 100: 4}

    wait_until(lambda: audit_count() == len(responses), timeout=60, message="all audit records")
    assert_audit_complete(len(responses))
    with unit_of_work() as session:
        records = session.scalars(select(AuditRecord)).all()
        assert Counter(r.outcome_code for r in records) == codes
        assert {r.request_id for r in records} == {r.headers["x-request-id"] for r in responses}
        # Never the API key, the meta value or the full license key.
        for record in records:
            flat = repr({c: getattr(record, c) for c in ("detail", "license_key_masked", "user_agent")})
            assert world.api_key not in flat and world.license_key not in flat and "test value" not in flat
        # Last use is recorded by the audit worker, off the request path.
        assert session.get(ApiKey, world.api_key_id).last_used_at is not None

    verified = cli("audit", "verify", "--json", env=stack.env)
    assert verified.returncode == 0, verified.stderr
    assert '"verified": 19' in verified.stdout
