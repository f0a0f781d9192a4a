"""Request parameters of the metadata family from any accepted encoding (docs/api.md, "Request")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header
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
# Lookups are exact, but a pasted trailing newline should not make a credential "unknown" (activations
# are stored trimmed too, so a padded identifier must match them).
STRIPPED = ("api_key", "license_key", "identifier")

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
class MetaParams:
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
    if not body.strip():
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
            # Decoded here, strictly: json.loads(bytes) would also take UTF-16/32 and UTF-8-encoded
            # surrogates; JSON on the wire is UTF-8 (RFC 8259), a leading BOM tolerated.
            parsed = json.loads(body.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise BodyRejected(400, "JSON body is not valid UTF-8") from exc
        except ValueError as exc:
            raise BodyRejected(400, "body is not valid JSON") from exc
        except RecursionError as exc:  # ≈1000+ levels of nested arrays/objects: still just a bad body
            raise BodyRejected(400, "JSON body is nested too deeply") from exc
        if not isinstance(parsed, dict):
            raise BodyRejected(400, "JSON body must be an object")
        return list(parsed.items())
    if media_type == MULTIPART:
        return _multipart_params(request, body)
    if not media_type:
        raise BodyRejected(400, "a body needs a Content-Type")
    raise BodyRejected(
        400, f"unsupported Content-Type {media_type!r}; use {FORM}, {MULTIPART} or {JSON}"
    )


@dataclass
class _Part:
    disposition: bytes = b""
    data: bytearray = field(default_factory=bytearray)


class _MultipartCollector:
    """The raw bytes of every part, and whether the closing boundary was reached."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.complete = False
        self._header = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": lambda: self.parts.append(_Part()),
            "on_part_data": lambda data, start, end: self.parts[-1].data.extend(data[start:end]),
            "on_header_field": lambda data, start, end: self._header.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_end": self._end,
        }

    def _header_end(self) -> None:
        if bytes(self._header).lower() == b"content-disposition":
            self.parts[-1].disposition = bytes(self._value)
        self._header.clear()
        self._value.clear()

    def _end(self) -> None:
        self.complete = True


def _multipart_params(request: Request, body: bytes) -> list[tuple[str, object]]:
    # Parsed here rather than by Starlette's request.form(): that falls back to Latin-1 for a text
    # part that is not UTF-8 (mojibake would be stored) and accepts a body cut off before its
    # closing boundary (the cut-off part silently vanishes).
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise BodyRejected(400, "multipart body has no boundary")
    collector = _MultipartCollector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # any parser failure means "cannot be parsed"
        raise BodyRejected(400, f"multipart body cannot be parsed: {exc}") from exc
    if not collector.complete:
        raise BodyRejected(400, "multipart body ends before its closing boundary")
    if len(collector.parts) > MAX_FIELDS:
        raise BodyRejected(400, f"multipart body has more than {MAX_FIELDS} parts")
    params: list[tuple[str, object]] = []
    for part in collector.parts:
        name = parse_options_header(part.disposition)[1].get(b"name")
        if name is None:
            raise BodyRejected(400, 'a multipart part has no Content-Disposition "name"')
        # Text fields and file parts alike: the content must be UTF-8 text.
        try:
            params.append((name.decode("utf-8"), bytes(part.data).decode("utf-8")))
        except UnicodeDecodeError:
            params.append((name.decode("utf-8", "replace"), _NotText("must be UTF-8 text")))
    return params


@dataclass(frozen=True)
class _NotText:
    reason: str


def _merge(query: list[tuple[str, str]], body: list[tuple[str, object]],
           fields: tuple[str, ...] = FIELDS) -> dict[str, object]:
    """Body wins over query; a canonical name wins over its alias; the last of duplicated
    parameters wins, as PHP's ``$_REQUEST`` does."""
    merged: dict[str, object] = {}
    for source in (query, body):
        direct: dict[str, object] = {}
        aliased: dict[str, object] = {}
        for name, value in source:
            if name in fields:
                direct[name] = value
            elif ALIASES.get(name) in fields:
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


async def parse_create_meta(request: Request, body: bytes) -> MetaParams:
    """The parameters of create-license-key-meta (see :func:`parse_params`)."""
    return await parse_params(request, body, FIELDS)


async def parse_params(request: Request, body: bytes, fields: tuple[str, ...]) -> MetaParams:
    """Only ``fields`` are read (others, aliases of others included, are ignored). Raises ``BodyRejected`` for
    an unparseable body; field problems land in ``errors``."""
    body_params = await _body_params(request, body)
    try:
        query = parse_qsl(request.scope.get("query_string", b"").decode("utf-8"), keep_blank_values=True,
                          errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyRejected(400, "query string is not valid UTF-8 form data") from exc
    merged = _merge(query, body_params, fields)
    body_key = merged.get("api_key")
    if not (isinstance(body_key, str) and body_key.strip()) and (header_key := _header_api_key(request)):
        merged["api_key"] = header_key
    errors: dict[str, list[str]] = {}
    values = {name: _check(name, merged.get(name), errors) for name in fields}
    return MetaParams(values=values, errors=errors)
