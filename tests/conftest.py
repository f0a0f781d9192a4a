from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from domain import catalog
from domain.access import api_keys
from domain.platform.database import make_sync_engine, reset_engines, unit_of_work
from domain.platform.migrate import upgrade_to_head
from domain.platform.settings import Settings, get_settings
from domain.signing.keys import GLOBAL_SCOPE, active_key, create_signing_key
from domain.signing.master_key import load_master_key
from tests.backends import check_servers, fresh_postgres_database, release_embedded_server
from tests.webhook_sink import Sink

pytest_plugins = ["tests.webhook_support"]  # the webhook_settings fixture

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI every real server must be configured and reachable: fail the run, never skip."""
    problems = check_servers(require_all=os.environ.get("CI") == "true")
    if problems:
        raise pytest.UsageError("real servers unavailable: " + "; ".join(problems))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The suite's embedded PostgreSQL stops with the last test session that used it: no process is left."""
    release_embedded_server()

CLIENT_IP = "203.0.113.10"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """This session's own PostgreSQL database (on the CI server or the suite's embedded one); ``settings``
    migrates it and gives it an active global signing key."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def master_key_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def configure(monkeypatch: pytest.MonkeyPatch, database_url: str, master_key_text: str, var_dir: Path,
              **extra: str) -> Settings:
    """Set KEYMETA_* in the environment (as every keymeta process reads it) and prepare the database."""
    env = {
        "KEYMETA_DATABASE_URL": database_url,
        "KEYMETA_MASTER_KEY": master_key_text,
        "KEYMETA_VAR_DIR": str(var_dir),
        "KEYMETA_CACHE_TTL_SECONDS": "0",
        "KEYMETA_LOG_FORMAT": "json",
        # Tests share apps (and their in-process counters) per address for the whole session and send many
        # refusals from one address: limits off, explicitly; tests/api/test_rate_limits.py turns them on.
        "KEYMETA_RATE_LIMIT_ENABLED": "false",
        **extra,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    reset_engines()
    current = get_settings()
    _prepare_database(current)
    return current


@pytest.fixture
def settings(database_url: str, master_key_text: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Environment-driven settings on the session's database."""
    yield configure(monkeypatch, database_url, master_key_text, tmp_path / "var")
    reset_engines()
    get_settings.cache_clear()


_prepared: set[str] = set()


def _prepare_database(settings: Settings) -> None:
    if settings.database_url in _prepared:
        return
    engine = make_sync_engine(settings)
    upgrade_to_head(engine)
    engine.dispose()
    with unit_of_work() as session:
        if active_key(session, GLOBAL_SCOPE) is None:
            create_signing_key(session, load_master_key(settings), GLOBAL_SCOPE)
    _prepared.add(settings.database_url)


@dataclass
class World:
    api_key: str
    api_key_id: int
    product_id: int
    license_key: str
    identifier: str

    def form(self, **overrides: str) -> dict[str, str]:
        data = {"api_key": self.api_key, "license_key": self.license_key, "identifier": self.identifier,
                "key": f"key-{uuid.uuid4().hex[:8]}", "value": "test value"}
        data.update(overrides)
        return data


def make_world(*, status: str = "assigned", product_active: bool = True, own_key: bool = False,
               validity_days: int = 0, capabilities: list[str] | None = None,
               allowed_cidrs: list[str] | None = None, activate: bool = True) -> World:
    """A product, a license key, an activation and an API key of their own, for one test."""
    settings = get_settings()
    suffix = uuid.uuid4().hex[:10].upper()
    identifier = f"{suffix.lower()}.example"
    with unit_of_work() as session:
        product = catalog.create_product(session, name=f"product {suffix}", active=product_active, own_key=own_key,
                                         master_key=load_master_key(settings) if own_key else None)
        license_row = catalog.create_license_key(session, product_id=product.id, key=f"LK-{suffix}",
                                                 status=status, validity_days=validity_days)
        if activate:
            catalog.activate(session, license_key=license_row.key, identifier=identifier)
        issued = api_keys.create_api_key(session, name=f"key {suffix}", capabilities=capabilities,
                                         allowed_cidrs=allowed_cidrs)
        return World(api_key=issued.secret, api_key_id=issued.row.id, product_id=product.id,
                     license_key=license_row.key, identifier=identifier)


@pytest.fixture
def world(settings: Settings) -> World:
    return make_world()


@pytest.fixture
def master_key(settings: Settings) -> bytes:
    return load_master_key(settings)


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A real HTTP server on loopback that records what webhooks deliver."""
    server = Sink()
    yield server
    server.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from api.app import create_app

    with TestClient(create_app(settings), client=(CLIENT_IP, 40000)) as test_client:
        yield test_client
