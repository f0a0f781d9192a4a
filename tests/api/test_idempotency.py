"""api.idempotency around a fake mutation, inside the real application: replays, refusals, what is kept, TTL.

The fake stands for create/update/delete: it counts its calls and answers what each test plans, signed by the
app's real signer. The database, the signer and the audit outbox are the real ones.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from api.idempotency import idempotent
from domain.access import api_keys
from domain.access.checks import api_key_digest
from domain.idempotency.models import IdempotencyKey
from domain.idempotency.service import IdempotencyKeys
from domain.license_meta.codes import Code, ExtensionCode
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.signing.keys import GLOBAL_SCOPE
from domain.signing.verification import verify_envelope
from tests.api.conftest import counts, new_outbox_events, public_keys
from tests.conftest import CLIENT_IP, World

PATH = "/test/mutate"
T0 = dt.datetime(2031, 5, 1, 8, 0, tzinfo=dt.UTC)


@dataclass
class FakeMutation:
    calls: int = 0
    plan: list[str] = field(default_factory=list)  # what the next calls answer; then "created"
    during: Callable[[], Awaitable[None]] | None = None  # runs inside the next call
    now: dt.datetime = T0

    def clock(self) -> dt.datetime:
        return self.now


@dataclass
class Harness:
    client: TestClient
    fake: FakeMutation
    world: World

    def post(self, key: str | bytes | None = "key-1", *, api_key: str | None = None, request_id: str | None = None,
             **params: str) -> httpx.Response:
        return self.client.post(PATH, data=form(self.world, api_key, **params), headers=headers(key, request_id))


def form(world: World, api_key: str | None = None, **params: str) -> dict[str, str]:
    data = {"api_key": api_key or world.api_key, "license_key": world.license_key, "key": "plan", "value": "pro"}
    data.update(params)
    return {name: value for name, value in data.items() if value}


def headers(key: str | bytes | None, request_id: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {} if key is None else {"Idempotency-Key": key}
    if request_id:
        result["X-Request-Id"] = request_id
    return result


def install(app: Any, fake: FakeMutation) -> None:
    @app.post(PATH)
    async def mutate(request: Request) -> Response:
        values = {name: str(value) for name, value in (await request.form()).items()}

        async def handle() -> Response:
            fake.calls += 1
            if fake.during is not None:
                hook, fake.during = fake.during, None
                await hook()
            outcome = fake.plan.pop(0) if fake.plan else "created"
            signer = request.app.state.signer
            if outcome == "created":
                return await signer.respond(Code.META_CREATED, GLOBAL_SCOPE, extras={"meta_id": fake.calls})
            if outcome == "refused":
                return await signer.respond(Code.INCORRECT_DATA, GLOBAL_SCOPE,
                                            extras={"errors": {"value": ["too long"]}})
            if outcome == "rate_limited":
                return await signer.respond(ExtensionCode.RATE_LIMITED, GLOBAL_SCOPE)
            if outcome == "unavailable":
                return JSONResponse({"error": "database unavailable, retry shortly"}, status_code=503)
            if outcome == "no_answer":  # the database stopped answering a statement it may have committed
                raise TimeoutError("no answer from the database")
            if outcome == "cancelled":  # the server cancelled (rolled back) a statement at its timeout
                raise asyncpg.QueryCanceledError("canceling statement due to statement timeout")
            raise RuntimeError("the handler failed")

        return await idempotent(request, "test-mutate", values, handle, clock=fake.clock)


@pytest.fixture
def harness(settings: Settings, world: World) -> Iterator[Harness]:
    from api.app import create_app

    app = create_app(settings)
    fake = FakeMutation()
    install(app, fake)
    with TestClient(app, client=(CLIENT_IP, 40000)) as client:
        yield Harness(client, fake, world)


def envelope(response: httpx.Response, code: int, message: str, http_status: int) -> dict[str, Any]:
    """A correctly signed envelope with this code, message and status."""
    assert response.status_code == http_status, response.text
    assert response.headers["content-type"] == "application/json"
    kid = verify_envelope(response.content, public_keys(), preferred_kid=response.headers["x-signature-key-id"])
    assert kid == response.headers["x-signature-key-id"]
    inner: dict[str, Any] = response.json()["response"]
    assert (inner["code"], inner["message"]) == (code, message)
    return inner


def kept_rows(api_key: str) -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(IdempotencyKey)
                              .where(IdempotencyKey.scope == api_key_digest(api_key))) or 0


def test_without_the_header_every_request_runs(harness: Harness) -> None:
    assert envelope(harness.post(None), 453, "Metadata created", 200)["meta_id"] == 1
    assert envelope(harness.post(None), 453, "Metadata created", 200)["meta_id"] == 2
    assert kept_rows(harness.world.api_key) == 0


def test_a_repeat_gets_the_first_answer_byte_for_byte_and_runs_nothing(harness: Harness) -> None:
    first = harness.post(request_id="first-request")
    repeat = harness.post(request_id="repeat-request")
    assert harness.fake.calls == 1
    assert (repeat.status_code, repeat.content) == (first.status_code, first.content)
    for name in ("content-type", "x-signature-key-id"):
        assert repeat.headers[name] == first.headers[name]
    assert repeat.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert repeat.headers["x-request-id"] == "repeat-request"
    assert envelope(repeat, 453, "Metadata created", 200)["meta_id"] == 1


def test_a_replay_is_audited_once_as_a_replay_and_emits_nothing_else(harness: Harness) -> None:
    harness.post(identifier="domain.ltd")
    before = counts()
    harness.post(request_id="replayed-request", identifier="domain.ltd")
    [event] = new_outbox_events(before)
    assert (event.type, event.outcome_code, event.request_id) == (
        "license_key_meta.idempotent_replay", 453, "replayed-request")
    assert event.payload["api_key_id"] == harness.world.api_key_id
    assert event.payload["identifier"] == "domain.ltd"
    assert event.payload["meta_key"] == "plan"
    assert event.payload["source_ip"] == CLIENT_IP
    assert event.payload["detail"] == {"endpoint": "test-mutate"}
    assert harness.world.license_key not in json.dumps(event.payload)


def test_the_same_key_with_different_parameters_is_a_signed_4220(harness: Harness) -> None:
    harness.post(value="pro")
    before = counts()
    response = harness.post(value="enterprise", request_id="reused-key")
    envelope(response, 4220, "Idempotency key reused with different parameters", 422)
    assert response.json()["private_key_used"] == "global"
    assert harness.fake.calls == 1
    [event] = new_outbox_events(before)
    assert (event.type, event.outcome_code, event.request_id) == (
        "license_key_meta.idempotency_refused", 4220, "reused-key")


def test_a_repeat_while_the_first_runs_is_a_signed_4090_that_is_not_kept(harness: Harness) -> None:
    inner: list[httpx.Response] = []

    async def repeat_meanwhile() -> None:
        transport = httpx.ASGITransport(app=harness.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            inner.append(await client.post(PATH, data=form(harness.world), headers=headers("key-1")))

    harness.fake.during = repeat_meanwhile
    first = harness.post()
    [meanwhile] = inner
    envelope(meanwhile, 4090, "A request with this idempotency key is in progress", 409)
    assert meanwhile.headers["retry-after"] == "1"
    envelope(first, 453, "Metadata created", 200)
    after = harness.post()
    assert (after.content, after.headers["idempotent-replayed"]) == (first.content, "true")
    assert harness.fake.calls == 1


@pytest.mark.parametrize(("key", "reason"), [
    (b"", "must not be empty"),
    (b"x" * 256, "must be at most 255 characters"),
    (b"a\x01b", "must be printable ASCII characters only"),
    ("caf\u00e9".encode(), "must be printable ASCII characters only"),
])
def test_a_malformed_key_is_a_signed_400_901_and_audited(harness: Harness, key: bytes, reason: str) -> None:
    before = counts()
    response = harness.post(key, request_id="bad-key")
    inner = envelope(response, 901, "Incorrect data found", 400)
    assert inner["errors"] == {"idempotency_key": [reason]}
    assert harness.fake.calls == 0
    [event] = new_outbox_events(before)
    assert (event.type, event.outcome_code, event.request_id) == (
        "license_key_meta.idempotency_refused", 901, "bad-key")


@pytest.mark.parametrize(("outcome", "http_status"), [("unavailable", 503), ("rate_limited", 429)])
def test_server_failures_and_rate_limits_are_not_kept_so_a_retry_runs(harness: Harness, outcome: str,
                                                                      http_status: int) -> None:
    harness.fake.plan = [outcome]
    assert harness.post().status_code == http_status
    retry = harness.post()
    assert harness.fake.calls == 2
    envelope(retry, 453, "Metadata created", 200)
    assert harness.post().content == retry.content
    assert harness.fake.calls == 2


def test_a_statement_the_server_cancelled_decided_nothing_so_a_retry_runs(harness: Harness) -> None:
    harness.fake.plan = ["cancelled"]
    assert harness.post().status_code == 503
    envelope(harness.post(), 453, "Metadata created", 200)
    assert harness.fake.calls == 2


def test_a_statement_without_an_answer_keeps_its_key_so_a_retry_cannot_run_it_twice(harness: Harness) -> None:
    harness.fake.plan = ["no_answer"]
    assert harness.post().status_code == 503
    retry = harness.post()
    envelope(retry, 4090, "A request with this idempotency key is in progress", 409)
    assert harness.fake.calls == 1


def test_a_refusal_is_a_decided_answer_and_is_kept(harness: Harness) -> None:
    harness.fake.plan = ["refused"]
    first = harness.post()
    assert envelope(first, 901, "Incorrect data found", 200)["errors"] == {"value": ["too long"]}
    repeat = harness.post()
    assert (repeat.content, repeat.headers["idempotent-replayed"]) == (first.content, "true")
    assert harness.fake.calls == 1


def test_a_handler_that_fails_frees_its_key(harness: Harness) -> None:
    harness.fake.plan = ["raises"]
    with pytest.raises(RuntimeError):
        harness.post()
    assert kept_rows(harness.world.api_key) == 0
    envelope(harness.post(), 453, "Metadata created", 200)
    assert harness.fake.calls == 2


def test_a_key_is_kept_for_the_ttl_then_runs_as_a_new_request(harness: Harness, settings: Settings) -> None:
    first = harness.post()
    harness.fake.now = T0 + dt.timedelta(seconds=settings.idempotency_ttl_seconds - 1)
    assert harness.post().content == first.content
    harness.fake.now = T0 + dt.timedelta(seconds=settings.idempotency_ttl_seconds)
    assert envelope(harness.post(), 453, "Metadata created", 200)["meta_id"] == 2
    assert kept_rows(harness.world.api_key) == 1


def test_keys_are_scoped_to_the_api_key_that_sent_them(harness: Harness) -> None:
    with unit_of_work() as session:
        other = api_keys.create_api_key(session, name="another client").secret
    harness.post()
    assert envelope(harness.post(api_key=other), 453, "Metadata created", 200)["meta_id"] == 2
    assert harness.fake.calls == 2


def test_a_request_without_an_api_key_goes_straight_to_the_endpoint(harness: Harness) -> None:
    client = harness.client
    for _ in range(2):
        client.post(PATH, data={"license_key": "LK", "key": "plan", "value": "pro"}, headers=headers("key-1"))
    assert harness.fake.calls == 2


def test_an_unavailable_store_answers_503_and_runs_nothing(harness: Harness) -> None:
    state = harness.client.app.state  # type: ignore[attr-defined]
    engine, keys = state.engine, state.idempotency
    # A real server that refuses connections: port 1 on loopback has no listener.
    state.engine = create_async_engine("postgresql+asyncpg://keymeta@127.0.0.1:1/none")
    state.idempotency = IdempotencyKeys(state.engine)
    try:
        response = harness.post()
    finally:
        harness.client.portal.call(state.engine.dispose)  # type: ignore[union-attr]
        state.engine, state.idempotency = engine, keys
    assert response.status_code == 503
    assert response.json()["response"]["code"] == ExtensionCode.SERVICE_UNAVAILABLE
    assert verify_envelope(response.content, public_keys()) == response.headers["x-signature-key-id"]
    assert harness.fake.calls == 0
