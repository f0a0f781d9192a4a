"""The console in a real headless Chromium (the system's package, driven by Playwright): an operator signs
in, adds an endpoint at a local sink and copies its secret once, sends a test event that the delivery job
brings to the sink signed, reads a delivery and replays it, rotates the secret, hands out a portal link that
reaches nothing else, and verifies the audit chain. JavaScript is off throughout.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright import sync_api
from sqlalchemy import delete, select
from standardwebhooks.webhooks import Webhook

from domain.events.audit import record_events
from domain.events.models import AuditRecord, OutboxEvent
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import jobs
from tests.api.console.conftest import ConsoleKey, add_deliveries
from tests.processes import wait_until
from tests.webhook_sink import Sink
from tests.webhook_support import register

CHROMIUM = Path(os.environ.get("KEYMETA_TEST_CHROMIUM", "/usr/bin/chromium"))
if os.environ.get("CI") == "true" and not CHROMIUM.exists():  # CI installs it: never skip there
    raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed")


class ServerThread:
    """The real API app under uvicorn on 127.0.0.1, in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        from api.app import create_app

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), timeout=15, interval=0.02,
                   message="the API server to start")
        if not self.server.started:
            raise RuntimeError("the API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.socket.close()


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


def test_operator_and_consumer_in_a_browser(server: ServerThread, browser: object, operator_key: ConsoleKey,
                                            sink: Sink) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 360, "height": 800})  # type: ignore[attr-defined]
    context.set_default_timeout(10_000)
    page = context.new_page()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security" in message.text else None)

    # Sign in.
    page.goto(f"{server.url}/console")
    assert page.url.startswith(f"{server.url}/console/sign-in")
    page.get_by_label("API key").fill(operator_key.secret)
    page.get_by_role("button", name="Sign in").click()
    sync_api.expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    # Add an endpoint; its secret is on this one page only.
    page.get_by_role("link", name="Endpoints").click()
    page.get_by_label("URL").fill(sink.url("/browser-hook"))
    page.get_by_label("license_key_meta.created").check()
    page.get_by_role("button", name="Add endpoint").click()
    secret = page.get_by_label("Signing secret").input_value()
    assert secret.startswith("whsec_")
    page.get_by_role("link", name="Go to endpoint").click()
    assert secret not in page.content()
    endpoint_id = int(page.url.rsplit("/", 1)[1])

    # A test event: queued from the page, sent by the delivery job a webhooks worker runs, signed with the secret.
    page.get_by_role("button", name="Send a test event").click()
    sync_api.expect(page.locator("dd.status-pending")).to_have_text("pending")
    test_delivery = int(page.url.rsplit("/", 1)[1])
    assert jobs.deliver([test_delivery]).outcomes == {"succeeded": 1}
    [received] = sink.at("/browser-hook")
    event = Webhook(secret).verify(received.body, received.headers)
    assert (event["type"], event["data"]["endpoint_id"]) == ("webhook.test", endpoint_id)
    page.get_by_role("link", name="Back to the deliveries").click()
    listed = page.get_by_role("row").filter(has=page.get_by_role("link", name=str(test_delivery), exact=True))
    sync_api.expect(listed).to_contain_text("webhook.test")
    sync_api.expect(listed.locator("td.status-succeeded")).to_have_text("succeeded")
    listed.get_by_role("link", name=str(test_delivery), exact=True).click()
    attempt = page.locator("tbody tr")
    sync_api.expect(attempt).to_have_count(1)
    sync_api.expect(attempt.locator("td").nth(2)).to_have_text("success")
    sync_api.expect(attempt.locator("td").nth(3)).to_have_text("200")
    page.goto(f"{server.url}/console/endpoints/{endpoint_id}")

    # Its deliveries and their attempts.
    [delivery] = add_deliveries(endpoint_id, 1, excerpt="<b>thanks</b>")
    page.get_by_role("link", name="Deliveries of this endpoint").click()
    page.get_by_role("link", name=str(delivery), exact=True).click()
    sync_api.expect(page.get_by_role("heading", name=f"Delivery {delivery}")).to_be_visible()
    sync_api.expect(page.locator("pre.excerpt")).to_have_text("<b>thanks</b>")
    page.get_by_role("button", name="Replay this delivery").click()
    sync_api.expect(page.locator("dd.status-pending")).to_have_text("pending")

    # Rotating shows the new secret once.
    page.goto(f"{server.url}/console/endpoints/{endpoint_id}")
    page.get_by_role("button", name="Rotate secret").click()
    rotated = page.get_by_label("Signing secret").input_value()
    assert rotated.startswith("whsec_") and rotated != secret

    # A portal link for this endpoint reaches its deliveries and no other endpoint's.
    other = register("http://127.0.0.1:9/other-consumer")
    [other_delivery] = add_deliveries(other.id, 1)
    page.goto(f"{server.url}/console/endpoints/{endpoint_id}")
    page.get_by_role("button", name="Issue portal link").click()
    link = page.get_by_label("Portal link", exact=True).input_value()
    consumer = browser.new_context(java_script_enabled=False).new_page()  # type: ignore[attr-defined]
    consumer.goto(link)
    sync_api.expect(consumer.get_by_role("link", name=str(delivery), exact=True)).to_be_visible()
    answer = consumer.goto(f"{link}/deliveries/{other_delivery}")
    assert answer is not None and answer.status == 404
    assert "other-consumer" not in consumer.content()

    # The audit chain, as the audit worker writes it, verified from the page.
    with unit_of_work() as session:
        session.execute(delete(AuditRecord))
        pending = list(session.scalars(select(OutboxEvent.id).where(OutboxEvent.audited_at.is_(None))))
    with unit_of_work() as session:
        record_events(session, pending)
    page.get_by_role("link", name="Audit log").click()
    page.get_by_role("button", name="Verify the chain").click()
    sync_api.expect(page.locator("#verify-result")).to_contain_text(f"Chain intact: {len(pending)} records")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # readable at 360 px
    assert blocked == []
    with unit_of_work() as session:
        session.execute(delete(AuditRecord))
