"""Request parameters of create-license-key-meta from any accepted encoding (SPEC §1 "Request")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request

MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 64
FIELDS = ("api_key", "license_key", "identifier", "key", "value")
ALIASES = {"meta_key": "key", "meta_value": "value"}
# (limit, unit): characters, except value which is limited in UTF-8 bytes.
LIMITS: dict[str, tuple[int, str]] = {
    "api_key": (255, "characters"),
    "license_key": (255, "characters"),
    "identifier": (255, "characters"),
    "key": (255, "characters"),
    "value": (10 * 1024, "bytes"),
}
# Credentials are compared exactly, but a pasted trailing newline should not make them "unknown".
STRIPPED = ("api_key", "license_key")

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"


class BodyRejected(Exception):
    """The body cannot be accepted at all: 413 (too large) or 400 (unparseable)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class CreateMetaParams:
    values: dict[str, str | None]
    errors: dict[str, list[str]] = field(default_factory=dict)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyRejected(413, f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyRejected(413, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _body_params(request: Request, body: bytes) -> list[tuple[str, object]]:
    media_type = _media_type(request)
    if not body.strip() and media_type != MULTIPART:
        return []
    if media_type == FORM:
        try:
            return list(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                                  errors="strict", max_num_fields=MAX_FIELDS))
        except UnicodeDecodeError as exc:
            raise BodyRejected(400, "form body is not valid UTF-8") from exc
        except ValueError as exc:
            raise BodyRejected(400, f"form body has more than {MAX_FIELDS} fields") from exc
    if media_type == JSON:
        try:
            parsed = json.loads(body)
        except UnicodeDecodeError as exc:
            raise BodyRejected(400, "JSON body is not valid UTF-8") from exc
        except ValueError as exc:
            raise BodyRejected(400, "body is not valid JSON") from exc
        if not isinstance(parsed, dict):
            raise BodyRejected(400, "JSON body must be an object")
        return list(parsed.items())
    if media_type == MULTIPART:
        return await _multipart_params(request, body)
    if not media_type:
        raise BodyRejected(400, "a body needs a Content-Type")
    raise BodyRejected(
        400, f"unsupported Content-Type {media_type!r}; use {FORM}, {MULTIPART} or {JSON}"
    )


async def _multipart_params(request: Request, body: bytes) -> list[tuple[str, object]]:
    request._body = body  # let Starlette parse the bytes we already read (and size-checked)
    try:
        form = await request.form(max_files=len(FIELDS), max_fields=MAX_FIELDS)
    except Exception as exc:
        raise BodyRejected(400, f"multipart body cannot be parsed: {exc}") from exc
    params: list[tuple[str, object]] = []
    for name, item in form.multi_items():
        if isinstance(item, UploadFile):
            data = await item.read()
            try:
                params.append((name, data.decode("utf-8")))
            except UnicodeDecodeError:
                params.append((name, _NotText("must be UTF-8 text")))
        else:
            params.append((name, item))
    await form.close()
    return params


@dataclass(frozen=True)
class _NotText:
    reason: str


def _merge(query: list[tuple[str, str]], body: list[tuple[str, object]]) -> dict[str, object]:
    """Body wins over query; a canonical name wins over its alias; the last of duplicated
    parameters wins, as PHP's ``$_REQUEST`` does."""
    merged: dict[str, object] = {}
    for source in (query, body):
        direct: dict[str, object] = {}
        aliased: dict[str, object] = {}
        for name, value in source:
            if name in FIELDS:
                direct[name] = value
            elif name in ALIASES:
                aliased[ALIASES[name]] = value
        merged.update({**aliased, **direct})
    return merged


def _check(name: str, raw: object, errors: dict[str, list[str]]) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, _NotText):
        errors.setdefault(name, []).append(raw.reason)
        return None
    if not isinstance(raw, str):
        errors.setdefault(name, []).append("must be a string")
        return None
    value = raw.strip() if name in STRIPPED else raw
    if not value.strip():
        return None  # empty or whitespace-only counts as missing
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        errors.setdefault(name, []).append("must be valid Unicode text")
        return None
    if "\x00" in value:
        errors.setdefault(name, []).append("must not contain NUL characters")
        return None
    limit, unit = LIMITS[name]
    size = len(encoded) if unit == "bytes" else len(value)
    if size > limit:
        errors.setdefault(name, []).append(f"must be at most {limit} {unit} (got {size})")
        return None
    return value


def _header_api_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key") or None


async def parse_create_meta(request: Request, body: bytes) -> CreateMetaParams:
    """Raises ``BodyRejected`` for an unparseable body; field problems land in ``errors``."""
    body_params = await _body_params(request, body)
    try:
        query = parse_qsl(request.scope.get("query_string", b"").decode("utf-8"), keep_blank_values=True,
                          errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyRejected(400, "query string is not valid UTF-8 form data") from exc
    merged = _merge(query, body_params)
    body_key = merged.get("api_key")
    if not (isinstance(body_key, str) and body_key.strip()) and (header_key := _header_api_key(request)):
        merged["api_key"] = header_key
    errors: dict[str, list[str]] = {}
    values = {name: _check(name, merged.get(name), errors) for name in FIELDS}
    return CreateMetaParams(values=values, errors=errors)
