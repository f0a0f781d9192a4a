"""Signed tokens of the console: JSON claims and an HMAC-SHA256 under a key derived per purpose (pure, no I/O).

Each purpose (sessions, portal links) gets its own key from the master key, so a token of one kind never
opens another. Claims are signed, not encrypted: they name ids and times, never a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

MAX_TOKEN_LENGTH = 2048


class BadToken(ValueError):
    """Malformed, tampered with, or signed under another key."""


def derive_key(master_key: bytes, purpose: str) -> bytes:
    return hmac.new(master_key, b"keymeta console " + purpose.encode("ascii"), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mac(key: bytes, text: str) -> str:
    return _b64(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest())


def sign(key: bytes, claims: dict[str, Any]) -> str:
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{body}.{mac(key, body)}"


def unsign(key: bytes, token: str) -> dict[str, Any]:
    """The claims of a token this key signed; BadToken for anything else."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise BadToken("malformed token")
    body, signature = token.split(".")
    if not hmac.compare_digest(mac(key, body), signature):
        raise BadToken("bad signature")
    try:
        claims = json.loads(_unb64(body))
    except (binascii.Error, ValueError) as exc:
        raise BadToken("malformed claims") from exc
    if not isinstance(claims, dict):
        raise BadToken("malformed claims")
    return claims


def int_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadToken(f"claim {name!r} is missing")
    return value
