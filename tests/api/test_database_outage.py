"""While PostgreSQL cannot be reached, every answer of the metadata family is a signed 503 (code 5030) with
Retry-After, signed by the key the API holds in memory, and it comes at once: a refused connection fails at
once, a server that accepts but never answers at the connect timeout.

The API reaches the real database through a TCP proxy the tests cut (every connection dropped, new ones
refused), turn silent (connections accepted, never answered: an unreachable server as a client sees it) or
stall (open connections stay open and go silent: a server or network that stopped mid-conversation).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.requests import Request
from starlette.testclient import TestClient

from api.errors import plain_database_unavailable
from api.signed_response import EnvelopeSigner
from domain.license_meta.codes import META_CAPABILITIES
from domain.platform.database import sync_url
from domain.platform.settings import Settings
from domain.signing.keys import SignerStore
from domain.signing.master_key import load_master_key
from domain.signing.verification import verify_envelope
from tests.api.conftest import active_kid, public_keys, unique_ip
from tests.conftest import World, configure, make_world
from tests.processes import TcpProxy

# Far above the connect and statement timeouts (0.5 s, and 1 s here) and far below asyncpg's own default (60 s)
# and TCP's: an answer that needs this long waited for the database instead of answering without it.
ANSWER_BOUND_SECONDS = 15
STATEMENT_TIMEOUT_SECONDS = "1"
OPERATIONS = {
    "create": {"value": "v"},
    "update": {"value": "w"},
    "delete": {},
    "get": {},
}


class SilentServer:
    """Accepts connections on ``port`` and never answers: a database host that has stopped responding."""

    def __init__(self, port: int) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (see TcpProxy)
        self._listener.close()
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.close()


@dataclass
class Outage:
    client: TestClient
    proxy: TcpProxy
    world: World
    keys: dict[str, str]  # kid -> public PEM, read while the database answered
    global_kid: str
    silent: SilentServer | None = None
    down: bool = False

    def start(self, kind: str) -> None:
        self.down = True
        if kind == "stalled":
            self.proxy.stall()
            return
        self.proxy.cut()
        if kind == "unreachable":
            self.silent = SilentServer(self.proxy.port)

    def end(self) -> None:
        if self.silent is not None:
            self.silent.close()
            self.silent = None
        if self.down:
            self.proxy.restore()
            self.down = False

    def post(self, path: str, data: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
        """The answer, or a failure when none came within ``ANSWER_BOUND_SECONDS``."""
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            return pool.submit(self.client.post, path, data=data, headers=headers or {}).result(
                timeout=ANSWER_BOUND_SECONDS)
        finally:
            pool.shutdown(wait=False)  # a hung request fails the test; the outage's end releases it


@pytest.fixture
def outage(settings: Settings, database_url: str, master_key_text: str, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Outage]:
    from api.app import create_app

    world = make_world(capabilities=list(META_CAPABILITIES))
    keys, global_kid = public_keys(), active_kid("global")
    assert global_kid is not None
    real = make_url(database_url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    proxied = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxied_settings = configure(monkeypatch, proxied, master_key_text, tmp_path / "var",
                                 KEYMETA_DATABASE_STATEMENT_TIMEOUT_SECONDS=STATEMENT_TIMEOUT_SECONDS)
    scene = Outage(TestClient(create_app(proxied_settings), client=(unique_ip(), 40000)), proxy, world, keys,
                   global_kid)
    try:
        with scene.client:
            yield scene
            scene.end()  # the app shuts down with its database reachable
    finally:
        scene.end()
        proxy.close()


def form(world: World, operation: str) -> dict[str, str]:
    data = {"api_key": world.api_key, "license_key": world.license_key, "identifier": world.identifier,
            "key": "plan", **OPERATIONS[operation]}
    return data


def assert_signed_unavailable(response: httpx.Response, outage: Outage) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert list(body) == ["response", "response_base64", "private_key_used", "signature"]
    inner = body["response"]
    assert list(inner) == ["code", "message", "timestamp"]
    assert (inner["code"], inner["message"]) == (5030, "Service temporarily unavailable")
    assert base64.b64decode(body["response_base64"]).startswith(
        b'{"code":5030,"message":"Service temporarily unavailable","timestamp":')
    assert body["private_key_used"] == "global"
    assert response.headers["x-signature-key-id"] == outage.global_kid
    assert verify_envelope(response.content, outage.keys, preferred_kid=outage.global_kid) == outage.global_kid
    return inner


@pytest.mark.parametrize("kind", ["refused", "unreachable", "stalled"])
def test_every_operation_answers_a_signed_503_while_the_database_is_gone(outage: Outage, kind: str) -> None:
    # Connections in the pool first, so that the outage also ends connections the API holds.
    assert outage.post("/api/v1/create-license-key-meta", form(outage.world, "create")).json()[
        "response"]["code"] == 453
    outage.start(kind)
    for prefix in ("/api/v1/", "/v1/"):
        for operation in OPERATIONS:
            response = outage.post(f"{prefix}{operation}-license-key-meta", form(outage.world, operation))
            assert_signed_unavailable(response, outage)


@pytest.mark.parametrize("kind", ["refused", "unreachable"])
def test_an_idempotent_request_answers_a_signed_503_and_may_be_retried(outage: Outage, kind: str) -> None:
    outage.start(kind)
    data = form(outage.world, "create")
    headers = {"Idempotency-Key": "retry-me"}
    assert_signed_unavailable(outage.post("/api/v1/create-license-key-meta", data, headers), outage)
    outage.end()
    # Nothing was decided: the same key runs the request once the database is back.
    response = outage.post("/api/v1/create-license-key-meta", data, headers)
    assert response.json()["response"]["code"] == 453, response.text
    assert "idempotent-replayed" not in response.headers


def test_a_statement_the_server_cancels_at_its_timeout_is_a_signed_503_that_decided_nothing(
        outage: Outage, database_url: str) -> None:
    world = outage.world
    assert outage.post("/api/v1/create-license-key-meta", form(world, "create")).json()["response"]["code"] == 453
    headers = {"Idempotency-Key": "waits-on-a-lock"}
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as holder:  # another transaction holds the row the update must lock
            holder.execute(text("SELECT m.id FROM license_key_meta m JOIN license_keys l ON l.id = m.license_key_id "
                                "WHERE l.key = :lk AND m.key = 'plan' FOR UPDATE"), {"lk": world.license_key})
            assert_signed_unavailable(outage.post("/api/v1/update-license-key-meta", form(world, "update"), headers),
                                      outage)
            holder.rollback()
    finally:
        engine.dispose()
    read = outage.post("/api/v1/get-license-key-meta", form(world, "get")).json()["response"]
    assert [(m["value"], m["version"]) for m in read["meta"]] == [("v", 1)]  # the cancelled update left nothing
    retry = outage.post("/api/v1/update-license-key-meta", form(world, "update"), headers)
    assert retry.json()["response"]["code"] == 353 and "idempotent-replayed" not in retry.headers


def test_answers_are_decided_again_once_the_database_is_back(outage: Outage) -> None:
    outage.start("refused")
    assert_signed_unavailable(outage.post("/api/v1/get-license-key-meta", form(outage.world, "get")), outage)
    outage.end()
    response = outage.post("/api/v1/create-license-key-meta", form(outage.world, "create"))
    assert response.status_code == 200 and response.json()["response"]["code"] == 453, response.text


def test_without_a_key_ever_loaded_the_503_is_plain_and_says_so(outage: Outage, settings: Settings) -> None:
    app: Any = outage.client.app
    never_loaded = SignerStore(load_master_key(settings), 0)
    app.state.signer = EnvelopeSigner(never_loaded, app.state.engine.connect)
    outage.start("refused")
    response = outage.post("/api/v1/create-license-key-meta", form(outage.world, "create"))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {"error": "database unavailable, retry shortly", "code": 5030}
    assert "x-signature-key-id" not in response.headers


def test_the_plain_answer_for_routes_without_envelopes() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/api/v1/public-keys", "headers": [],
                       "query_string": b""})
    response: Any = asyncio.run(plain_database_unavailable(request, ConnectionRefusedError("refused")))
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.body == b'{"error":"database unavailable, retry shortly"}'


def test_readyz_names_the_database_and_keeps_signing_from_memory(outage: Outage) -> None:
    outage.start("unreachable")
    with ThreadPoolExecutor(max_workers=1) as pool:
        response = pool.submit(outage.client.get, "/readyz", params={"exclude": "broker"}).result(
            timeout=ANSWER_BOUND_SECONDS)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["failing"] == ["database", "migrations"]
    assert body["checks"]["signing"] == f"ok: key {outage.global_kid} held in memory (database unreachable)"

