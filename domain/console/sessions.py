"""Operator sessions: which API key signed in, idle and absolute expiry, and the CSRF token bound to each
session (pure; times are passed in so tests control the clock).

A session holds the API key's id, never the key: every request re-checks that key (active, not expired,
``console`` capability), so revoking the key ends its sessions at once.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass, replace

from domain.console.tokens import BadToken, derive_key, int_claim, mac, sign, unsign

PURPOSE = "session"
DEFAULT_IDLE_SECONDS = 30 * 60
DEFAULT_MAX_AGE_SECONDS = 12 * 3600


class SessionExpired(ValueError):
    """Idle too long, or older than the absolute limit: sign in again."""


@dataclass(frozen=True)
class ConsoleSession:
    api_key_id: int
    nonce: str  # binds the CSRF token to this sign-in
    started_at: int  # epoch seconds
    seen_at: int


def _epoch(now: dt.datetime) -> int:
    return int(now.timestamp())


def session_key(master_key: bytes) -> bytes:
    return derive_key(master_key, PURPOSE)


def start(api_key_id: int, now: dt.datetime) -> ConsoleSession:
    return ConsoleSession(api_key_id, secrets.token_urlsafe(16), _epoch(now), _epoch(now))


def touch(session: ConsoleSession, now: dt.datetime) -> ConsoleSession:
    return replace(session, seen_at=_epoch(now))


def encode(key: bytes, session: ConsoleSession) -> str:
    return sign(key, {"k": session.api_key_id, "n": session.nonce, "s": session.started_at, "t": session.seen_at})


def decode(key: bytes, token: str, now: dt.datetime, *, idle_seconds: int = DEFAULT_IDLE_SECONDS,
           max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS) -> ConsoleSession:
    """The session in a cookie; BadToken when forged, SessionExpired when idle or too old."""
    claims = unsign(key, token)
    nonce = claims.get("n")
    if not isinstance(nonce, str) or not nonce:
        raise BadToken("claim 'n' is missing")
    session = ConsoleSession(int_claim(claims, "k"), nonce, int_claim(claims, "s"), int_claim(claims, "t"))
    current = _epoch(now)
    if current - session.seen_at > idle_seconds or current - session.started_at > max_age_seconds:
        raise SessionExpired("the session has expired")
    return session


def csrf_token(key: bytes, session: ConsoleSession) -> str:
    return mac(key, f"csrf:{session.api_key_id}:{session.nonce}")


def csrf_valid(key: bytes, session: ConsoleSession, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(key, session), token or "")


def actor_label(api_key_id: int) -> str:
    """How the audit log names an operator acting through the console."""
    return f"console:{api_key_id}"


SIGNED_IN = "console.signed_in"
SIGNED_OUT = "console.signed_out"
