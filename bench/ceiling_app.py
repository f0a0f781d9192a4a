"""The ceiling: the same POST path, form parsing and RSA-2048 signed envelope, but no database.

``uvicorn --factory bench.ceiling_app:create_app``. The signing key is read from the PEM file named
by ``KEYMETA_BENCH_CEILING_KEY_FILE`` (so the bench can verify the signatures), else generated.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import Response

from domain.signing.envelope import encode_response, php_json, response_object
from domain.signing.rsa_keys import Signer, generate_private_key, load_private_pem, thumbprint

KEY_FILE_ENV = "KEYMETA_BENCH_CEILING_KEY_FILE"
PATH = "/api/v1/create-license-key-meta"


def load_signer() -> Signer:
    key_file = os.environ.get(KEY_FILE_ENV)
    private_key = load_private_pem(Path(key_file).read_bytes()) if key_file else generate_private_key(2048)
    return Signer(kid=thumbprint(private_key.public_key()), private_key=private_key)


def create_app() -> FastAPI:
    signer = load_signer()
    meta_ids = itertools.count(1)
    app = FastAPI(title="keymeta ceiling")

    @app.post(PATH)
    async def create_license_key_meta(request: Request) -> Response:
        await request.form()  # parsed like the real endpoint's body, then unused
        response = response_object(453, "Metadata created", {"meta_id": next(meta_ids)})
        encoded = encode_response(response)
        envelope = {"response": response, "response_base64": encoded, "private_key_used": "global",
                    "signature": signer.sign(encoded)}
        return Response(content=php_json(envelope), media_type="application/json",
                        headers={"X-Signature-Key-Id": signer.kid})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
