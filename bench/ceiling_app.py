"""The ceiling is the least any create-meta server must do: read, parse, sign and send; no database, no framework.

``uvicorn --factory bench.ceiling_app:create_app`` serves a bare ASGI app. A POST to the create-meta path
reads the body and parses it with the real endpoint's own functions (``api.parsing``), builds the 453
response object and signs its envelope with RSA-2048 (``domain.signing``), as ``api/create_meta.py`` does;
no router, middleware or response class stands between uvicorn and that work, so create-meta's req/s over
this app's is the share of the attainable throughput it reaches. ``GET /healthz`` answers 200 for
``bench.server``'s readiness check. The signing key is read from the PEM file named by
``KEYMETA_BENCH_CEILING_KEY_FILE`` (so the bench can verify the signatures), else generated.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.parsing import BodyRejected, parse_create_meta, read_body
from domain.license_meta.codes import Code
from domain.signing.envelope import encode_response, php_json, response_object
from domain.signing.rsa_keys import Signer, generate_private_key, load_private_pem, thumbprint

KEY_FILE_ENV = "KEYMETA_BENCH_CEILING_KEY_FILE"
PATH = "/api/v1/create-license-key-meta"
HEALTH_PATH = "/healthz"


def load_signer() -> Signer:
    key_file = os.environ.get(KEY_FILE_ENV)
    private_key = load_private_pem(Path(key_file).read_bytes()) if key_file else generate_private_key(2048)
    return Signer(kid=thumbprint(private_key.public_key()), private_key=private_key)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode("ascii")), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app() -> ASGIApp:
    signer = load_signer()
    kid_header = (b"x-signature-key-id", signer.kid.encode("ascii"))
    json_header = (b"content-type", b"application/json")
    meta_ids = itertools.count(1)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == PATH and method == "POST":
            request = Request(scope, receive)
            try:
                await parse_create_meta(request, await read_body(request))  # the real endpoint's parsing cost
            except BodyRejected as rejected:
                await _send(send, rejected.status, rejected.reason.encode(), [])
                return
            response = response_object(int(Code.META_CREATED), Code.META_CREATED.message,
                                       {"meta_id": next(meta_ids)})
            encoded = encode_response(response)
            envelope = {"response": response, "response_base64": encoded, "private_key_used": "global",
                        "signature": signer.sign(encoded)}
            await _send(send, 200, php_json(envelope).encode("ascii"), [json_header, kid_header])
        elif path == HEALTH_PATH and method == "GET":
            await _send(send, 200, b'{"status":"ok"}', [json_header])
        else:
            await _send(send, 404, b"not found", [])

    return app
