"""Endpoint signing keys and the ``webhook-signature`` header (Standard Webhooks), pure, no I/O.

Two schemes, told apart by the key's prefix as the specification serialises them:
- ``v1``: ``whsec_`` + base64 of a random secret shared with the consumer;
  ``v1,<base64 HMAC-SHA256(secret, f"{msg_id}.{timestamp}.{body}")>``.
- ``v1a``: ``whsk_`` + base64 of an Ed25519 private key (its 32-byte seed), which never leaves the service; the
  consumer verifies with ``whpk_`` + base64 of the 32-byte public key;
  ``v1a,<base64 Ed25519 signature of f"{msg_id}.{timestamp}.{body}">``.
Several signatures, space-separated, while a rotated-out key is still inside its overlap window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
ED25519_KEY_BYTES = 32  # a seed (private half) and a public key are both 32 bytes


class SignatureScheme(StrEnum):
    """How an endpoint's deliveries are signed, stored as this string value."""

    V1 = "v1"  # HMAC-SHA256 with a shared whsec_ secret
    V1A = "v1a"  # Ed25519: the consumer holds only the whpk_ public key


class SecretError(ValueError):
    pass


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def generate_signing_key() -> str:
    """A new ``whsk_`` Ed25519 private key (the seed, as the specification and its libraries serialise it)."""
    return SIGNING_KEY_PREFIX + base64.b64encode(secrets.token_bytes(ED25519_KEY_BYTES)).decode("ascii")


def generate_key(scheme: SignatureScheme) -> str:
    return generate_signing_key() if scheme == SignatureScheme.V1A else generate_secret()


def _decode(text: str, prefix: str, what: str) -> bytes:
    if not text.startswith(prefix):
        raise SecretError(f"a {what} starts with {prefix!r}")
    try:
        return base64.b64decode(text[len(prefix):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretError(f"a {what} is base64 after its prefix") from exc


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; refuses anything malformed or of the wrong size."""
    raw = _decode(secret, SECRET_PREFIX, "webhook secret")
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise SecretError(f"a webhook secret holds {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES} bytes (got {len(raw)})")
    return raw


def private_key(signing_key: str) -> Ed25519PrivateKey:
    """The Ed25519 key inside a ``whsk_`` key; refuses anything malformed or of the wrong size."""
    raw = _decode(signing_key, SIGNING_KEY_PREFIX, "webhook signing key")
    if len(raw) != ED25519_KEY_BYTES:
        raise SecretError(f"a webhook signing key holds {ED25519_KEY_BYTES} bytes (got {len(raw)})")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key(signing_key: str) -> str:
    """The ``whpk_`` public key a consumer verifies ``v1a`` signatures with."""
    raw = private_key(signing_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def scheme_of(key: str) -> SignatureScheme:
    """The scheme a stored key signs with, told by its prefix."""
    if key.startswith(SIGNING_KEY_PREFIX):
        return SignatureScheme.V1A
    if key.startswith(SECRET_PREFIX):
        return SignatureScheme.V1
    raise SecretError(f"a webhook key starts with {SECRET_PREFIX!r} or {SIGNING_KEY_PREFIX!r}")


def sign(key: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,…`` for a ``whsec_`` secret or ``v1a,…`` for a ``whsk_`` key."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    if scheme_of(key) == SignatureScheme.V1A:
        return "v1a," + base64.b64encode(private_key(key).sign(to_sign)).decode("ascii")
    digest = hmac.new(secret_key(key), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(signing_keys: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per key, newest first, space-separated."""
    if not signing_keys:
        raise SecretError("no secret to sign with")
    return " ".join(sign(key, msg_id, timestamp, body) for key in signing_keys)
