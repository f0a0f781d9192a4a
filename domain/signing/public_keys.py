"""What clients need to verify signatures (docs/signing-keys.md): the public-keys listing and the JWKS.

Every key a client may meet is published: ``pending`` (before it signs, so caches have it in time),
``active``, ``retired`` (its signatures must keep verifying) and ``revoked`` (listed, marked revoked, so a
client can tell "distrust" from "unknown"; left out of the JWKS, whose consumers cannot see states).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from domain.signing.keys import GLOBAL_SCOPE
from domain.signing.models import SigningKey, SigningKeyState
from domain.signing.rsa_keys import jwk_for, load_public_pem, thumbprint

MAX_AGE_CAP_SECONDS = 3600


class MalformedPublicKey(ValueError):
    """A stored public key cannot be published as it is; the message names its kid."""


@dataclass(frozen=True)
class PublishedKey:
    kid: str
    scope: str  # "global" or "product:<id>" as stored
    state: str
    key_size: int
    public_pem: str
    created_at: dt.datetime
    activated_at: dt.datetime | None
    retired_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def client_scope(self) -> str | int:
        """``global`` or the product id (docs/signing-keys.md)."""
        if self.scope == GLOBAL_SCOPE:
            return GLOBAL_SCOPE
        return int(self.scope.split(":", 1)[1])


# Never the private half: the published columns only.
_PUBLISHED = select(SigningKey.kid, SigningKey.scope, SigningKey.state, SigningKey.key_size, SigningKey.public_pem,
                    SigningKey.created_at, SigningKey.activated_at, SigningKey.retired_at,
                    SigningKey.revoked_at).order_by(SigningKey.id)


def _from_row(row: Any) -> PublishedKey:
    return PublishedKey(kid=row.kid, scope=row.scope, state=row.state, key_size=row.key_size,
                        public_pem=row.public_pem, created_at=row.created_at, activated_at=row.activated_at,
                        retired_at=row.retired_at, revoked_at=row.revoked_at)


def published_keys(session: Session) -> list[PublishedKey]:
    return [_from_row(row) for row in session.execute(_PUBLISHED)]


async def published_keys_async(conn: AsyncConnection) -> list[PublishedKey]:
    # A Core select on the async connection: the TypeDecorator still hands back aware UTC datetimes.
    return [_from_row(row) for row in await conn.execute(_PUBLISHED)]


def checked_public_key(key: PublishedKey) -> Any:
    """The parsed RSA public key; raises ``MalformedPublicKey`` naming the kid when it is not one, or when
    the kid is not its RFC 7638 thumbprint."""
    try:
        public_key = load_public_pem(key.public_pem)
    except (ValueError, TypeError) as exc:
        raise MalformedPublicKey(f"signing key {key.kid}: the stored public key is not a readable RSA PEM") from exc
    if thumbprint(public_key) != key.kid:
        raise MalformedPublicKey(f"signing key {key.kid}: the stored public key does not match its kid")
    return public_key


def _time(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def listing_document(keys: list[PublishedKey]) -> dict[str, Any]:
    """``GET /api/v1/public-keys``."""
    entries = []
    for key in keys:
        checked_public_key(key)
        entries.append({
            "kid": key.kid,
            "scope": key.client_scope,
            "state": key.state,
            "alg": "RS256",
            "key_size": key.key_size,
            "pem": key.public_pem,
            "created_at": _time(key.created_at),
            "activated_at": _time(key.activated_at),
            "retired_at": _time(key.retired_at),
            "revoked_at": _time(key.revoked_at),
        })
    return {"keys": entries}


def jwks_document(keys: list[PublishedKey]) -> dict[str, Any]:
    """``GET /.well-known/jwks.json``: every key that may still verify (revoked keys are left out)."""
    return {"keys": [jwk_for(checked_public_key(key), key.kid) for key in keys if key.state != SigningKeyState.REVOKED]}


def cache_max_age(overlap_seconds: int) -> int:
    """How long clients may cache the key sets: at most half the overlap, so a pending key is in every
    client's cache before it signs anything (overlap ≥ 2 × max-age), and never more than an hour."""
    return max(0, min(MAX_AGE_CAP_SECONDS, overlap_seconds // 2))


def encode_document(document: dict[str, Any]) -> tuple[bytes, str]:
    """JSON bytes and a strong ETag over them."""
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
