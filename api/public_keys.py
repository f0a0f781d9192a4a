"""GET /api/v1/public-keys and GET /.well-known/jwks.json (docs/api.md, "Public keys").

Read fresh from the database on every request (one small query); clients cache them for
``max-age = min(3600, overlap // 2)`` seconds, which keeps the overlap at least twice the max-age.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from domain.platform.logs import get_logger
from domain.signing.public_keys import (
    MalformedPublicKey,
    PublishedKey,
    cache_max_age,
    encode_document,
    jwks_document,
    listing_document,
    published_keys_async,
)

router = APIRouter()
log = get_logger("keymeta.api.public_keys")


async def _serve(request: Request, build: Callable[[list[PublishedKey]], dict[str, Any]]) -> Response:
    state = request.app.state
    async with state.engine.connect() as conn:
        keys = await published_keys_async(conn)
    try:
        body, etag = encode_document(build(keys))
    except MalformedPublicKey as exc:
        log.error("public_keys.malformed", error=str(exc), path=request.url.path)
        return JSONResponse({"error": str(exc)}, status_code=500, headers={"Cache-Control": "no-store"})
    headers = {"Cache-Control": f"public, max-age={cache_max_age(state.settings.key_overlap_seconds)}",
               "ETag": etag}
    if etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type="application/json", headers=headers)


@router.get("/api/v1/public-keys")
async def public_keys(request: Request) -> Response:
    """Every key a client may need: kid, scope, state, PEM and lifecycle times."""
    return await _serve(request, listing_document)


@router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> Response:
    """The same keys (revoked ones excepted) as a JSON Web Key Set."""
    return await _serve(request, jwks_document)
