"""Regenerate the console screenshots in docs/console/ (``python -m tests.api.console.screenshots``).

Runs the real API app on a throwaway database (the test suite's PostgreSQL: KEYMETA_TEST_POSTGRES_URL, or
the suite's embedded server) with a little demo data, and photographs the main pages in headless Chromium
at desktop width and at 360 px.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlalchemy import select

from domain.events.audit import record_events
from domain.events.models import OutboxEvent
from domain.platform.database import unit_of_work
from domain.webhooks.states import DeliveryStatus
from tests.api.console.conftest import add_deliveries
from tests.api.console.scratch import scratch_console
from tests.api.console.test_browser import CHROMIUM, ServerThread
from tests.webhook_support import register

OUT = Path(__file__).resolve().parents[3] / "docs" / "console"
WIDTHS = {"desktop": 1280, "phone": 360}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with scratch_console() as (settings, key):
        hook = register("http://127.0.0.1:9/hooks/keymeta", ["license_key_meta.created"])
        register("http://127.0.0.1:9/hooks/all-events")
        add_deliveries(hook.id, 3)
        add_deliveries(hook.id, 1, status=DeliveryStatus.FAILED, excerpt="503 Service Unavailable")
        with unit_of_work() as session:
            pending = list(session.scalars(select(OutboxEvent.id).where(OutboxEvent.audited_at.is_(None))))
        with unit_of_work() as session:
            record_events(session, pending)
        with ServerThread(settings) as server:
            _photograph(server.url, key.secret, hook.id, out)


def _photograph(base: str, api_key: str, endpoint_id: int, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        for name, width in WIDTHS.items():
            page = browser.new_context(viewport={"width": width, "height": 800}).new_page()
            page.goto(f"{base}/console/sign-in")
            page.screenshot(path=str(out / f"sign-in-{name}.png"), full_page=True)
            page.get_by_label("API key").fill(api_key)
            page.get_by_role("button", name="Sign in").click()
            page.screenshot(path=str(out / f"overview-{name}.png"), full_page=True)
            pages = {"endpoints": "/console/endpoints", "endpoint": f"/console/endpoints/{endpoint_id}",
                     "deliveries": "/console/deliveries", "audit": "/console/audit",
                     "signing-keys": "/console/signing-keys", "license-meta": "/console/license-meta"}
            for slug, path in pages.items():
                page.goto(base + path)
                page.screenshot(path=str(out / f"{slug}-{name}.png"), full_page=True)
            page.goto(f"{base}/console/endpoints/{endpoint_id}")
            page.get_by_role("button", name="Issue portal link").click()
            page.goto(page.get_by_label("Portal link", exact=True).input_value())
            page.screenshot(path=str(out / f"portal-{name}.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
