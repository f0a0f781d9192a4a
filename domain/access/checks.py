"""Who may call: API keys by digest, capabilities, allowed CIDRs, and the block list (checks 1–5 of docs/api.md)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.access.models import ApiKey, BlockRule
from domain.license_meta.codes import Code
from domain.signing.envelope import SignatureScheme

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def api_key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def parse_network(text: str) -> Network:
    """A CIDR or a bare address; raises ValueError with a readable message."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"malformed CIDR {text!r}") from exc


def parse_address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket must still match IPv4 rules.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def address_in(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


@dataclass(frozen=True)
class ApiKeyRecord:
    id: int
    active: bool
    expires_at: dt.datetime | None
    capabilities: frozenset[str]
    allowed_networks: tuple[Network, ...]
    management: bool = False  # may omit the identifier: steps 6 and 12 do not apply to its identifier-less calls
    signature_scheme: SignatureScheme = SignatureScheme.RESPONSE_BASE64


@dataclass(frozen=True)
class BlockList:
    networks: tuple[Network, ...]
    identifiers: frozenset[str]

    def blocks(self, address: Address | None, identifier: str | None) -> bool:
        if address_in(address, self.networks):
            return True
        return identifier is not None and normalize_identifier(identifier) in self.identifiers


def normalize_identifier(identifier: str) -> str:
    return identifier.strip().casefold()


def check_access(key: ApiKeyRecord | None, capability: str, address: Address | None,
                 identifier: str | None, blocklist: BlockList, now: dt.datetime) -> Code | None:
    """Checks 1–5 of docs/api.md, in order; ``None`` means the caller may proceed."""
    if key is None:
        return Code.INVALID_API_KEY
    if not key.active or (key.expires_at is not None and key.expires_at <= now):
        return Code.INACTIVE_API_KEY
    if capability not in key.capabilities:
        return Code.MISSING_CAPABILITY
    if key.allowed_networks and not address_in(address, key.allowed_networks):
        return Code.IP_NOT_ALLOWED
    if blocklist.blocks(address, identifier):
        return Code.ACCESS_DENIED
    return None


async def load_api_key(conn: AsyncConnection, digest: str) -> ApiKeyRecord | None:
    return _api_key_record((await conn.execute(select(ApiKey).where(ApiKey.digest == digest))).first())


async def load_api_key_by_id(conn: AsyncConnection, key_id: int) -> ApiKeyRecord | None:
    return _api_key_record((await conn.execute(select(ApiKey).where(ApiKey.id == key_id))).first())


def _api_key_record(row: Any) -> ApiKeyRecord | None:
    if row is None:
        return None
    return ApiKeyRecord(
        id=row.id,
        active=row.active,
        expires_at=row.expires_at,
        capabilities=frozenset(row.capabilities or ()),
        allowed_networks=tuple(parse_network(c) for c in (row.allowed_cidrs or ())),
        management=bool(row.management),
        signature_scheme=SignatureScheme(row.signature_scheme),
    )


async def load_blocklist(conn: AsyncConnection) -> BlockList:
    rows = (await conn.execute(select(BlockRule.kind, BlockRule.value))).all()
    return BlockList(
        networks=tuple(parse_network(value) for kind, value in rows if kind == "ip"),
        identifiers=frozenset(normalize_identifier(value) for kind, value in rows if kind == "identifier"),
    )
