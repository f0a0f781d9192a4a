"""The SSRF rules on addresses, and ``vet`` choosing (pinning) one address."""

from __future__ import annotations

import ipaddress

import pytest

from domain.webhooks import ssrf

REFUSED = [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "169.254.1.1",
    "100.64.0.1", "100.127.255.254", "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255",
    "240.0.0.1", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "fec0::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::7f00:1", "::808:808",  # IPv4-compatible (deprecated)
    "2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::",  # 6to4 of loopback, private, metadata
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1",  # NAT64
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("text", REFUSED)
def test_internal_addresses_are_refused(text: str) -> None:
    assert ssrf.refusal_reason(ipaddress.ip_address(text), ()) is not None


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_pass(text: str) -> None:
    assert ssrf.refusal_reason(ipaddress.ip_address(text), ()) is None


def test_reasons_name_the_category() -> None:
    reason = ssrf.refusal_reason
    assert "loopback" in (reason(ipaddress.ip_address("127.0.0.1"), ()) or "")
    assert "CGNAT" in (reason(ipaddress.ip_address("100.64.0.1"), ()) or "")
    assert "metadata" in (reason(ipaddress.ip_address("fd00:ec2::254"), ()) or "")
    assert "embeds 10.0.0.1" in (reason(ipaddress.ip_address("64:ff9b::a00:1"), ()) or "")


def test_allowed_cidrs_open_internal_ranges_but_never_metadata() -> None:
    allowed = ssrf.parse_allowed(["127.0.0.0/8", "169.254.0.0/16", "fd00::/8"])
    assert ssrf.refusal_reason(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert ssrf.refusal_reason(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert ssrf.refusal_reason(ipaddress.ip_address("169.254.1.1"), allowed) is None
    assert ssrf.refusal_reason(ipaddress.ip_address("169.254.169.254"), allowed) is not None
    assert ssrf.refusal_reason(ipaddress.ip_address("fd00:ec2::254"), allowed) is not None
    assert ssrf.refusal_reason(ipaddress.ip_address("10.0.0.1"), allowed) is not None


def _answers(mapping: dict[str, list[str]]) -> ssrf.Resolver:
    def resolve(host: str, port: int, timeout: float) -> list[ssrf.Address]:
        return [ipaddress.ip_address(a) for a in mapping[host]]
    return resolve


def test_vet_pins_the_first_acceptable_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssrf, "resolve", _answers({"mixed.test": ["10.0.0.1", "8.8.4.4"]}))
    vetted = ssrf.vet("https", "mixed.test", 443, (), 1.0)
    assert str(vetted.address) == "8.8.4.4" and vetted.host == "mixed.test"


def test_vet_refuses_when_no_address_is_acceptable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssrf, "resolve", _answers({"inside.test": ["10.0.0.1", "::1"]}))
    with pytest.raises(ssrf.AddressRefused, match=r"10\.0\.0\.1 is private"):
        ssrf.vet("https", "inside.test", 443, (), 1.0)


def test_plain_http_only_to_allowed_cidrs() -> None:
    with pytest.raises(ssrf.AddressRefused, match="plain http"):
        ssrf.vet("http", "8.8.8.8", 80, (), 1.0)
    assert str(ssrf.vet("https", "8.8.8.8", 443, (), 1.0).address) == "8.8.8.8"
    allowed = ssrf.parse_allowed(["127.0.0.0/8"])
    assert str(ssrf.vet("http", "127.0.0.1", 80, allowed, 1.0).address) == "127.0.0.1"


def test_unresolvable_host_is_a_refusal() -> None:
    with pytest.raises(ssrf.AddressRefused, match="cannot resolve"):
        ssrf.system_resolve("no-such-host.invalid", 443, 5.0)
