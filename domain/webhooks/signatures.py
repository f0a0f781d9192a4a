"""Endpoint secrets (``whsec_`` + base64 of random bytes) and the ``webhook-signature`` header.

Signature: ``v1,<base64 HMAC-SHA256(secret, f"{msg_id}.{timestamp}.{body}")>``; several, space-separated,
while a rotated-out secret is still inside its overlap window (Standard Webhooks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


class SecretError(ValueError):
    pass


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; refuses anything malformed or of the wrong size."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretError("a webhook secret is base64 after its prefix") from exc
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise SecretError(f"a webhook secret holds {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES} bytes (got {len(raw)})")
    return raw


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(signing_secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret, newest first, space-separated."""
    if not signing_secrets:
        raise SecretError("no secret to sign with")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in signing_secrets)
