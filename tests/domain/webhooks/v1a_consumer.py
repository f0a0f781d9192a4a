"""A webhook consumer's check of ``v1a`` (Ed25519) signatures, written from the Standard Webhooks specification
with ``cryptography`` alone and none of keymeta's signing code: what docs/events.md tells consumers to do.

``standardwebhooks`` (the Python library) verifies ``v1`` only, so tests verify ``v1a`` with this.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_SECONDS = 300


class Unverified(ValueError):
    pass


def verify(public_key: str, body: bytes, headers: Mapping[str, str], now: int) -> None:
    """Passes when one ``v1a`` signature of the header verifies with the ``whpk_`` key and the timestamp is within
    five minutes of ``now``; raises Unverified otherwise."""
    if not public_key.startswith("whpk_"):
        raise Unverified("not a whpk_ public key")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        raise Unverified("timestamp outside the tolerance")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for signature in headers["webhook-signature"].split(" "):
        version, _, encoded = signature.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(encoded), signed)
            return
        except (InvalidSignature, ValueError):
            continue
    raise Unverified("no matching v1a signature")
