"""Outcome -> signed envelope (docs/api.md, "The signed envelope"), as an HTTP response, in the caller's scheme."""

from __future__ import annotations

import base64
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.responses import Response

from domain.license_meta.codes import AnyCode
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


class SigningUnavailable(RuntimeError):
    pass


def _sign(signer: Signer, data: bytes) -> str:
    signature = signer.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


class EnvelopeSigner:
    def __init__(self, store: SignerStore, conn_factory: Any) -> None:
        self._store = store
        self._conn_factory = conn_factory

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
        response = response_object(int(code), code.message, extras)
        encoded = encode_response(response)
        body = {
            "response": response,
            "response_base64": encoded,
            "private_key_used": used,
            "signature": _sign(signer, signed_bytes(scheme, response, encoded, used)),
        }
        return Response(
            content=php_json(body),
            status_code=http_status or code.http_status,
            media_type="application/json",
            headers={"X-Signature-Key-Id": signer.kid, SCHEME_HEADER: scheme.value},
        )
