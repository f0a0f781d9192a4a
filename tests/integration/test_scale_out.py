"""Scale-out on PostgreSQL + RabbitMQ: 2 API processes, 3 webhook workers, 2 audit workers, one beat.

Exact counts: every delivery exactly once per endpoint (no duplicate rows, no duplicate webhook-ids at the
sink), and one unbroken audit chain with one record per outbox event.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from domain.platform.database import unit_of_work
from domain.platform.settings import get_settings
from domain.signing.master_key import load_master_key
from domain.webhooks import endpoints, ssrf
from domain.webhooks.audit_events import CLI
from domain.webhooks.models import WebhookDelivery
from tests.conftest import make_world
from tests.integration.conftest import REAL, make_stack
from tests.integration.helpers import PATH, assert_audit_complete, audit_count, outbox_count
from tests.processes import wait_until
from tests.webhook_sink import Sink

pytestmark = pytest.mark.integration

EVENTS, ENDPOINTS = 60, 3


@pytest.fixture(params=[p for p in REAL if p.id == "postgres-rabbitmq"])
def rabbit_stack(request, tmp_path, monkeypatch, master_key_text):
    yield from make_stack(request, tmp_path, monkeypatch, master_key_text)


def test_replicas_and_worker_pools_process_a_burst_exactly_once(rabbit_stack, monkeypatch) -> None:
    stack = rabbit_stack
    monkeypatch.setenv("KEYMETA_WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8")
    stack.env["KEYMETA_WEBHOOK_ALLOWED_CIDRS"] = "127.0.0.0/8"
    get_settings.cache_clear()
    sink = Sink()
    try:
        settings = get_settings()
        with unit_of_work() as session:
            for i in range(ENDPOINTS):
                endpoints.create_endpoint(session, url=sink.url(f"/hook/{i}"), event_types=None, actor=CLI,
                                          master_key=load_master_key(settings),
                                          allowed=ssrf.parse_allowed(settings.webhook_allowed_cidrs))
        world = make_world()
        for i in range(3):
            stack.worker("webhooks", name=f"webhooks{i}", concurrency=8, pool="threads")  # as the Procfile
        for i in range(2):
            stack.worker("audit", name=f"audit{i}", concurrency=2)
        stack.worker("sweep", "keys", name="sweep")
        beat = stack.beat()
        apis = [stack.api()[1], stack.api()[1]]

        def create(i: int) -> int:
            with httpx.Client(base_url=apis[i % 2], timeout=30) as client:
                return client.post(PATH, data=world.form(key=f"burst-{i}")).json()["response"]["code"]

        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = Counter(pool.map(create, range(EVENTS)))
        assert codes == {453: EVENTS}

        wait_until(lambda: len(sink.received) >= EVENTS * ENDPOINTS, timeout=120, message="every webhook")
        expected_events = outbox_count()
        wait_until(lambda: audit_count() == expected_events, timeout=120, message="every audit record")

        def delivery_rows() -> list:
            with unit_of_work() as session:
                return list(session.execute(select(WebhookDelivery.event_id, WebhookDelivery.endpoint_id,
                                                   WebhookDelivery.status)).all())

        # The sink answers before the worker records the attempt: wait for the rows to say so too.
        wait_until(lambda: {status for _, _, status in delivery_rows()} == {"succeeded"}, timeout=60,
                   message="every delivery recorded as succeeded")
        rows = delivery_rows()
        assert len(rows) == EVENTS * ENDPOINTS
        assert len({(event, endpoint) for event, endpoint, _ in rows}) == EVENTS * ENDPOINTS
        webhook_ids = [r.headers["webhook-id"] for r in sink.received]
        assert len(webhook_ids) == len(set(webhook_ids)) == EVENTS * ENDPOINTS
        assert Counter(r.path for r in sink.received) == {f"/hook/{i}": EVENTS for i in range(ENDPOINTS)}
        assert_audit_complete(expected_events)
        assert [p.name for p in stack.procs if p.name == "beat" and p.alive()] == ["beat"] and beat.alive()
    finally:
        sink.close()
