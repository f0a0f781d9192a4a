"""API keys: issued once in clear, stored as SHA-256 digests."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.access.checks import api_key_digest, parse_network
from domain.access.models import ApiKey
from domain.license_meta.codes import CONSOLE_CAPABILITY, CREATE_META_CAPABILITY, META_CAPABILITIES
from domain.signing.envelope import DEFAULT_SCHEME, SignatureScheme

MANAGE_WEBHOOKS_CAPABILITY = "manage-webhooks"
CAPABILITIES = (*META_CAPABILITIES, MANAGE_WEBHOOKS_CAPABILITY, CONSOLE_CAPABILITY)
KEY_PREFIX = "km_"


class ApiKeyError(ValueError):
    pass


@dataclass(frozen=True)
class IssuedKey:
    row: ApiKey
    secret: str  # shown once, never stored


def create_api_key(session: Session, *, name: str, capabilities: list[str] | None = None,
                   allowed_cidrs: list[str] | None = None, expires_at: dt.datetime | None = None,
                   management: bool = False, signature_scheme: SignatureScheme | str = DEFAULT_SCHEME) -> IssuedKey:
    """A new key; ``management`` lets it omit the identifier on the metadata endpoints, ``signature_scheme``
    names what its answers' signatures cover (docs/api.md, "Clients of the vendor's SDKs")."""
    try:
        scheme = SignatureScheme(signature_scheme)
    except ValueError as exc:
        known = ", ".join(s.value for s in SignatureScheme)
        raise ApiKeyError(f"unknown signature scheme {signature_scheme!r} (known: {known})") from exc
    capabilities = list(dict.fromkeys(capabilities or [CREATE_META_CAPABILITY]))
    unknown = [c for c in capabilities if c not in CAPABILITIES]
    if unknown:
        raise ApiKeyError(f"unknown capability {unknown[0]!r} (known: {', '.join(CAPABILITIES)})")
    networks = []
    for cidr in allowed_cidrs or []:
        try:
            networks.append(str(parse_network(cidr)))
        except ValueError as exc:
            raise ApiKeyError(str(exc)) from exc
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, digest=api_key_digest(secret), prefix=secret[:8], active=True,
                 expires_at=expires_at, capabilities=capabilities, allowed_cidrs=networks,
                 management=management, signature_scheme=scheme)
    session.add(row)
    session.flush()
    return IssuedKey(row=row, secret=secret)


def deactivate_api_key(session: Session, key_id: int) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise ApiKeyError(f"no API key with id {key_id}")
    row.active = False
    session.flush()
    return row


def active_keys_named(session: Session, name: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.name == name, ApiKey.active.is_(True))))
