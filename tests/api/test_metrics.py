"""/metrics: request counters by route template, HTTP status and envelope code; latency; backlog gauges."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, func, select, update
from starlette.testclient import TestClient

from domain.events.metrics_queries import AttemptTally, nearest_rank
from domain.events.models import OutboxEvent
from domain.platform.database import make_async_engine, unit_of_work
from domain.platform.settings import Settings
from domain.signing.keys import create_signing_key, product_scope
from domain.signing.master_key import load_master_key
from domain.signing.models import SigningKey
from domain.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

ENDPOINT = "/api/v1/create-license-key-meta"


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests_total(samples: dict, path: str, status: str, code: str, method: str = "POST") -> float:
    key = ("keymeta_http_requests_total",
           tuple(sorted({"method": method, "path": path, "status": status, "code": code}.items())))
    return samples.get(key, 0.0)


def test_envelope_codes_and_route_templates_are_counted(client: TestClient, world) -> None:
    before = scrape(client)
    form = world.form()
    assert client.post(ENDPOINT, data=form).json()["response"]["code"] == 453
    assert client.post(ENDPOINT, data=form).json()["response"]["code"] == 452
    assert client.post(ENDPOINT, data={**form, "api_key": "nope"}).status_code == 401
    assert client.get("/no/such/thing/12345").status_code == 404
    after = scrape(client)

    assert requests_total(after, ENDPOINT, "200", "453") == requests_total(before, ENDPOINT, "200", "453") + 1
    assert requests_total(after, ENDPOINT, "200", "452") == requests_total(before, ENDPOINT, "200", "452") + 1
    assert requests_total(after, ENDPOINT, "401", "100") == requests_total(before, ENDPOINT, "401", "100") + 1
    # Unknown paths share one label value: scanners cannot create series.
    assert requests_total(after, "unmatched", "404", "", "GET") == requests_total(before, "unmatched", "404", "",
                                                                                   "GET") + 1
    assert not any("/no/such" in str(labels) for _, labels in after)
    # Other endpoints carry the template and an empty envelope code.
    assert requests_total(after, "/metrics", "200", "", "GET") >= 1
    count_key = ("keymeta_http_request_duration_seconds_count", (("method", "POST"), ("path", ENDPOINT)))
    assert after[count_key] == before.get(count_key, 0.0) + 3


def test_backlog_gauges_follow_the_outbox(client: TestClient, world) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    with unit_of_work() as session:
        session.execute(update(OutboxEvent).values(audited_at=dt.datetime.now(dt.UTC),
                                                   fanned_out_at=dt.datetime.now(dt.UTC)))
    assert client.post(ENDPOINT, data=world.form()).json()["response"]["code"] == 453
    with unit_of_work() as session:
        newest = session.scalar(select(func.max(OutboxEvent.id)))
        session.execute(update(OutboxEvent).where(OutboxEvent.id == newest).values(created_at=old))
    samples = scrape(client)
    assert samples[("keymeta_backlog_up", ())] == 1.0
    assert samples[("keymeta_outbox_pending_events", (("consumer", "audit"),))] == 1.0
    assert samples[("keymeta_outbox_pending_events", (("consumer", "webhooks_fan_out"),))] == 1.0
    age = samples[("keymeta_outbox_oldest_pending_age_seconds", (("consumer", "audit"),))]
    assert 590 < age < 900
    assert samples[("keymeta_webhook_deliveries_open", (("status", "pending"),))] >= 0

    with unit_of_work() as session:
        session.execute(update(OutboxEvent).values(audited_at=dt.datetime.now(dt.UTC)))
    samples = scrape(client)
    assert samples[("keymeta_outbox_pending_events", (("consumer", "audit"),))] == 0.0
    assert samples[("keymeta_outbox_oldest_pending_age_seconds", (("consumer", "audit"),))] == 0.0


def test_a_database_failure_still_serves_http_metrics(client: TestClient) -> None:
    original = client.app.state.engine  # type: ignore[attr-defined]

    class Broken:
        def connect(self) -> object:
            raise ConnectionRefusedError("database down")

    client.app.state.engine = Broken()  # type: ignore[attr-defined]
    try:
        samples = scrape(client)
    finally:
        client.app.state.engine = original  # type: ignore[attr-defined]
    assert samples[("keymeta_backlog_up", ())] == 0.0
    assert not any(name == "keymeta_outbox_pending_events" for name, _ in samples)
    assert any(name == "keymeta_http_requests_total" for name, _ in samples)


def test_multiprocess_mode_merges_processes(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, counts written by other processes appear in this one's scrape."""
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    program = textwrap.dedent("""
        import sys
        from api import metrics
        metrics.REQUESTS.labels("POST", "/x", "200", "453").inc(int(sys.argv[1]))
        if sys.argv[2] == "show":
            from prometheus_client import generate_latest
            print(generate_latest(metrics._process_registry()).decode())
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", program, "2", "quiet"], env=env, cwd=root, check=True)
    shown = subprocess.run([sys.executable, "-c", program, "3", "show"], env=env, cwd=root, check=True,
                           capture_output=True, text=True).stdout
    assert 'keymeta_http_requests_total{code="453",method="POST",path="/x",status="200"} 5.0' in shown


_created_endpoints: list[int] = []


@pytest.fixture(autouse=True)
def _remove_endpoints(settings: Settings) -> Iterator[None]:
    """This module's endpoints (and their deliveries and attempts) do not outlive the test. Depends on
    ``settings`` so that it runs while the test's database is still the configured one."""
    yield
    if _created_endpoints:
        with unit_of_work() as session:
            session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id.in_(_created_endpoints)))
        _created_endpoints.clear()


def _endpoint(session: object, *, enabled: bool = True) -> WebhookEndpoint:
    token = uuid.uuid4().hex
    row = WebhookEndpoint(url=f"https://hooks.example.com/{token}", event_types=["*"], fingerprint=token,
                          enabled=enabled, disabled_reason=None if enabled else "test", secret_encrypted=b"sealed")
    session.add(row)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    _created_endpoints.append(row.id)
    return row


def _attempts(endpoint_id: int, *outcomes_and_ms: tuple[str, int], status: str = "pending",
              started_at: dt.datetime | None = None) -> int:
    """One delivery with these attempt rows (outcome, duration in ms); returns the delivery id."""
    started_at = started_at or dt.datetime.now(dt.UTC)
    with unit_of_work() as session:
        delivery = WebhookDelivery(event_id=10**12 + int(uuid.uuid4().int % 10**9), endpoint_id=endpoint_id,
                                   msg_id=f"msg_{uuid.uuid4().hex}", event_type="license_key_meta.created",
                                   body="{}", status=status, attempts=len(outcomes_and_ms))
        session.add(delivery)
        session.flush()
        for number, (outcome, ms) in enumerate(outcomes_and_ms, start=1):
            session.add(WebhookAttempt(delivery_id=delivery.id, attempt_no=number, started_at=started_at,
                                       duration_ms=ms, outcome=outcome,
                                       status_code=200 if outcome == "success" else 500))
        return delivery.id


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_webhook_attempts_endpoints_and_given_up_deliveries(client: TestClient, settings: Settings) -> None:
    with unit_of_work() as session:
        enabled_id = _endpoint(session).id
        _endpoint(session, enabled=False)
    before = scrape(client)
    _attempts(enabled_id, ("failure", 120), ("failure", 80), ("success", 40))
    _attempts(enabled_id, ("lost", 0), status="failed")
    _attempts(enabled_id, ("success", 10), status="cancelled")
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("keymeta_webhook_attempts_total", outcome="success") == 2
    assert delta("keymeta_webhook_attempts_total", outcome="failure") == 2
    assert delta("keymeta_webhook_attempts_total", outcome="lost") == 1
    assert delta("keymeta_webhook_deliveries_given_up", status="failed") == 1
    assert delta("keymeta_webhook_deliveries_given_up", status="cancelled") == 1
    with unit_of_work() as session:
        enabled = session.scalar(select(func.count()).where(WebhookEndpoint.enabled.is_(True)))
        disabled = session.scalar(select(func.count()).where(WebhookEndpoint.enabled.is_(False)))
    assert disabled and enabled
    assert _value(after, "keymeta_webhook_endpoints", state="enabled") == enabled
    assert _value(after, "keymeta_webhook_endpoints", state="disabled") == disabled
    # Only "keymeta_webhook_attempts" is a counter: the exposition has _total (and _created is absent).
    assert ("keymeta_webhook_attempts_total", (("outcome", "success"),)) in after

    # A deleted endpoint takes its attempts with it; the counter does not go down in this process.
    with unit_of_work() as session:
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == enabled_id))
    again = scrape(client)
    for outcome in ("success", "failure", "lost"):
        assert (_value(again, "keymeta_webhook_attempts_total", outcome=outcome)
                >= _value(after, "keymeta_webhook_attempts_total", outcome=outcome))


def test_attempt_duration_quantiles_cover_the_recent_window(client: TestClient, settings: Settings) -> None:
    with unit_of_work() as session:
        endpoint_id = _endpoint(session).id
        # Recent attempts are the only ones in the window: make sure no other test's rows are.
        session.execute(update(WebhookAttempt).values(started_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    _attempts(endpoint_id, ("failure", 9000), started_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30))
    _attempts(endpoint_id, *[("success", ms) for ms in range(10, 1010, 10)])  # 10 ms … 1000 ms
    _attempts(endpoint_id, ("lost", 0))  # no duration: left out
    samples = scrape(client)
    assert _value(samples, "keymeta_webhook_attempt_duration_sample_attempts") == 100
    assert _value(samples, "keymeta_webhook_attempt_duration_seconds", quantile="0.5") == 0.5
    assert _value(samples, "keymeta_webhook_attempt_duration_seconds", quantile="0.9") == 0.9
    assert _value(samples, "keymeta_webhook_attempt_duration_seconds", quantile="0.99") == 0.99

    with unit_of_work() as session:
        session.execute(update(WebhookAttempt).values(started_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    samples = scrape(client)
    assert _value(samples, "keymeta_webhook_attempt_duration_sample_attempts") == 0
    assert not any(name == "keymeta_webhook_attempt_duration_seconds" for name, _ in samples)


def test_signing_key_age_per_active_scope(client: TestClient, settings: Settings, world) -> None:
    activated = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    scope = product_scope(world.product_id)
    with unit_of_work() as session:
        create_signing_key(session, load_master_key(settings), scope, now=activated)
        create_signing_key(session, load_master_key(settings), scope, state="pending")  # not active: no series
    samples = scrape(client)
    age = _value(samples, "keymeta_signing_key_age_seconds", scope=scope)
    assert 3 * 86400 <= age < 3 * 86400 + 120
    assert _value(samples, "keymeta_signing_key_age_seconds", scope="global") > 0
    with unit_of_work() as session:
        scopes = set(session.scalars(select(SigningKey.scope).where(SigningKey.state == "active")))
    assert {dict(labels)["scope"] for name, labels in samples if name == "keymeta_signing_key_age_seconds"} == scopes


def test_attempt_tally_reads_each_settled_row_once(settings: Settings) -> None:
    """With a tail of 2 ids, rows older than that are counted once and kept, even after they are deleted."""
    with unit_of_work() as session:
        endpoint_id = _endpoint(session).id

    async def totals(tally: AttemptTally) -> dict[str, int]:
        engine = make_async_engine(settings)
        try:
            async with engine.connect() as connection:
                return await tally.totals(connection)
        finally:
            await engine.dispose()

    tally, fresh = AttemptTally(tail_ids=2), AttemptTally(tail_ids=2)
    first = asyncio.run(totals(tally))
    _attempts(endpoint_id, ("success", 1), ("success", 1), ("failure", 1), ("success", 1))
    second = asyncio.run(totals(tally))
    assert second["success"] == first["success"] + 3 and second["failure"] == first["failure"] + 1
    assert asyncio.run(totals(fresh)) == second  # a fresh tally (a new process) counts everything
    with unit_of_work() as session:
        session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
    assert asyncio.run(totals(tally)) == second  # never lower within a process
    assert asyncio.run(totals(AttemptTally(tail_ids=2)))["success"] == first["success"]


def test_nearest_rank_quantiles() -> None:
    values = [float(v) for v in range(1, 31)]
    assert nearest_rank(values, 0.1) == 3.0
    assert nearest_rank(values, 0.5) == 15.0
    assert nearest_rank(values, 0.99) == 30.0
    assert nearest_rank([7.0], 0.5) == 7.0
