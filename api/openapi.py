"""The published OpenAPI document (``/openapi.json``), made to tell the truth.

FastAPI derives a schema from signatures; three things it cannot see are declared here:
- the metadata family (``/api/v1/<name>-license-key-meta``) is a bare ASGI endpoint (``api.license_meta``), not
  FastAPI routes: their request encodings, api-key locations and signed responses come from
  :func:`meta_operation`, and their signed 405 for other methods from operations of their own (the ``/v1/<name>``
  aliases answer the same and are not listed twice);
- the admin API (webhook endpoints) authenticates in a dependency that reads headers itself: its security
  requirement and its 401/403/404/409 answers are added by :func:`install`;
- the public-key documents are built by hand: their response schemas, ETag/304 and Cache-Control too.
Only declarations change here; no route behaves differently.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from domain.license_meta.codes import Code, ExtensionCode, Operation
from domain.webhooks.models import DELIVERY_STATUSES

CREATE_META_PATH = "/api/v1/create-license-key-meta"
META_PATH = "/api/v1/{}"
_SUMMARIES = {Operation.CREATE: ("Create License Key Meta", "453 = created, with `meta_id`"),
              Operation.UPDATE: ("Update License Key Meta", "353 = updated, with `meta_id`"),
              Operation.DELETE: ("Delete License Key Meta", "252 = deleted"),
              Operation.GET: ("Get License Key Meta", "4540 = found, with `meta`")}
WEBHOOKS_PREFIX = "/api/v1/webhook-endpoints"
BEARER = "ApiKeyBearer"
HEADER = "ApiKeyHeader"
MAX_ID = 2**63 - 1

_FIELDS = {
    "api_key": "API key (or `Authorization: Bearer`, or `X-API-Key`); body wins over the headers",
    "license_key": "license key, at most 255 characters",
    "identifier": "who writes (domain, machine id), at most 255 characters; must have an activation",
    "key": "meta key, at most 255 characters (alias `meta_key`)",
    "value": "meta value, at most 10 KiB of UTF-8 (alias `meta_value`)",
    "meta_key": "alias of `key` (the canonical name wins)",
    "meta_value": "alias of `value` (the canonical name wins)",
}


def _params_schema(name: str) -> dict[str, Any]:
    return {
        "title": name,
        "type": "object",
        "description": "Every parameter is text; an empty or whitespace-only one counts as missing. Unknown "
                       "names are ignored. Query-string parameters are accepted too (the body wins). A field "
                       "over its limit, or not a string (JSON), is refused with code 901 and `errors`.",
        "properties": {field: {"type": "string", "description": text} for field, text in _FIELDS.items()},
        "additionalProperties": True,
    }


def _codes_for(status: int) -> list[int]:
    codes = [int(code) for code in Code if code.http_status == status]
    codes += [int(code) for code in ExtensionCode if code.http_status == status]
    return sorted(codes)


def _envelope_ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _signed(description: str, codes: list[int], extra_headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": f"{description} Codes: {', '.join(map(str, codes))}.",
        "headers": {
            "X-Signature-Key-Id": {"description": "kid of the key that signed", "schema": {"type": "string"}},
            "X-Request-Id": {"description": "this request's id (also in the audit record)",
                             "schema": {"type": "string"}},
            **(extra_headers or {}),
        },
        "content": {"application/json": {"schema": {"allOf": [
            _envelope_ref("SignedEnvelope"),
            {"type": "object", "properties": {"response": {"type": "object", "properties": {
                "code": {"type": "integer", "enum": codes}}}}},
        ]}}},
    }


def create_meta_operation() -> dict[str, Any]:
    """``POST /api/v1/create-license-key-meta`` (docs/api.md)."""
    return meta_operation(Operation.CREATE)


def meta_operation(operation: Operation) -> dict[str, Any]:
    """``POST /api/v1/<operation>`` (docs/api.md), also served at ``/v1/<operation>``."""
    summary, success = _SUMMARIES[operation]
    name = summary.replace(" ", "")
    return {
        "summary": summary,
        "operationId": operation.value.replace("-", "_"),
        "description": "Wire-compatible with the GetKeyManager v1 API (get is keymeta's signed read), also at "
                       f"`/v1/{operation.value}`. Every response, errors included, is the signed envelope: verify "
                       "`signature` (RSA PKCS#1 v1.5, SHA-256) over the ASCII bytes of `response_base64` with a "
                       "key from `/api/v1/public-keys`.",
        "requestBody": {"required": False, "content": {
            "application/x-www-form-urlencoded": {"schema": _params_schema(f"{name}Form")},
            "multipart/form-data": {"schema": _params_schema(f"{name}Multipart")},
            "application/json": {"schema": _params_schema(f"{name}Json")},
        }},
        # The key may also be the `api_key` body field, which OpenAPI security cannot express.
        "security": [{BEARER: []}, {HEADER: []}, {}],
        "responses": signed_responses(success),
    }


def signed_responses(success: str = "453 = created, with `meta_id`") -> dict[str, Any]:
    retry_after = {"Retry-After": {"description": "seconds until the limit allows a request again",
                                   "schema": {"type": "integer", "minimum": 1}}}
    return {
        "200": _signed(f"Outcome of the documented checks ({success}); a field over its limit "
                       "is 901 with `errors`.", _codes_for(200)),
        "400": _signed("The body cannot be parsed in its declared content type (901, `errors.body`).", [901]),
        "401": _signed("Unknown, inactive or under-privileged API key, or not from an allowed address.",
                       _codes_for(401)),
        "403": _signed("Client IP or identifier on the block list.", _codes_for(403)),
        "405": _signed("Any method but POST (901, `errors.method`); `Allow: POST`.", [901],
                       {"Allow": {"schema": {"type": "string", "enum": ["POST"]}}}),
        "413": _signed("Body over 64 KiB (901, `errors.body`).", [901]),
        "429": _signed("Rate limit exceeded (4290 `Too many requests`, `errors.rate_limit`).",
                       _codes_for(429), retry_after),
        "503": _plain_error("Database unavailable; retry shortly.", "error", retry_after),
    }


def _plain_error(description: str, field: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "required": [field], "properties": {field: {"type": "string"}}}}}}
    if headers:
        response["headers"] = headers
    return response


_SCHEMAS: dict[str, Any] = {
    "SignedEnvelope": {
        "type": "object",
        "required": ["response", "response_base64", "private_key_used", "signature"],
        "additionalProperties": False,
        "properties": {
            "response": {
                "type": "object",
                "required": ["code", "message", "timestamp"],
                "description": "Keys in this order: code, message, extras (meta_id, meta, errors), timestamp.",
                "properties": {
                    "code": {"type": "integer"},
                    "message": {"type": "string"},
                    "meta_id": {"type": "integer"},
                    "meta": {"type": "array", "items": {
                        "type": "object",
                        "required": ["meta_id", "key", "value", "version", "created_at", "updated_at"],
                        "properties": {"meta_id": {"type": "integer"}, "key": {"type": "string"},
                                       "value": {"type": "string"}, "version": {"type": "integer"},
                                       "created_at": {"type": "string"},
                                       "updated_at": {"type": ["string", "null"]}}}},
                    "errors": {"type": "object",
                               "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                    "timestamp": {"type": "integer", "description": "Unix seconds"},
                },
                "additionalProperties": False,
            },
            "response_base64": {"type": "string", "contentEncoding": "base64",
                                "description": "base64 of `response` as PHP's json_encode writes it"},
            "private_key_used": {"type": "string", "enum": ["global", "product"]},
            "signature": {"type": "string", "contentEncoding": "base64"},
        },
    },
    "PublicKeyListing": {
        "type": "object", "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {
            "type": "object",
            "required": ["kid", "scope", "state", "alg", "key_size", "pem", "created_at"],
            "properties": {
                "kid": {"type": "string"},
                "scope": {"oneOf": [{"type": "string", "enum": ["global"]}, {"type": "integer"}],
                          "description": "`global` or a product id (integer)"},
                "state": {"type": "string", "enum": ["pending", "active", "retired", "revoked"]},
                "alg": {"type": "string", "enum": ["RS256"]},
                "key_size": {"type": "integer"},
                "pem": {"type": "string"},
                "created_at": {"type": ["string", "null"]},
                "activated_at": {"type": ["string", "null"]},
                "retired_at": {"type": ["string", "null"]},
                "revoked_at": {"type": ["string", "null"]},
            },
        }}},
    },
    "Jwks": {
        "type": "object", "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {
            "type": "object", "required": ["kty", "kid", "n", "e"],
            "properties": {"kty": {"type": "string", "enum": ["RSA"]}, "use": {"type": "string"},
                           "alg": {"type": "string"}, "kid": {"type": "string"}, "n": {"type": "string"},
                           "e": {"type": "string"}},
        }}},
    },
}


def _public_keys_responses(schema: str) -> dict[str, Any]:
    cache = {"Cache-Control": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}}
    return {
        "200": {"description": "The key set.", "headers": cache,
                "content": {"application/json": {"schema": _envelope_ref(schema)}}},
        "304": {"description": "Not modified (`If-None-Match` matched the ETag).", "headers": cache},
        "500": _plain_error("A stored public key is malformed (never served half a key set).", "error"),
        "503": _plain_error("Database unavailable; retry shortly.", "error"),
    }


def _admin_responses() -> dict[str, Any]:
    detail = {"oneOf": [{"type": "string"}, {"type": "array"}, {"type": "object"}]}
    body = {"application/json": {"schema": {"type": "object", "required": ["detail"],
                                            "properties": {"detail": detail}}}}
    return {
        "401": {"description": "No, unknown or inactive API key.", "content": body,
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
        "403": {"description": "The key lacks `manage-webhooks`, or may not be used from this address.",
                "content": body},
        "404": {"description": "Unknown endpoint or delivery.", "content": body},
        "409": {"description": "An endpoint with this URL exists already.", "content": body},
        "422": {"description": "Refused input.", "content": body},
        "503": _plain_error("Database unavailable; retry shortly.", "error"),
    }


def _document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                         description="License-key metadata service. Rate limits and security: docs/api.md.")
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(_SCHEMAS)
    components["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <API key>`"},
        HEADER: {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    paths = schema["paths"]
    for operation in Operation:
        post = meta_operation(operation)
        item: dict[str, Any] = {"post": post}
        for method in ("get", "put", "patch", "delete"):
            item[method] = {
                "summary": f"{method.upper()} is not allowed (signed 405)",
                "operationId": f"{post['operationId']}_{method}_not_allowed",
                "description": "Signed and audited like every answer of this endpoint.",
                "responses": {"405": post["responses"]["405"], "429": post["responses"]["429"],
                              "503": post["responses"]["503"]},
            }
        paths[META_PATH.format(operation.value)] = item
    for path, item in paths.items():
        if path.startswith(WEBHOOKS_PREFIX):
            for operation in item.values():
                operation["security"] = [{BEARER: []}, {HEADER: []}]
                operation["responses"].update(_admin_responses())
                for parameter in operation.get("parameters", []):
                    _tighten(parameter)
    paths["/api/v1/public-keys"]["get"]["responses"] = _public_keys_responses("PublicKeyListing")
    paths["/.well-known/jwks.json"]["get"]["responses"] = _public_keys_responses("Jwks")
    return schema


def _tighten(parameter: dict[str, Any]) -> None:
    """Ids are database integers (64-bit); the status filter is one of the delivery statuses."""
    name, schema = parameter["name"], parameter["schema"]
    if parameter["in"] == "path" and name.endswith("_id"):
        schema.update(minimum=1, maximum=MAX_ID)
    if name == "before_id":
        for option in schema.get("anyOf", []):
            if option.get("type") == "integer":
                option["maximum"] = MAX_ID
    if name == "status":
        for option in schema.get("anyOf", []):
            if option.get("type") == "string":
                option.pop("pattern", None)
                option["enum"] = list(DELIVERY_STATUSES)


def install(app: FastAPI) -> None:
    """Serve :func:`_document` (built once, on first request) as ``/openapi.json``."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
