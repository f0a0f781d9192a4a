"""Signing keys at rest: creation, sealing under the master key, and the active signer per scope."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from domain.platform.models import utcnow
from domain.signing.master_key import seal, unseal
from domain.signing.models import SigningKey, SigningKeyState
from domain.signing.rsa_keys import (
    Signer,
    generate_private_key,
    load_private_pem,
    private_pem,
    public_pem,
    thumbprint,
)

GLOBAL_SCOPE = "global"

AsyncConnectionFactory = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


def product_scope(product_id: int) -> str:
    return f"product:{product_id}"


def create_signing_key(session: Session, master_key: bytes, scope: str, *,
                       state: SigningKeyState = SigningKeyState.ACTIVE, key_size: int = 2048,
                       now: dt.datetime | None = None) -> SigningKey:
    """Generate an RSA key and store it; the caller's transaction decides whether it exists."""
    now = now or utcnow()
    private_key = generate_private_key(key_size)
    kid = thumbprint(private_key.public_key())
    row = SigningKey(
        kid=kid,
        scope=scope,
        state=state,
        key_size=key_size,
        public_pem=public_pem(private_key.public_key()),
        private_key_encrypted=seal(master_key, private_pem(private_key), kid),
        created_at=now,
        activated_at=now if state == SigningKeyState.ACTIVE else None,
    )
    session.add(row)
    session.flush()
    return row


def active_key(session: Session, scope: str) -> SigningKey | None:
    return session.scalars(
        select(SigningKey).where(SigningKey.scope == scope, SigningKey.state == SigningKeyState.ACTIVE)
    ).first()


class SigningKeyError(ValueError):
    """A stored signing key is unusable (its private half is not a readable RSA key)."""


def signer_from_row(master_key: bytes, kid: str, sealed: bytes) -> Signer:
    """Open a sealed private key. Raises ``MasterKeyError`` (wrong master key) or ``SigningKeyError``."""
    plaintext = unseal(master_key, sealed, kid)
    try:
        return Signer(kid=kid, private_key=load_private_pem(plaintext))
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {kid}: the stored private key is not a readable RSA key") from exc


class SignerStore:
    """Per-process view of the active key of each scope, refreshed after ``ttl`` seconds.

    Keys are parsed once per kid (RSA parsing is slow); a refresh that finds the same kid is cheap.
    """

    def __init__(self, master_key: bytes, ttl_seconds: float) -> None:
        self._master_key = master_key
        self._ttl = ttl_seconds
        self._by_kid: dict[str, Signer] = {}
        self._active: dict[str, tuple[float, Signer | None]] = {}

    def last_known(self, scope: str) -> Signer | None:
        """The active key of ``scope`` as last read, however stale, without touching the database: what signs while
        the database cannot be reached. A change since that read (rotation, revocation) shows once it answers again."""
        hit = self._active.get(scope)
        return hit[1] if hit is not None else None

    async def active(self, conn_factory: AsyncConnectionFactory, scope: str, now: float) -> Signer | None:
        hit = self._active.get(scope)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with conn_factory() as conn:
            row = (await conn.execute(
                select(SigningKey.kid, SigningKey.private_key_encrypted)
                .where(SigningKey.scope == scope, SigningKey.state == SigningKeyState.ACTIVE)
            )).first()
        signer = None
        if row is not None and row.private_key_encrypted is not None:
            signer = self._by_kid.get(row.kid) or signer_from_row(self._master_key, row.kid,
                                                                   row.private_key_encrypted)
            self._by_kid[row.kid] = signer
        previous = hit[1] if hit is not None else None
        self._active[scope] = (now + self._ttl, signer)
        if previous is not None and previous is not signer:
            # The scope rotated: forget parsed private keys no scope signs with any more (a retired key's
            # private half is destroyed in the database; it should not linger in this process either).
            live = {entry[1].kid for entry in self._active.values() if entry[1] is not None}
            self._by_kid = {kid: known for kid, known in self._by_kid.items() if kid in live}
        return signer
