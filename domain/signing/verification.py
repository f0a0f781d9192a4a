"""Client-side verification of a signed envelope: the helper a Python client of keymeta would use.

    import httpx
    from domain.signing.verification import key_set_from_document, verify_envelope

    keys = key_set_from_document(httpx.get(f"{base}/api/v1/public-keys").json())
    kid = verify_envelope(response.content, keys.pems, response.headers.get("X-Signature-Key-Id"),
                          states=keys.states)          # raises EnvelopeInvalid (RevokedKeyUsed if revoked)

``public_keys`` maps kid -> PEM (as served by ``GET /api/v1/public-keys``); any list of PEMs works too.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from domain.signing.rsa_keys import load_public_pem, public_pem, signature_valid, thumbprint


class EnvelopeInvalid(ValueError):
    pass


class RevokedKeyUsed(EnvelopeInvalid):
    """The signature is genuine, but the key that made it has been revoked: do not trust it."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"signed by revoked key {kid}")
        self.kid = kid


class KeySetInvalid(ValueError):
    """Key material that cannot be used (the message names the key)."""


def _public_key(kid: str, pem: str) -> rsa.RSAPublicKey:
    try:
        return load_public_pem(pem)
    except (ValueError, TypeError) as exc:
        raise KeySetInvalid(f"public key {kid}: not a readable RSA public key PEM") from exc


def verify_envelope(envelope: bytes | str | Mapping[str, Any],
                    public_keys: Mapping[str, str] | Iterable[str],
                    preferred_kid: str | None = None, *,
                    states: Mapping[str, str] | None = None) -> str:
    """Check the signature over ``response_base64`` and that it encodes ``response``.

    Returns the kid (or the index, for a bare list of PEMs) of the key that verified it.
    ``preferred_kid`` (the ``X-Signature-Key-Id`` header) is tried first when given.
    ``states`` (kid -> state, as published) makes a signature by a ``revoked`` key fail with
    ``RevokedKeyUsed``. A key that is not a readable PEM raises ``KeySetInvalid`` naming it.
    """
    body: Mapping[str, Any]
    if isinstance(envelope, bytes | str):
        try:
            body = json.loads(envelope)
        except ValueError as exc:
            raise EnvelopeInvalid("envelope is not JSON") from exc
    else:
        body = envelope
    if not isinstance(body, Mapping):
        raise EnvelopeInvalid("envelope is not a JSON object")
    encoded, signature = body.get("response_base64"), body.get("signature")
    if not isinstance(encoded, str) or not isinstance(signature, str):
        raise EnvelopeInvalid("envelope lacks response_base64 or signature")
    try:
        decoded = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeInvalid("response_base64 is not base64 of JSON") from exc
    if "response" in body and decoded != body["response"]:
        raise EnvelopeInvalid("response does not match response_base64")

    keys = dict(public_keys) if isinstance(public_keys, Mapping) else {
        str(i): pem for i, pem in enumerate(public_keys)
    }
    order = sorted(keys, key=lambda kid: kid != preferred_kid)
    for kid in order:
        if signature_valid(_public_key(kid, keys[kid]), encoded, signature):
            if states is not None and states.get(kid) == "revoked":
                raise RevokedKeyUsed(kid)
            return kid
    raise EnvelopeInvalid("no known key verifies this signature")


@dataclass
class KeySet:
    """Public keys by kid, with their published state and scope when the source says so."""

    pems: dict[str, str] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    scopes: dict[str, str | int] = field(default_factory=dict)


def _b64url_int(kid: str, name: str, value: Any) -> int:
    if not isinstance(value, str):
        raise KeySetInvalid(f"JWK {kid}: {name} is missing")
    try:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")
    except (binascii.Error, ValueError) as exc:
        raise KeySetInvalid(f"JWK {kid}: {name} is not base64url") from exc


def key_set_from_document(document: Any) -> KeySet:
    """From ``GET /api/v1/public-keys`` (entries with ``pem``) or a JWKS (entries with ``n``/``e``)."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise KeySetInvalid("not a key set: expected an object with a 'keys' list")
    keys = KeySet()
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
            raise KeySetInvalid(f"key #{position} has no kid")
        kid = entry["kid"]
        if isinstance(entry.get("pem"), str):
            pem = entry["pem"]
            _public_key(kid, pem)
        elif entry.get("kty") == "RSA":
            n, e = _b64url_int(kid, "n", entry.get("n")), _b64url_int(kid, "e", entry.get("e"))
            try:
                pem = public_pem(rsa.RSAPublicNumbers(e, n).public_key())
            except ValueError as exc:
                raise KeySetInvalid(f"JWK {kid}: not a valid RSA public key") from exc
        else:
            raise KeySetInvalid(f"key {kid}: neither a PEM nor an RSA JWK")
        keys.pems[kid] = pem
        if isinstance(entry.get("state"), str):
            keys.states[kid] = entry["state"]
        if isinstance(entry.get("scope"), str | int):
            keys.scopes[kid] = entry["scope"]
    return keys


def key_set_from_pem(pem: str) -> KeySet:
    """A single PEM public key; its kid is its RFC 7638 thumbprint."""
    public_key = _public_key("from file", pem)
    return KeySet(pems={thumbprint(public_key): pem})
