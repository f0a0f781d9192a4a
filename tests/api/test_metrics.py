"""/metrics: request counters by route template, HTTP status and envelope code; latency; backlog gauges."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from domain.db import unit_of_work
from domain.models import OutboxEvent

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
