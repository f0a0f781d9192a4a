"""What a key and a request are (pure, no I/O): the header's rules, the request fingerprint, which outcomes are kept."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

MAX_KEY_LENGTH = 255
# Statuses a client may retry with the same key: a conflict (4090 itself), a rate limit, a server failure.
RETRYABLE_STATUSES = frozenset({409, 429})


def key_problem(header_values: Sequence[str]) -> str | None:
    """Why the ``Idempotency-Key`` header values are unusable, or None: one value of 1–255 printable ASCII."""
    if len(header_values) != 1:
        return "send one Idempotency-Key header, not several"
    value = header_values[0]
    if not value:
        return "must not be empty"
    if len(value) > MAX_KEY_LENGTH:
        return f"must be at most {MAX_KEY_LENGTH} characters"
    if not all(" " <= char <= "~" for char in value):
        return "must be printable ASCII characters only"
    return None


def fingerprint(endpoint: str, values: Mapping[str, object]) -> str:
    """sha256 of the endpoint and its parameters, in a canonical JSON form.

    The API key is left out (it is the key's scope already) and so are absent parameters, which the endpoints
    treat like missing ones: the same request reads the same however its parameters were sent.
    """
    params = {name: value for name, value in values.items() if name != "api_key" and value is not None}
    canonical = json.dumps([endpoint, params], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def is_decided(http_status: int, code: int | None) -> bool:
    """A decided outcome (any envelope code of §1/§5, 901 included) is kept for replay; a 5xx, 429 or 409,
    or an answer that is no envelope, is not, so the client may retry it with the same key."""
    return code is not None and http_status < 500 and http_status not in RETRYABLE_STATUSES
