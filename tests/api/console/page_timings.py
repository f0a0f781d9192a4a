"""Server time per console page at 100,000 deliveries and audit records: p50/p99 over 200 loads each
(``python -m tests.api.console.page_timings``; the suite's PostgreSQL, a throwaway database).

Rows are written by SQL in bulk (the audit rows are not a valid chain: only browsing is timed here).
Times are taken in-process through the ASGI test client, so they include the app's work and no network.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import text
from starlette.testclient import TestClient

from domain.console import portal
from domain.platform.database import unit_of_work
from domain.signing.master_key import load_master_key
from tests.api.console.conftest import csrf_of, sign_in
from tests.api.console.scratch import scratch_console
from tests.conftest import World, make_world
from tests.webhook_support import register

ROWS = 100_000
LOADS = 200

_DELIVERIES = """
INSERT INTO webhook_deliveries (event_id, endpoint_id, msg_id, event_type, body, status, attempts, retry_step,
                                created_at, updated_at)
SELECT g, CASE WHEN g % 2 = 0 THEN :a ELSE :b END, 'msg_' || g, 'license_key_meta.created', '{}',
       CASE WHEN g % 100 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 0, now(), now()
FROM generate_series(1, :n) g"""
_ATTEMPTS = """
INSERT INTO webhook_attempts (delivery_id, attempt_no, started_at, duration_ms, outcome, status_code,
                              response_truncated)
SELECT id, 1, now(), 10, 'success', 200, false FROM webhook_deliveries"""
_AUDIT = """
INSERT INTO audit_records (seq, recorded_at, occurred_at, action, status, prev_hash, hash)
SELECT g, now(), now(), CASE WHEN g % 100 = 0 THEN 'rare.action' ELSE 'license_key_meta.created' END, 'ok',
       repeat('0', 64), repeat('0', 64)
FROM generate_series(1, :n) g"""


_META = """
INSERT INTO license_key_meta (license_key_id, key, value, identifier, version, created_at)
SELECT l.id, 'key-' || g, repeat('v', 200), :identifier, 1, now()
FROM license_keys l, generate_series(1, :n) g WHERE l.key = :license_key"""
META_ROWS = 100  # a license key at the default cap


def _time_license_lookup(client: TestClient, world: World) -> None:
    """The license metadata look-up is a form post (the license key stays out of URLs): every key of a license
    at the cap, and the audit event each look-up writes."""
    csrf = csrf_of(client.get("/console/license-meta").text)
    times = []
    for _ in range(LOADS):
        started = time.perf_counter()
        response = client.post("/console/license-meta", data={"csrf": csrf, "license_key": world.license_key})
        assert response.status_code == 200 and "key-100" in response.text
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99) - 1]
    print(f"{'license metadata lookup':24s} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")


def main() -> None:
    with scratch_console() as (settings, key):
        a, b = register("http://127.0.0.1:9/a"), register("http://127.0.0.1:9/b")
        with unit_of_work() as session:
            session.execute(text(_DELIVERIES), {"a": a.id, "b": b.id, "n": ROWS})
            session.execute(text(_ATTEMPTS))
            session.execute(text(_AUDIT), {"n": ROWS})
        with unit_of_work() as session:
            session.execute(text("ANALYZE"))
        world = make_world()
        with unit_of_work() as session:
            session.execute(text(_META), {"license_key": world.license_key, "identifier": world.identifier,
                                          "n": META_ROWS})
        link = portal.sign_link(load_master_key(settings), a.id, 3600, dt.datetime.now(dt.UTC)).path
        pages = {"overview": "/console", "deliveries": "/console/deliveries",
                 "deliveries, deep page": f"/console/deliveries?before_id={ROWS // 2}",
                 "deliveries, failed": "/console/deliveries?status=failed",
                 "deliveries, endpoint": f"/console/deliveries?endpoint_id={a.id}",
                 "delivery": f"/console/deliveries/{ROWS // 3}", "endpoints": "/console/endpoints",
                 "audit": "/console/audit", "audit, deep page": "/console/audit?before_seq=500",
                 "audit, rare action": "/console/audit?action=rare.action",
                 "audit, absent action": "/console/audit?action=absent", "signing keys": "/console/signing-keys",
                 "portal": link, "portal, failed": f"{link}?status=failed",
                 "portal, delivery": f"{link}/deliveries/{ROWS // 2}",
                 "portal, event catalog": f"{link}/event-types", "license metadata": "/console/license-meta"}
        from api.app import create_app

        with TestClient(create_app(settings)) as client:
            sign_in(client, key.secret)
            for name, path in pages.items():
                times = []
                for _ in range(LOADS):
                    started = time.perf_counter()
                    assert client.get(path).status_code == 200, path
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99) - 1]
                print(f"{name:24s} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
            _time_license_lookup(client, world)


if __name__ == "__main__":
    main()
