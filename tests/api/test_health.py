"""Liveness and readiness: /readyz names the part that is missing (database, migrations, broker, signing)."""

from __future__ import annotations

import socket
import threading

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from domain.platform.database import make_sync_engine
from domain.platform.migrate import head_revision
from domain.platform.settings import Settings, get_settings
from tests.conftest import CLIENT_IP


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthz_answers_without_dependencies(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_ready_on_the_embedded_broker(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready",
                               "checks": {"database": "ok", "migrations": "ok", "broker": "ok", "signing": "ok"}}
    assert response.headers["cache-control"] == "no-store"


def _app_with_broker(monkeypatch: pytest.MonkeyPatch, broker_url: str) -> TestClient:
    from api.app import create_app

    monkeypatch.setenv("KEYMETA_BROKER_URL", broker_url)
    get_settings.cache_clear()
    return TestClient(create_app(get_settings()), client=(CLIENT_IP, 40000))


def test_readyz_503_names_an_unreachable_broker_and_stays_quick(settings: Settings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with _app_with_broker(monkeypatch, f"amqp://guest:guest@127.0.0.1:{_unused_port()}//") as bad:
        response = bad.get("/readyz")
        # Liveness does not depend on the broker: a broker outage must not get the API restarted.
        assert bad.get("/healthz").status_code == 200
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "not ready"
    assert body["failing"] == ["broker"]
    assert body["checks"]["database"] == "ok" and body["checks"]["migrations"] == "ok"
    # A refused connection ends the check by itself (kombu's own bounds: one retry, within the broker timeout):
    # the failure is the connection error, not the check's outer deadline ("failed: TimeoutError").
    assert body["checks"]["broker"] == "failed: OperationalError"
    assert "guest" not in response.text  # no credentials in the body


def test_readyz_gives_up_on_a_hanging_broker_at_its_deadline(client: TestClient,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that never answers: /readyz answers at the check's deadline, without waiting for the connect."""
    import api.health

    release, connecting, connected = threading.Event(), threading.Event(), threading.Event()

    def hanging_connect(settings: Settings) -> None:
        connecting.set()
        # Hangs until the test has its response; the 10 s bound only turns a /readyz that waits for the
        # connect into a failure below instead of a hung test.
        release.wait(10)
        connected.set()

    monkeypatch.setattr(api.health, "_connect_broker", hanging_connect)
    monkeypatch.setattr(api.health, "BROKER_TIMEOUT_SECONDS", 0.1)  # the check's deadline: 3 x this
    try:
        response = client.get("/readyz")
        assert connecting.is_set() and not connected.is_set()  # answered while the connect still hung
    finally:
        release.set()
    assert response.status_code == 503, response.text
    assert response.json()["failing"] == ["broker"]
    assert response.json()["checks"]["broker"] == "failed: TimeoutError"  # the deadline is what ended it


def _readyz_with_revision(client: TestClient, settings: Settings, revision: str) -> dict:
    engine = make_sync_engine(settings)
    head = head_revision()
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :rev"), {"rev": revision})
        response = client.get("/readyz")
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
        engine.dispose()
    return {"status_code": response.status_code, **response.json()}


def _older_revision() -> str:
    from alembic.script import ScriptDirectory

    from domain.platform.migrate import alembic_config

    revisions = [r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
    assert len(revisions) >= 2
    return revisions[1]


def test_readyz_503_when_migrations_are_behind(client: TestClient, settings: Settings) -> None:
    older = _older_revision()
    body = _readyz_with_revision(client, settings, older)
    assert body["status_code"] == 503, body
    assert body["failing"] == ["migrations"]
    assert body["checks"]["migrations"] == f"database at {older}, code expects {head_revision()}"
    assert client.get("/readyz").status_code == 200


def test_readyz_ready_when_a_newer_release_migrated_first(client: TestClient, settings: Settings) -> None:
    """Rolling deploy: the migration job of the next release ran; old replicas must stay in service."""
    body = _readyz_with_revision(client, settings, "9999_from_the_future")
    assert body["status_code"] == 200, body
    assert body["checks"]["migrations"].startswith("ok: database at 9999_from_the_future, ahead")


def test_readyz_can_leave_the_broker_out(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with _app_with_broker(monkeypatch, f"amqp://guest:guest@127.0.0.1:{_unused_port()}//") as bad:
        assert bad.get("/readyz").status_code == 503
        response = bad.get("/readyz", params={"exclude": "broker"})
        unknown = bad.get("/readyz", params={"exclude": "brokr"})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "migrations": "ok", "signing": "ok"}}
    assert unknown.status_code == 400


def test_readyz_503_when_the_database_is_gone(client: TestClient) -> None:
    client.app.state.engine.sync_engine.dispose()  # type: ignore[attr-defined]
    original = client.app.state.engine  # type: ignore[attr-defined]

    class Broken:
        def connect(self) -> object:
            raise ConnectionRefusedError("database down")

    client.app.state.engine = Broken()  # type: ignore[attr-defined]
    try:
        response = client.get("/readyz")
    finally:
        client.app.state.engine = original  # type: ignore[attr-defined]
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database", "migrations"]
    assert body["checks"]["database"] == "failed: ConnectionRefusedError"


def test_readyz_503_names_signing_without_an_active_global_key(client: TestClient) -> None:
    class NoActiveKey:
        async def global_kid(self) -> None:
            return None

        def held_global_kid(self) -> None:
            return None

    original = client.app.state.signer  # type: ignore[attr-defined]
    client.app.state.signer = NoActiveKey()  # type: ignore[attr-defined]
    try:
        response = client.get("/readyz", params={"exclude": "broker"})
    finally:
        client.app.state.signer = original  # type: ignore[attr-defined]
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["signing"]
    assert body["checks"]["signing"] == "no active global signing key: run 'keymeta bootstrap'"
