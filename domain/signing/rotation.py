"""The signing-key lifecycle: a small, idempotent state machine run by beat and by operators.

Per scope (``global``, and ``product:<id>`` for each product with its own key)::

    (created) ──► pending ──(overlap elapsed)──► active ──(next key activated)──► retired
                     │                             │                               │
                     └──────────────► revoked ◄────┴───────────────────────────────┘

- ``pending`` is published at once (public-keys, JWKS) but signs nothing yet; after
  ``KEYMETA_KEY_OVERLAP_SECONDS`` it is promoted, and the previous active key becomes ``retired``: its
  private half is destroyed (``private_key_encrypted`` set to NULL), its public half stays published so
  every signature it made still verifies.
- ``revoked`` is the emergency exit: the private half is destroyed and clients are told to distrust the
  key; revoking the active key rotates its scope at once.

Every function here takes the caller's session, runs under one lock (a transaction-scoped PostgreSQL
advisory lock), only flushes, and writes one outbox event per transition in the same transaction. The
caller commits.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from domain.catalog.models import Product
from domain.events.outbox import (
    SIGNING_KEY_ACTIVATED,
    SIGNING_KEY_CREATED,
    SIGNING_KEY_RETIRED,
    SIGNING_KEY_REVOKED,
    add_event,
)
from domain.platform.models import utcnow
from domain.platform.settings import Settings, get_settings
from domain.signing.keys import GLOBAL_SCOPE, create_signing_key, product_scope, signer_from_row
from domain.signing.master_key import load_master_key
from domain.signing.models import SigningKey, SigningKeyState

# The states whose key can still sign, now or after the overlap.
SIGNING_STATES = (SigningKeyState.ACTIVE, SigningKeyState.PENDING)

KEY_ROTATION_LOCK_ID = 7_305_002  # pg_advisory_xact_lock key of the signing-key state machine
_PRODUCT_SCOPE = re.compile(r"product:([0-9]{1,18})")


class KeyRotationError(ValueError):
    """A request that names something unknown or impossible; nothing was changed."""


@dataclass(frozen=True)
class Transition:
    kid: str
    scope: str
    from_state: str | None  # None: the key was created by this transition
    to_state: str
    event_type: str
    event_id: int


@dataclass
class Outcome:
    transitions: list[Transition] = field(default_factory=list)

    @property
    def event_ids(self) -> list[int]:
        return [t.event_id for t in self.transitions]


def scope_product_id(scope: str) -> int | None:
    match = _PRODUCT_SCOPE.fullmatch(scope)
    return int(match.group(1)) if match else None


def parse_scope(session: Session, value: str) -> str:
    """``global`` or ``product:<id>`` of an existing product that has its own signing key."""
    cleaned = value.strip()
    if cleaned == GLOBAL_SCOPE:
        return GLOBAL_SCOPE
    product_id = scope_product_id(cleaned)
    if product_id is None:
        raise KeyRotationError(f"unknown scope {value!r} (use global or product:ID)")
    product = session.get(Product, product_id)
    if product is None:
        raise KeyRotationError(f"no product with id {product_id}")
    if not product.own_signing_key:
        raise KeyRotationError(f"product {product_id} has no signing key of its own (it signs with the global key)")
    return product_scope(product_id)


def lock(session: Session) -> None:
    """Serialize every lifecycle change, held until the caller's transaction ends."""
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": KEY_ROTATION_LOCK_ID})


def _scope_keys(session: Session, scope: str) -> list[SigningKey]:
    # populate_existing: rows read before the lock was taken must not shadow what is committed now.
    return list(session.scalars(
        select(SigningKey).where(SigningKey.scope == scope).order_by(SigningKey.id)
        .execution_options(populate_existing=True)))


def _pending(keys: list[SigningKey]) -> list[SigningKey]:
    return sorted((k for k in keys if k.state == SigningKeyState.PENDING), key=lambda k: (k.created_at, k.id))


def _active(keys: list[SigningKey]) -> SigningKey | None:
    return next((k for k in keys if k.state == SigningKeyState.ACTIVE), None)


class _Machine:
    """One run: the session, when, who, and the master key (loaded and checked once)."""

    def __init__(self, session: Session, settings: Settings, now: dt.datetime | None, actor: str,
                 master_key: bytes | None) -> None:
        self.session = session
        self.settings = settings
        self.now = now or utcnow()
        self.actor = actor
        self._master_key = master_key
        self.outcome = Outcome()

    @property
    def master_key(self) -> bytes:
        if self._master_key is None:
            self._master_key = load_master_key(self.settings)  # MasterKeyError: missing or malformed
        return self._master_key

    def check_master_key(self, exclude_id: int | None = None) -> None:
        """The master key must open the keys in use; otherwise a new key would be sealed with a key that
        opens nothing else and the API would fail on it. Raises ``MasterKeyError`` naming the kid."""
        query = (select(SigningKey.kid, SigningKey.private_key_encrypted)
                 .where(SigningKey.state.in_(SIGNING_STATES), SigningKey.private_key_encrypted.is_not(None))
                 .order_by((SigningKey.scope != GLOBAL_SCOPE), SigningKey.id).limit(1))
        if exclude_id is not None:
            query = query.where(SigningKey.id != exclude_id)
        row = self.session.execute(query).first()
        if row is not None:
            signer_from_row(self.master_key, row.kid, row.private_key_encrypted)
        else:
            _ = self.master_key

    def emit(self, event_type: str, row: SigningKey, from_state: str | None, reason: str) -> None:
        detail: dict[str, Any] = {"kid": row.kid, "scope": row.scope, "from_state": from_state,
                                  "to_state": row.state, "reason": reason}
        payload: dict[str, Any] = {**detail, "product_id": scope_product_id(row.scope), "key_size": row.key_size,
                                   "actor": self.actor, "detail": detail}
        event_id = add_event(self.session, event_type, payload, subject_id=row.id, now=self.now)
        self.outcome.transitions.append(Transition(row.kid, row.scope, from_state, row.state, event_type, event_id))

    def create_pending(self, scope: str, reason: str) -> SigningKey:
        row = create_signing_key(self.session, self.master_key, scope, state=SigningKeyState.PENDING,
                                 key_size=self.settings.key_size, now=self.now)
        self.emit(SIGNING_KEY_CREATED, row, None, reason)
        return row

    def promote(self, pending: SigningKey, reason: str) -> None:
        if pending.private_key_encrypted is None:
            raise KeyRotationError(f"signing key {pending.kid} has no private key to sign with")
        signer_from_row(self.master_key, pending.kid, pending.private_key_encrypted)  # it must open
        current = _active(_scope_keys(self.session, pending.scope))
        if current is not None:
            current.state = SigningKeyState.RETIRED
            current.private_key_encrypted = None
            current.retired_at = self.now
            self.session.flush()  # before the promotion: one active key per scope (unique index)
            self.emit(SIGNING_KEY_RETIRED, current, SigningKeyState.ACTIVE, reason)
        pending.state = SigningKeyState.ACTIVE
        pending.activated_at = self.now
        self.session.flush()
        self.emit(SIGNING_KEY_ACTIVATED, pending, SigningKeyState.PENDING, reason)

    def step(self, scope: str) -> bool:
        """At most one transition in ``scope``; False when the scope is where it should be."""
        keys = _scope_keys(self.session, scope)
        pending = _pending(keys)
        overlap = dt.timedelta(seconds=self.settings.key_overlap_seconds)
        if pending:
            if pending[0].created_at + overlap <= self.now:
                self.promote(pending[0], "overlap elapsed")
                return True
            return False
        active = _active(keys)
        if active is None:
            return False  # the first key of a scope comes from bootstrap / product creation
        since = active.activated_at or active.created_at
        if since + dt.timedelta(days=self.settings.key_rotation_days) <= self.now:
            self.create_pending(scope, f"active key older than {self.settings.key_rotation_days} days")
            return True
        return False


def _scopes_in_use(session: Session) -> list[str]:
    return list(session.scalars(
        select(SigningKey.scope).where(SigningKey.state.in_(SIGNING_STATES)).distinct()
        .order_by(SigningKey.scope)))


def advance(session: Session, settings: Settings | None = None, now: dt.datetime | None = None, *,
            scopes: list[str] | None = None, master_key: bytes | None = None, actor: str = "beat") -> Outcome:
    """Move every scope (or the given ones) as far as it should be at ``now``. Idempotent.

    Creates a pending key where the active one is older than ``key_rotation_days``; promotes a pending key
    whose overlap has elapsed (with an overlap of 0, both happen in the same run).
    """
    machine = _Machine(session, settings or get_settings(), now, actor, master_key)
    lock(session)
    machine.check_master_key()
    for scope in (scopes if scopes is not None else _scopes_in_use(session)):
        for _ in range(3):  # create, then promote at once when the overlap is 0; never loops further
            if not machine.step(scope):
                break
    return machine.outcome


def rotate(session: Session, scope: str, now: dt.datetime | None = None, immediate: bool = False, *,
           settings: Settings | None = None, master_key: bytes | None = None, actor: str = "operator") -> Outcome:
    """Start a rotation of ``scope`` now: a pending key, promoted by ``advance`` after the overlap.

    Idempotent while a rotation is under way (an existing pending key is reused, not duplicated).
    ``immediate`` (emergency) promotes it at once, skipping the overlap.
    """
    machine = _Machine(session, settings or get_settings(), now, actor, master_key)
    lock(session)
    scope = parse_scope(session, scope)
    machine.check_master_key()
    pending = _pending(_scope_keys(session, scope))
    target = pending[0] if pending else machine.create_pending(scope, "rotation requested")
    if immediate:
        machine.promote(target, "immediate rotation requested")
    return machine.outcome


def revoke(session: Session, kid: str, now: dt.datetime | None = None, *, settings: Settings | None = None,
           master_key: bytes | None = None, actor: str = "operator") -> Outcome:
    """Mark a key revoked (private half destroyed). Revoking the active key rotates its scope at once:
    a pending key is promoted if there is one, else a new key is created and activated. Idempotent."""
    machine = _Machine(session, settings or get_settings(), now, actor, master_key)
    lock(session)
    row = session.scalars(select(SigningKey).where(SigningKey.kid == kid.strip())
                          .execution_options(populate_existing=True)).first()
    if row is None:
        raise KeyRotationError(f"no signing key with kid {kid.strip()!r}")
    if row.state == SigningKeyState.REVOKED:
        return machine.outcome
    was = row.state
    if was == SigningKeyState.ACTIVE:
        # A replacement must be possible before anything changes (checked on another key: the revoked
        # one may be revoked precisely because it is damaged).
        machine.check_master_key(exclude_id=row.id)
    row.state = SigningKeyState.REVOKED
    row.private_key_encrypted = None
    row.revoked_at = machine.now
    session.flush()
    machine.emit(SIGNING_KEY_REVOKED, row, was, "revoked by operator")
    if was == SigningKeyState.ACTIVE:
        pending = _pending(_scope_keys(session, row.scope))
        target = pending[0] if pending else machine.create_pending(row.scope, f"replaces revoked key {row.kid}")
        machine.promote(target, f"active key {row.kid} revoked")
    return machine.outcome


@dataclass(frozen=True)
class ScopeState:
    scope: str
    active: SigningKey | None
    pending: list[SigningKey]


def scope_state(session: Session, scope: str) -> ScopeState:
    keys = _scope_keys(session, scope)
    return ScopeState(scope=scope, active=_active(keys), pending=_pending(keys))
