"""Rate limits per API key, per client IP and for failed authentications (api/rate_limit.py).

Memory store always; Redis too when ``KEYMETA_TEST_REDIS_URL`` is set (each test has its own key prefix,
so parallel runs sharing one Redis never collide). On the memory store time is a fake clock that stands
still unless a test moves it, so no test depends on where the wall clock is; every test runs with the clock
a second before a minute boundary and just after one. Redis keeps its own time (TTLs from the first hit).
"""

from __future__ import annotations

import base64
import functools
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from domain.platform.settings import Settings, get_settings
from domain.signing.verification import verify_envelope
from tests.api.conftest import ENDPOINT, counts, new_outbox_events, public_keys, unique_ip
from tests.backends import REDIS_URL
from tests.conftest import World, configure, make_world

STORES = ["memory"] + (["redis"] if REDIS_URL else [])
MINUTE_EDGE = 1_800_000_000.0  # a whole minute (and hour) in Unix seconds


class FakeClock:
    """Unix seconds that stand still unless a test advances them."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=[MINUTE_EDGE - 1, MINUTE_EDGE + 0.001], ids=["second-before-minute", "just-after-minute"])
def clock(request: pytest.FixtureRequest) -> FakeClock:
    return FakeClock(request.param)


def assert_rate_limited(response: Any, scope: str | None) -> dict[str, Any]:
    """A signed 429 (4290); ``scope`` names the limit the reason must name (None: any of them)."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    body = response.json()
    assert list(body) == ["response", "response_base64", "private_key_used", "signature"]
    inner = body["response"]
    assert list(inner) == ["code", "message", "errors", "timestamp"]
    assert inner["code"] == 4290
    assert inner["message"] == "Too many requests"
    assert base64.b64decode(body["response_base64"]).startswith(b'{"code":4290,"message":"Too many requests",')
    assert body["private_key_used"] == "global"
    [reason] = inner["errors"]["rate_limit"]
    assert reason.endswith(f"retry after {retry_after} s")
    if scope is not None:
        assert {"api_key": "API key", "ip": "from this IP", "failed_auth": "failed authentication"}[scope] in reason
    assert verify_envelope(response.content, public_keys()) == response.headers["x-signature-key-id"]
    return inner


@pytest.fixture
def limited(database_url: str, master_key_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            clock: FakeClock) -> Iterator[Callable[..., Callable[[str], TestClient]]]:
    """``limited(store, per_key=…, per_ip=…, failed=…)`` → ``client_for(ip)``: clients of one app (one API
    process) whose limiter reads ``clock``; two calls with the same ``prefix`` are two replicas sharing the
    store's counters."""
    from api.app import create_app
    from api.rate_limit import RequestRateLimiter

    stack = ExitStack()

    def make(store: str, *, per_key: str = "", per_ip: str = "", failed: str = "",
             strategy: str = "sliding-window-counter", storage_url: str | None = None,
             prefix: str | None = None) -> Callable[[str], TestClient]:
        url = storage_url or ("memory://" if store == "memory" else REDIS_URL)
        settings = configure(monkeypatch, database_url, master_key_text, tmp_path / "var",
                             KEYMETA_RATE_LIMIT_ENABLED="true", KEYMETA_RATE_LIMIT_PER_API_KEY=per_key,
                             KEYMETA_RATE_LIMIT_PER_IP=per_ip, KEYMETA_RATE_LIMIT_FAILED_AUTH_PER_IP=failed,
                             KEYMETA_RATE_LIMIT_STRATEGY=strategy, KEYMETA_RATE_LIMIT_STORAGE_URL=url,
                             KEYMETA_RATE_LIMIT_KEY_PREFIX=prefix or f"keymeta-test-{uuid.uuid4().hex}")
        # The app builds its limiter at start-up; this one reads the test's clock.
        monkeypatch.setattr("api.app.RequestRateLimiter", functools.partial(RequestRateLimiter, clock=clock))
        app = create_app(settings)

        def client_for(ip: str) -> TestClient:
            return stack.enter_context(TestClient(app, client=(ip, 40000)))

        return client_for

    yield make
    stack.close()
    get_settings.cache_clear()


def post(client: TestClient, world: World, **overrides: str) -> Any:
    return client.post(ENDPOINT, data=world.form(**overrides))


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("strategy", ["sliding-window-counter", "fixed-window", "moving-window"])
def test_per_api_key_limit_refuses_signed_429_and_audits_it(limited: Any, store: str, strategy: str) -> None:
    client = limited(store, per_key="3/minute", strategy=strategy)(unique_ip())
    world = make_world()
    for _ in range(3):
        assert post(client, world).json()["response"]["code"] == 453
    before = counts()
    response = post(client, world)
    assert_rate_limited(response, "api_key")
    after = counts()
    assert after.meta == before.meta, "a rate-limited request stored meta"
    [event] = new_outbox_events(before)
    assert event.outcome_code == 4290
    assert event.request_id == response.headers["x-request-id"]
    assert event.payload["api_key_id"] == world.api_key_id
    # Another key from the same address is not affected.
    assert post(client, make_world()).json()["response"]["code"] == 453


@pytest.mark.parametrize("store", STORES)
def test_rate_limit_wins_over_a_malformed_body_and_holds_for_every_encoding(limited: Any, store: str) -> None:
    client_for = limited(store, per_key="1/minute", per_ip="3/minute")
    client = client_for(unique_ip())
    world = make_world()
    assert client.post(ENDPOINT, json=world.form()).json()["response"]["code"] == 453
    # The key in a header, the body multipart: the per-key limit (1/minute) applies.
    assert_rate_limited(client.post(ENDPOINT, headers={"X-API-Key": world.api_key}, files={"identifier": "x"}),
                        "api_key")
    # An unparseable body yields no key at all; the per-IP limit (3/minute) still applies, before the 400.
    assert client.post(ENDPOINT, content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 400
    assert_rate_limited(client.post(ENDPOINT, content=b"{not json", headers={"content-type": "application/json"}),
                        "ip")


@pytest.mark.parametrize("store", STORES)
def test_per_ip_limit_counts_every_key_from_one_address(limited: Any, store: str) -> None:
    client_for = limited(store, per_ip="2/minute")
    ip = unique_ip()
    client = client_for(ip)
    assert post(client, make_world()).json()["response"]["code"] == 453
    assert post(client, make_world()).json()["response"]["code"] == 453
    assert_rate_limited(post(client, make_world()), "ip")
    assert post(client_for(unique_ip()), make_world()).json()["response"]["code"] == 453


def test_a_repeat_with_an_idempotency_key_counts_and_a_limited_one_neither_replays_nor_frees_the_key(
        limited: Any, clock: FakeClock) -> None:
    client = limited("memory", per_key="2/minute")(unique_ip())
    world = make_world()
    form, headers = world.form(), {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = client.post(ENDPOINT, data=form, headers=headers)
    replayed = client.post(ENDPOINT, data=form, headers=headers)
    assert first.json()["response"]["code"] == 453
    assert replayed.headers["idempotent-replayed"] == "true" and replayed.content == first.content
    before = counts()
    over = client.post(ENDPOINT, data=form, headers=headers)
    assert_rate_limited(over, "api_key")
    assert "idempotent-replayed" not in over.headers
    [event] = new_outbox_events(before)  # audited as the refusal it is, not as a replay
    assert event.outcome_code == 4290 and event.type == "license_key_meta.create_refused"
    clock.advance(120)
    again = client.post(ENDPOINT, data=form, headers=headers)
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content


@pytest.mark.parametrize("store", STORES)
def test_failed_authentication_is_limited_tighter_and_locks_the_address(limited: Any, store: str) -> None:
    client_for = limited(store, per_key="100/minute", per_ip="100/minute", failed="2/minute")
    ip = unique_ip()
    client = client_for(ip)
    world = make_world()
    for _ in range(2):
        response = post(client, world, api_key="km_guessed_" + uuid.uuid4().hex)
        assert response.status_code == 401 and response.json()["response"]["code"] == 100
    before = counts()
    # The address is locked, even for a valid key (a guesser must not learn which guess was right).
    assert_rate_limited(post(client, world), "failed_auth")
    assert [e.outcome_code for e in new_outbox_events(before)] == [4290]
    # Successful requests never count as failures; other addresses are unaffected.
    other = client_for(unique_ip())
    for _ in range(3):
        assert post(other, world).json()["response"]["code"] == 453


def test_sliding_window_weighs_the_previous_minute_by_its_share_still_inside(limited: Any,
                                                                          clock: FakeClock) -> None:
    client = limited("memory", per_ip="2/minute")(unique_ip())
    assert post(client, make_world()).json()["response"]["code"] == 453
    assert post(client, make_world()).json()["response"]["code"] == 453
    assert_rate_limited(post(client, make_world()), "ip")
    # At the next minute the previous one still counts in full (2 × 60/60) ...
    clock.now = (clock.now // 60 + 1) * 60
    assert_rate_limited(post(client, make_world()), "ip")
    # ... half a minute later by half (2 × 30/60 = 1): one more request fits, the next does not.
    clock.advance(30)
    assert post(client, make_world()).json()["response"]["code"] == 453
    assert_rate_limited(post(client, make_world()), "ip")


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_retry_after_counts_down_on_the_clock(limited: Any, clock: FakeClock, strategy: str) -> None:
    client = limited("memory", per_ip="1/minute", strategy=strategy)(unique_ip())
    assert post(client, make_world()).json()["response"]["code"] == 453
    response = post(client, make_world())
    assert_rate_limited(response, "ip")
    assert response.headers["retry-after"] == "60"
    clock.advance(59.5)
    response = post(client, make_world())
    assert_rate_limited(response, "ip")
    assert response.headers["retry-after"] == "1"
    clock.advance(0.5)
    assert post(client, make_world()).json()["response"]["code"] == 453


@pytest.mark.skipif(not REDIS_URL, reason="needs KEYMETA_TEST_REDIS_URL (a shared store)")
def test_redis_limit_holds_across_api_replicas(limited: Any) -> None:
    ip, prefix = unique_ip(), f"keymeta-test-{uuid.uuid4().hex}"
    replica_a = limited("redis", per_key="3/minute", prefix=prefix)(ip)  # two apps: two API processes
    replica_b = limited("redis", per_key="3/minute", prefix=prefix)(ip)
    world = make_world()
    assert post(replica_a, world).json()["response"]["code"] == 453
    assert post(replica_b, world).json()["response"]["code"] == 453
    assert post(replica_a, world).json()["response"]["code"] == 453
    assert_rate_limited(post(replica_b, world), "api_key")


def test_unreachable_store_fails_open(limited: Any) -> None:
    client = limited("redis", per_key="1/minute", storage_url="redis://127.0.0.1:1/0")(unique_ip())
    world = make_world()
    assert post(client, world).json()["response"]["code"] == 453
    assert post(client, world).json()["response"]["code"] == 453


def test_on_by_default_each_limit_can_be_turned_off_and_misconfiguration_refused() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.rate_limit_enabled is True
    assert defaults.rate_limit_per_api_key and defaults.rate_limit_per_ip and defaults.rate_limit_failed_auth_per_ip
    assert defaults.rate_limit_storage_url == "memory://"
    one_off = Settings(_env_file=None, rate_limit_per_ip="off", rate_limit_per_api_key="")  # type: ignore[call-arg]
    assert (one_off.rate_limit_per_ip, one_off.rate_limit_per_api_key) == ("", "")
    assert one_off.rate_limit_failed_auth_per_ip == defaults.rate_limit_failed_auth_per_ip
    with pytest.raises(ValueError, match="malformed rate limit"):
        Settings(_env_file=None, rate_limit_per_ip="lots")  # type: ignore[call-arg]
    from api.rate_limit import make_storage

    with pytest.raises(ValueError, match="memory:// or redis://"):
        make_storage("memcached://127.0.0.1:11211")



class PeerFromHeader:
    """Test-only: the socket peer of each request is the ``x-test-peer`` header, so that clients at several
    addresses share one app (one API process, one set of counters)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            peer = dict(scope["headers"]).get(b"x-test-peer")
            if peer is not None:
                scope = {**scope, "client": (peer.decode("ascii"), 40000)}
        await self.app(scope, receive, send)


def test_a_flood_of_failed_authentications_is_throttled_by_default_and_spares_other_clients(
        database_url: str, master_key_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        clock: FakeClock) -> None:
    from api.app import create_app
    from api.rate_limit import RequestRateLimiter

    configure(monkeypatch, database_url, master_key_text, tmp_path / "var")
    monkeypatch.delenv("KEYMETA_RATE_LIMIT_ENABLED")  # the suite turns the limits off; here they are the defaults
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.rate_limit_enabled
    monkeypatch.setattr("api.app.RequestRateLimiter", functools.partial(RequestRateLimiter, clock=clock))
    attacker, legitimate = {"x-test-peer": unique_ip()}, {"x-test-peer": unique_ip()}
    world = make_world()
    codes: list[int] = []
    with TestClient(PeerFromHeader(create_app(settings))) as client:
        for n in range(600):
            guess = client.post(ENDPOINT, data=world.form(api_key=f"km_guessed_{n}"), headers=attacker)
            codes.append(guess.json()["response"]["code"])
            if n % 100 == 99:  # the legitimate client keeps working throughout the flood
                assert client.post(ENDPOINT, data=world.form(), headers=legitimate).json()["response"]["code"] == 453
        # Over its per-IP limit as well by now: the reason names whichever frees the address last.
        assert_rate_limited(guess, None)
        # The address stays locked for a valid key too, until its windows free it.
        assert_rate_limited(client.post(ENDPOINT, data=world.form(), headers=attacker), None)
    failed_auth_limit = settings.rate_limit_failed_auth_per_ip.split(";")[0]  # "10/minute"
    allowed = int(failed_auth_limit.split("/")[0])
    assert codes == [100] * allowed + [4290] * (600 - allowed)
