"""A throwaway keymeta for the console's scripts (screenshots, page timings): a fresh database (the suite's
PostgreSQL, KEYMETA_TEST_POSTGRES_URL, or its embedded server), a temp var dir, the process configured for
them, and a console API key; everything undone afterwards."""

from __future__ import annotations

import base64
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from domain.platform.database import reset_engines
from domain.platform.settings import Settings
from tests.api.console.conftest import ConsoleKey, console_key
from tests.backends import fresh_postgres_database, release_embedded_server
from tests.conftest import configure
from tests.webhook_support import WEBHOOK_ENV


@contextmanager
def scratch_console() -> Iterator[tuple[Settings, ConsoleKey]]:
    patch = pytest.MonkeyPatch()
    try:
        with fresh_postgres_database() as url, tempfile.TemporaryDirectory() as var:
            master = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
            settings = configure(patch, url, master, Path(var), **WEBHOOK_ENV)
            yield settings, console_key()
            reset_engines()
    finally:
        patch.undo()
        release_embedded_server()
