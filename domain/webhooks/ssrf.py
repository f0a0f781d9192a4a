"""Which addresses a webhook may reach (SSRF guard), judged on resolved IPs, never on host names.

Refused unless inside ``KEYMETA_WEBHOOK_ALLOWED_CIDRS``: loopback, private, link-local, CGNAT (100.64/10),
multicast, unspecified, reserved, documentation/benchmark and other non-global ranges, in IPv4 and IPv6,
including IPv4 addresses hidden inside IPv6 (IPv4-mapped, IPv4-compatible, 6to4, NAT64). Cloud metadata
addresses are refused even when an allowed CIDR covers them. Plain ``http`` is only for allowed CIDRs.

``vet()`` returns one checked address; the transport connects to exactly that address (see
``domain.webhooks.transport``), so a second DNS answer (rebinding) can never be used.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: frozenset[Address] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean ...
    "169.254.170.2",  # AWS ECS task metadata
    "100.100.100.200",  # Alibaba Cloud
    "fd00:ec2::254",  # AWS IMDS over IPv6
))
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

Resolver = Callable[[str, int, float], list[Address]]


class AddressRefused(ValueError):
    """The destination is not reachable under the SSRF rules; the message says why."""


def parse_allowed(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _category(address: Address) -> str | None:
    """Why a bare address is not a public destination, or None."""
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT:
        return "shared address space (CGNAT 100.64.0.0/10)"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def in_networks(address: Address, networks: tuple[Network, ...]) -> bool:
    address = _unmapped(address)
    return any(address.version == n.version and address in n for n in networks)


def refusal_reason(address: Address, allowed: tuple[Network, ...]) -> str | None:
    """None when a webhook may connect to ``address``; else a short reason."""
    address = _unmapped(address)
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if address in METADATA_ADDRESSES or (embedded is not None and embedded in METADATA_ADDRESSES):
        return f"{address} is a cloud metadata address"
    if in_networks(address, allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL_USE:
            return f"{address} is a local-use NAT64 address"
        if address in IPV4_COMPATIBLE and int(address) > 1:
            return f"{address} is a deprecated IPv4-compatible IPv6 address"
        if embedded is not None:
            inner = _category(embedded)
            if inner is not None:
                return f"{address} embeds {embedded}, which is {inner}"
            if address in NAT64_WELL_KNOWN:
                return None  # 64:ff9b::/96 is "reserved" as a block, but leads to a public IPv4 address
    category = _category(address)
    return f"{address} is {category}" if category is not None else None


_lookups = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook-dns")


def system_resolve(host: str, port: int, timeout: float) -> list[Address]:
    """Every address of ``host`` (getaddrinfo, bounded by ``timeout``), in the resolver's order."""
    future = _lookups.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        raise AddressRefused(f"resolving {host} timed out") from exc
    except OSError as exc:
        raise AddressRefused(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


# Tests replace this to simulate DNS answers (rebinding, private answers) without a DNS server.
resolve: Resolver = system_resolve


def literal_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Vetted:
    scheme: str
    host: str
    port: int
    address: Address


def vet(scheme: str, host: str, port: int, allowed: tuple[Network, ...], timeout: float) -> Vetted:
    """The first resolved address that passes; raises AddressRefused with the first refusal otherwise."""
    literal = literal_address(host)
    addresses = [literal] if literal is not None else resolve(host, port, timeout)
    if not addresses:
        raise AddressRefused(f"{host} has no address")
    reasons: list[str] = []
    for address in addresses:
        reason = refusal_reason(address, allowed)
        if reason is None and scheme == "http" and not in_networks(address, allowed):
            reason = f"plain http is only allowed to KEYMETA_WEBHOOK_ALLOWED_CIDRS ({address} is not); use https"
        if reason is None:
            return Vetted(scheme=scheme, host=host, port=port, address=address)
        reasons.append(reason)
    raise AddressRefused(f"refused {host}: {reasons[0]}")
