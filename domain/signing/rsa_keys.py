"""RSA keys, RFC 7638 thumbprints, and signing of envelope text."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {"e": b64url_uint(numbers.e), "kty": "RSA", "n": b64url_uint(numbers.n)}


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace."""
    canonical = json.dumps(public_jwk(public_key), separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def generate_private_key(key_size: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def private_pem(private_key: rsa.RSAPrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(public_key: rsa.RSAPublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_private_pem(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_pem(pem: str | bytes) -> rsa.RSAPublicKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


@dataclass(frozen=True)
class Signer:
    kid: str
    private_key: rsa.RSAPrivateKey

    def sign(self, response_base64: str) -> str:
        signature = self.private_key.sign(
            response_base64.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return base64.b64encode(signature).decode("ascii")


def signature_valid(public_key: rsa.RSAPublicKey, response_base64: str, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, response_base64.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except Exception:  # noqa: BLE001 - any failure to decode or verify means "not valid"
        return False
    return True


def jwk_for(public_key: rsa.RSAPublicKey, kid: str) -> dict[str, Any]:
    return {**public_jwk(public_key), "kid": kid, "use": "sig", "alg": "RS256"}
