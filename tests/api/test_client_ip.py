"""The client IP (docs/api.md) is the socket peer, or the left-most untrusted hop of X-Forwarded-For when the
peer is a trusted proxy; never X-Forwarded-For from an untrusted peer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from api.client_ip import client_ip
from domain.access import block_rules
from domain.access.checks import parse_network
from domain.platform.database import unit_of_work
from domain.platform.settings import get_settings
from tests.api.conftest import ENDPOINT, assert_envelope, counts, new_outbox_events, unique_ip
from tests.conftest import CLIENT_IP, make_world

TRUSTED = (parse_network("10.0.0.0/8"), parse_network("fd00::/8"))


# --- unit: api.client_ip.client_ip -------------------------------------------------------------------
@pytest.mark.parametrize(("peer", "forwarded", "trusted", "expected"), [
    ("203.0.113.9", None, TRUSTED, "203.0.113.9"),
    ("203.0.113.9", "198.51.100.1", (), "203.0.113.9"),  # no trusted proxies configured
    ("203.0.113.9", "198.51.100.1", TRUSTED, "203.0.113.9"),  # untrusted peer: header ignored
    ("10.0.0.2", None, TRUSTED, "10.0.0.2"),
    ("10.0.0.2", "", TRUSTED, "10.0.0.2"),
    ("10.0.0.2", "198.51.100.1", TRUSTED, "198.51.100.1"),
    ("10.0.0.2", " 198.51.100.1 ", TRUSTED, "198.51.100.1"),
    # The client may prepend anything; only hops added by trusted proxies count, read from the right.
    ("10.0.0.2", "1.1.1.1, 198.51.100.1", TRUSTED, "198.51.100.1"),
    ("10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.3, 10.9.9.9", TRUSTED, "198.51.100.1"),
    ("10.0.0.2", "spoofed-garbage, 198.51.100.1, 10.0.0.3", TRUSTED, "198.51.100.1"),
    # Every hop trusted: the left-most one is the best we know.
    ("10.0.0.2", "10.0.0.5, 10.0.0.3", TRUSTED, "10.0.0.5"),
    # Garbage between trusted hops: trust nothing left of it.
    ("10.0.0.2", "198.51.100.1, garbage, 10.0.0.3", TRUSTED, "10.0.0.3"),
    ("10.0.0.2", "198.51.100.1,,10.0.0.3", TRUSTED, "10.0.0.3"),
    ("10.0.0.2", "garbage", TRUSTED, "10.0.0.2"),
    # IPv6, and IPv4 seen through an IPv6 socket.
    ("fd00::1", "2001:db8::7", TRUSTED, "2001:db8::7"),
    ("::ffff:10.0.0.2", "198.51.100.1", TRUSTED, "198.51.100.1"),
    ("::ffff:203.0.113.9", "198.51.100.1", TRUSTED, "203.0.113.9"),
    ("10.0.0.2", "::ffff:198.51.100.1", TRUSTED, "198.51.100.1"),
    ("2001:db8::1", "198.51.100.1", TRUSTED, "2001:db8::1"),
    # A peer that is not an address (a unix socket, a test client name) is passed through.
    (None, "198.51.100.1", TRUSTED, None),
    ("testclient", "198.51.100.1", TRUSTED, "testclient"),
])
def test_client_ip(peer, forwarded, trusted, expected) -> None:
    assert client_ip(peer, forwarded, trusted) == expected


def test_client_ip_normalises_addresses() -> None:
    assert client_ip("2001:DB8:0:0::1", None, ()) == "2001:db8::1"
    assert client_ip("10.0.0.2", "2001:DB8::0007", TRUSTED) == "2001:db8::7"


# --- API: the address the checks see ----------------------------------------------------------------
PROXY = "10.20.30.40"


@pytest.fixture
def proxied_app(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """An app whose settings trust 10.0.0.0/8 as proxies, made the way `make run` makes it."""
    from api.app import create_app

    monkeypatch.setenv("KEYMETA_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.250")
    get_settings.cache_clear()
    current = get_settings()
    assert current.trusted_proxies == ["10.0.0.0/8", "192.0.2.250/32"]
    clients: dict[str, TestClient] = {}

    def at(peer: str) -> TestClient:
        if peer not in clients:
            clients[peer] = TestClient(create_app(current), client=(peer, 50000))
            clients[peer].__enter__()
        return clients[peer]

    yield at
    for test_client in clients.values():
        test_client.__exit__(None, None, None)


def _post(client: TestClient, world, forwarded: str | list[str] | None):
    headers: list[tuple[str, str]] = []
    if isinstance(forwarded, str):
        headers = [("X-Forwarded-For", forwarded)]
    elif forwarded:
        headers = [("X-Forwarded-For", value) for value in forwarded]
    return client.post(ENDPOINT, data=world.form(), headers=headers)


def _source_ip_recorded(before) -> str | None:
    [event] = new_outbox_events(before)
    return event.payload["source_ip"]


def test_untrusted_peer_cannot_claim_an_allowed_address(proxied_app, settings) -> None:
    world = make_world(allowed_cidrs=["198.51.100.0/24"])
    before = counts()
    assert_envelope(_post(proxied_app(CLIENT_IP), world, "198.51.100.7"), 103)
    assert _source_ip_recorded(before) == CLIENT_IP


def test_untrusted_peer_cannot_dodge_the_block_list(proxied_app, settings) -> None:
    ip = unique_ip()
    with unit_of_work() as session:
        block_rules.add_block_rule(session, ip=ip)
    assert_envelope(_post(proxied_app(ip), make_world(), "198.51.100.7"), 150)


def test_untrusted_peer_cannot_get_someone_blocked(proxied_app, settings) -> None:
    blocked = unique_ip()
    with unit_of_work() as session:
        block_rules.add_block_rule(session, ip=blocked)
    assert_envelope(_post(proxied_app(CLIENT_IP), make_world(), blocked), 453)


def test_trusted_proxy_forwards_an_allowed_client(proxied_app, settings) -> None:
    world = make_world(allowed_cidrs=["198.51.100.0/24"])
    before = counts()
    assert_envelope(_post(proxied_app(PROXY), world, "198.51.100.7"), 453)
    assert _source_ip_recorded(before) == "198.51.100.7"


def test_trusted_proxy_forwards_a_client_outside_the_allowed_cidr(proxied_app, settings) -> None:
    world = make_world(allowed_cidrs=[f"{PROXY}/32", "198.51.100.0/24"])
    assert_envelope(_post(proxied_app(PROXY), world, "192.0.2.1"), 103)


def test_trusted_proxy_forwards_a_blocked_client(proxied_app, settings) -> None:
    ip = unique_ip()
    with unit_of_work() as session:
        block_rules.add_block_rule(session, ip=ip)
    assert_envelope(_post(proxied_app(PROXY), make_world(), ip), 150)
    assert_envelope(_post(proxied_app(PROXY), make_world(), f"198.51.100.9, {ip}, 10.1.1.1"), 150)


def test_client_prepended_hops_are_not_believed(proxied_app, settings) -> None:
    # The client wrote "198.51.100.7" itself; the proxy appended the real address.
    world = make_world(allowed_cidrs=["198.51.100.0/24"])
    assert_envelope(_post(proxied_app(PROXY), world, "198.51.100.7, 192.0.2.1"), 103)


def test_several_forwarded_for_headers_are_one_list(proxied_app, settings) -> None:
    # A proxy may append its own header line instead of extending the client's: the client's line
    # comes first and must not be read as the whole truth.
    world = make_world(allowed_cidrs=["198.51.100.0/24"])
    before = counts()
    assert_envelope(_post(proxied_app(PROXY), world, ["198.51.100.7", "192.0.2.1"]), 103)
    assert _source_ip_recorded(before) == "192.0.2.1"


def test_proxy_chain_through_two_trusted_hops(proxied_app, settings) -> None:
    world = make_world(allowed_cidrs=["198.51.100.0/24"])
    before = counts()
    assert_envelope(_post(proxied_app("192.0.2.250"), world, "203.0.113.77, 198.51.100.7, 10.0.0.9"), 453)
    assert _source_ip_recorded(before) == "198.51.100.7"


def test_without_trusted_proxies_the_header_is_ignored(shared_client, settings) -> None:
    world = make_world(allowed_cidrs=["198.51.100.0/24"])
    before = counts()
    assert_envelope(_post(shared_client, world, "198.51.100.7"), 103)
    assert _source_ip_recorded(before) == CLIENT_IP


@pytest.mark.parametrize(("hop", "expected"), [
    ("198.51.100.7:5678", "198.51.100.7"),
    ("[2001:db8::7]:443", "2001:db8::7"),
    ("2001:db8::7", "2001:db8::7"),
])
def test_forwarded_hops_with_ports_are_understood(hop: str, expected: str) -> None:
    from api.client_ip import client_ip
    from domain.access.checks import parse_network

    assert client_ip("10.0.0.1", f"{hop}, 10.0.0.2", (parse_network("10.0.0.0/8"),)) == expected
