"""Outcome -> signed envelope (docs/api.md, "The signed envelope"), as an HTTP response, in the caller's scheme.

Refusals repeat: a flood of bad keys gets the same code, message and extras within one second. Their signatures
are kept in a small LRU keyed by the signing key and the exact bytes signed, so each distinct refusal envelope
costs one RSA signature per second; success answers (a meta_id or meta of their own) are signed every time.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.responses import Response

from domain.license_meta.codes import AnyCode
from domain.license_meta.rules import STEP_CODES
from domain.signing.envelope import (
    DEFAULT_SCHEME,
    SignatureScheme,
    encode_response,
    php_json,
    response_object,
    signed_bytes,
)
from domain.signing.keys import GLOBAL_SCOPE, SignerStore
from domain.signing.rsa_keys import Signer

SCHEME_HEADER = "X-Signature-Scheme"
SIGNATURE_CACHE_ENTRIES = 256
# A refusal envelope is a few hundred bytes; anything far larger is not worth keeping.
SIGNATURE_CACHE_MAX_BYTES = 4096
SUCCESS_CODES = frozenset(int(codes.success) for codes in STEP_CODES.values())

Sign = Callable[[Signer, bytes], str]
Clock = Callable[[], float]  # Unix seconds: the envelope's timestamp


class SigningUnavailable(RuntimeError):
    pass


def rsa_signature(signer: Signer, data: bytes) -> str:
    signature = signer.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


class SignatureCache:
    """Signatures by (kid, signed bytes), the least recently used dropped first. RSA PKCS#1 v1.5 is
    deterministic, so a kept signature is the one signing again would produce."""

    def __init__(self, max_entries: int = SIGNATURE_CACHE_ENTRIES) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, bytes], str] = OrderedDict()

    def signature(self, signer: Signer, data: bytes, sign: Sign) -> str:
        key = (signer.kid, data)
        kept = self._entries.get(key)
        if kept is not None:
            self._entries.move_to_end(key)
            return kept
        signature = sign(signer, data)
        if self._max_entries > 0 and len(data) <= SIGNATURE_CACHE_MAX_BYTES:
            self._entries[key] = signature
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return signature


class EnvelopeSigner:
    def __init__(self, store: SignerStore, conn_factory: Any, *, clock: Clock = time.time,
                 sign: Sign = rsa_signature, cache_entries: int = SIGNATURE_CACHE_ENTRIES) -> None:
        self._store = store
        self._conn_factory = conn_factory
        self._clock = clock
        self._sign = sign
        self._refusals = SignatureCache(cache_entries)

    async def respond(self, code: AnyCode, scope: str, *, http_status: int | None = None,
                      extras: dict[str, Any] | None = None,
                      scheme: SignatureScheme = DEFAULT_SCHEME) -> Response:
        """The envelope signed by ``scope``'s active key (else the global one) over what ``scheme`` names.

        The body stays ASCII in every scheme (``/`` and non-ASCII escaped as the vendor writes them), so a
        client that decodes it chunk by chunk cannot split a character."""
        now = time.monotonic()
        signer = None
        if scope != GLOBAL_SCOPE:
            signer = await self._store.active(self._conn_factory, scope, now)
        used = "product" if signer is not None else "global"
        if signer is None:
            signer = await self._store.active(self._conn_factory, GLOBAL_SCOPE, now)
        if signer is None:
            raise SigningUnavailable("no active global signing key: run 'keymeta bootstrap'")
        return self._envelope(signer, used, code, http_status, extras, scheme)

    def respond_without_database(self, code: AnyCode, *, http_status: int | None = None,
                                 extras: dict[str, Any] | None = None,
                                 scheme: SignatureScheme = DEFAULT_SCHEME) -> Response:
        """The envelope signed by the global key this process last read, never asking the database: the answer
        while it cannot be reached. ``SigningUnavailable`` when this process has never read a global key."""
        signer = self._store.last_known(GLOBAL_SCOPE)
        if signer is None:
            raise SigningUnavailable("no global signing key was ever loaded by this process")
        return self._envelope(signer, "global", code, http_status, extras, scheme)

    async def global_kid(self) -> str | None:
        """The kid of the key that signs a global answer now (read from the database once the cache TTL ends)."""
        signer = await self._store.active(self._conn_factory, GLOBAL_SCOPE, time.monotonic())
        return signer.kid if signer is not None else None

    def held_global_kid(self) -> str | None:
        """The kid :meth:`respond_without_database` signs with, if any."""
        signer = self._store.last_known(GLOBAL_SCOPE)
        return signer.kid if signer is not None else None

    def _envelope(self, signer: Signer, used: str, code: AnyCode, http_status: int | None,
                  extras: dict[str, Any] | None, scheme: SignatureScheme) -> Response:
        response = response_object(int(code), code.message, extras, timestamp=int(self._clock()))
        encoded = encode_response(response)
        data = signed_bytes(scheme, response, encoded, used)
        if int(code) in SUCCESS_CODES:
            signature = self._sign(signer, data)
        else:
            signature = self._refusals.signature(signer, data, self._sign)
        body = {"response": response, "response_base64": encoded, "private_key_used": used, "signature": signature}
        return Response(
            content=php_json(body),
            status_code=http_status or code.http_status,
            media_type="application/json",
            headers={"X-Signature-Key-Id": signer.kid, SCHEME_HEADER: scheme.value},
        )
