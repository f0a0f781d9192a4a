"""GET /api/v1/event-types: the event catalog (docs/event-types.md), public and cacheable.

The catalog is fixed at build time, so the body and its ETag are computed once; it changes only with a
deploy, hence a day of client caching and ``If-None-Match`` revalidation. It names the signature schemes and
where an endpoint's ``v1a`` public key is published, never the keys themselves: keys are per endpoint, change
at rotation, and an anonymous, day-cached document must not list which endpoints exist.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from domain.events.catalog import catalog_document
from domain.webhooks.signatures import PUBLIC_KEY_PREFIX, SECRET_PREFIX, SignatureScheme

router = APIRouter()

PATH = "/api/v1/event-types"
CACHE_CONTROL = "public, max-age=86400"

# Every signature covers f"{webhook-id}.{webhook-timestamp}.{body}" (Standard Webhooks); an endpoint uses one scheme.
SIGNATURE_SCHEMES = [
    {"id": SignatureScheme.V1.value, "algorithm": "HMAC-SHA256",
     "key": f"the endpoint's {SECRET_PREFIX} secret, shown to its owner once (at creation and at each rotation)"},
    {"id": SignatureScheme.V1A.value, "algorithm": "Ed25519",
     "key": f"the endpoint's {PUBLIC_KEY_PREFIX} public key: `public_key` of GET /api/v1/webhook-endpoints/{{id}}, "
            "`keymeta webhooks list`, and the endpoint's consumer portal"},
]
_BODY = json.dumps({**catalog_document(), "signature_schemes": SIGNATURE_SCHEMES}, separators=(",", ":"),
                   ensure_ascii=False).encode("utf-8")
_ETAG = '"' + hashlib.sha256(_BODY).hexdigest()[:32] + '"'
_HEADERS = {"Cache-Control": CACHE_CONTROL, "ETag": _ETAG}

_CACHE_HEADERS: dict[str, Any] = {"Cache-Control": {"schema": {"type": "string"}},
                                  "ETag": {"schema": {"type": "string"}}}
_CATALOG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_types"],
    "properties": {"event_types": {"type": "array", "items": {
        "type": "object",
        "required": ["name", "description", "schema", "example"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "description": "what a webhook endpoint subscribes to"},
            "description": {"type": "string"},
            "schema": {"type": "object", "description": "JSON Schema (draft 2020-12) of the whole webhook body"},
            "example": {"type": "object", "description": "a webhook body that validates against `schema`"},
        },
    }}, "signature_schemes": {"type": "array", "items": {
        "type": "object",
        "required": ["id", "algorithm", "key"],
        "properties": {
            "id": {"type": "string", "enum": [scheme.value for scheme in SignatureScheme],
                   "description": "the prefix of a signature in `webhook-signature` (`v1,…`, `v1a,…`)"},
            "algorithm": {"type": "string"},
            "key": {"type": "string", "description": "what a consumer verifies with, and where it is published"},
        },
    }}},
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every event type a webhook endpoint can subscribe to.", "headers": _CACHE_HEADERS,
          "content": {"application/json": {"schema": _CATALOG_SCHEMA}}},
    304: {"description": "Not modified (`If-None-Match` matched the ETag).", "headers": _CACHE_HEADERS},
}


def _matches(if_none_match: str) -> bool:
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return _ETAG in tags or "*" in tags


@router.get(PATH, responses=RESPONSES, response_class=Response, summary="Event Types", operation_id="event_types")
async def event_types(request: Request) -> Response:
    """Every webhook event type with its description, the JSON Schema (draft 2020-12) of its whole payload
    (`{"type", "timestamp", "data"}`) and an example payload."""
    if _matches(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=_HEADERS)
    return Response(content=_BODY, media_type="application/json", headers=_HEADERS)
