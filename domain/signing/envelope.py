"""The signed response envelope, byte-compatible with the GetKeyManager v1 API.

``response_base64`` is the base64 of the response object as PHP's default ``json_encode`` writes it
(compact, ``/`` escaped, non-ASCII as ``\\uXXXX``); ``signature`` is RSA PKCS#1 v1.5 / SHA-256 over the
ASCII text of ``response_base64``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any


def php_json(value: Any) -> str:
    # json.dumps with ensure_ascii already writes lowercase \uXXXX (surrogate pairs included) as PHP does.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/")


def response_object(code: int, message: str, extras: dict[str, Any] | None = None,
                    timestamp: int | None = None) -> dict[str, Any]:
    """``code``, ``message``, then extras in the given order, ``timestamp`` last."""
    obj: dict[str, Any] = {"code": code, "message": message}
    if extras:
        obj.update(extras)
    obj["timestamp"] = int(time.time()) if timestamp is None else timestamp
    return obj


def encode_response(response: dict[str, Any]) -> str:
    return base64.b64encode(php_json(response).encode("ascii")).decode("ascii")
