import pytest

from domain.platform.settings import Settings


@pytest.fixture
def settings(webhook_settings: Settings) -> Settings:
    """Webhook timings and allow-list of tests/webhook_support.py."""
    return webhook_settings
