"""Outcome -> signed envelope (docs/api.md, "The signed envelope"), as an HTTP response."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import Response

from domain.license_meta.codes import AnyCode
from domain.signing.envelope import encode_response, php_json, response_object
from domain.signing.keys import GLOBAL_SCOPE, SignerStore


class SigningUnavailable(RuntimeError):
    pass


class EnvelopeSigner:
    def __init__(self, store: SignerStore, conn_factory: Any) -> None:
        self._store = store
        self._conn_factory = conn_factory

    async def respond(self, code: AnyCode, scope: str, *, http_status: int | None = None,
                      extras: dict[str, Any] | None = None) -> Response:
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
            "signature": signer.sign(encoded),
        }
        return Response(
            content=php_json(body),
            status_code=http_status or code.http_status,
            media_type="application/json",
            headers={"X-Signature-Key-Id": signer.kid},
        )
