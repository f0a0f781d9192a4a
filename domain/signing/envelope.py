"""The signed response envelope, byte-compatible with the GetKeyManager v1 API, and what its signature covers.

``response_base64`` is the base64 of the response object as PHP's default ``json_encode`` writes it
(compact, ``/`` escaped, non-ASCII as ``\\uXXXX``). ``signature`` is RSA PKCS#1 v1.5 / SHA-256 over the text
a :class:`SignatureScheme` names: the ASCII of ``response_base64`` (the documented scheme), or the envelope
without ``signature`` as the vendor's SDKs rebuild it (``envelope``, see :func:`envelope_signed_text`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class SignatureScheme(StrEnum):
    """What ``signature`` covers; chosen per API key (``keymeta api-keys create --signature-scheme``)."""

    RESPONSE_BASE64 = "response_base64"  # the documented wire format: the ASCII text of response_base64
    ENVELOPE = "envelope"  # the vendor's SDKs: the envelope without signature, re-encoded (see below)


DEFAULT_SCHEME = SignatureScheme.RESPONSE_BASE64


def php_json(value: Any) -> str:
    # json.dumps with ensure_ascii already writes lowercase \uXXXX (surrogate pairs included) as PHP does.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def php_json_unescaped(value: Any) -> str:
    """PHP's ``json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE)``: compact, ``/`` and
    non-ASCII left as they are, except U+2028 and U+2029, which PHP still escapes without
    ``JSON_UNESCAPED_LINE_TERMINATORS`` (JavaScript's ``JSON.stringify`` does not: see docs/api.md)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def response_object(code: int, message: str, extras: dict[str, Any] | None = None,
                    timestamp: int | None = None) -> dict[str, Any]:
    """``code``, ``message``, then extras in the given order, ``timestamp`` last.

    An extra that is an empty object is left out: PHP decodes ``{}`` as an empty array and re-encodes it as
    ``[]``, so an envelope carrying one could never verify in the ``envelope`` scheme.
    """
    obj: dict[str, Any] = {"code": code, "message": message}
    for name, value in (extras or {}).items():
        if isinstance(value, Mapping) and not value:
            continue
        obj[name] = value
    obj["timestamp"] = int(time.time()) if timestamp is None else timestamp
    return obj


def encode_response(response: dict[str, Any]) -> str:
    return base64.b64encode(php_json(response).encode("ascii")).decode("ascii")


def envelope_signed_text(response: dict[str, Any], response_base64: str, private_key_used: str) -> str:
    """What the vendor's SDKs verify: ``json_decode`` the body, drop ``signature``, ``json_encode`` the rest with
    ``JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE`` (PHP 3.x), or ``JSON.stringify`` it (JavaScript 2.x;
    the same bytes unless the response holds U+2028 or U+2029)."""
    return php_json_unescaped(
        {"response": response, "response_base64": response_base64, "private_key_used": private_key_used})


def signed_bytes(scheme: SignatureScheme, response: dict[str, Any], response_base64: str,
                 private_key_used: str) -> bytes:
    """The exact bytes ``signature`` is computed over in ``scheme``."""
    if scheme is SignatureScheme.ENVELOPE:
        return envelope_signed_text(response, response_base64, private_key_used).encode("utf-8")
    return response_base64.encode("ascii")
