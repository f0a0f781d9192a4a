"""Client-side verification of a signed envelope: the helper a Python client of keymeta would use.

    from domain.verify import verify_envelope
    kid = verify_envelope(body_bytes, public_keys)   # raises EnvelopeInvalid

``public_keys`` maps kid -> PEM (as served by ``GET /api/v1/public-keys``); any list of PEMs works too.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

from domain.signing import load_public_pem, signature_valid


class EnvelopeInvalid(ValueError):
    pass


def verify_envelope(envelope: bytes | str | Mapping[str, Any],
                    public_keys: Mapping[str, str] | Iterable[str],
                    preferred_kid: str | None = None) -> str:
    """Check the signature over ``response_base64`` and that it encodes ``response``.

    Returns the kid (or the index, for a bare list of PEMs) of the key that verified it.
    ``preferred_kid`` (the ``X-Signature-Key-Id`` header) is tried first when given.
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
        if signature_valid(load_public_pem(keys[kid]), encoded, signature):
            return kid
    raise EnvelopeInvalid("no known key verifies this signature")
