"""api.parsing without a server or a database: merging, field checks, header keys, body reading."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable

import pytest
from starlette.requests import Request

from api.parsing import (
    LIMITS,
    BodyRejected,
    _check,
    _header_api_key,
    _merge,
    _NotText,
    parse_create_meta,
    read_body,
)


def _request(body: bytes | Iterable[bytes] = b"", *, content_type: str | None = None, query: bytes = b"",
             headers: dict[str, str] | None = None) -> Request:
    chunks = [body] if isinstance(body, bytes) else list(body)
    raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if content_type is not None:
        raw_headers.append((b"content-type", content_type.encode("latin-1")))
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": raw_headers, "query_string": query}
    return Request(scope, receive)  # type: ignore[arg-type]


def _parse(body: bytes = b"", **kwargs) -> tuple[dict, dict]:
    async def run() -> tuple[dict, dict]:
        request = _request(body, **kwargs)
        params = await parse_create_meta(request, await read_body(request))
        return params.values, params.errors

    return asyncio.run(run())


def _rejected(body: bytes = b"", **kwargs) -> BodyRejected:
    with pytest.raises(BodyRejected) as info:
        _parse(body, **kwargs)
    return info.value


# --- _merge -----------------------------------------------------------------------------------------
def test_merge_body_wins_over_query() -> None:
    assert _merge([("key", "q"), ("value", "qv")], [("key", "b")]) == {"key": "b", "value": "qv"}


def test_merge_canonical_wins_over_alias_in_either_order() -> None:
    assert _merge([], [("meta_key", "a"), ("key", "c")]) == {"key": "c"}
    assert _merge([], [("key", "c"), ("meta_key", "a")]) == {"key": "c"}
    assert _merge([], [("meta_value", "a")]) == {"value": "a"}


def test_merge_body_alias_beats_query_canonical() -> None:
    assert _merge([("key", "query")], [("meta_key", "body")]) == {"key": "body"}


def test_merge_last_duplicate_wins_and_unknown_names_are_dropped() -> None:
    assert _merge([], [("key", "1"), ("key", "2"), ("other", "x")]) == {"key": "2"}


# --- _check -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("blank", [None, "", " ", "\t\n", "\u00a0"])
@pytest.mark.parametrize("name", list(LIMITS))
def test_check_blank_is_missing_without_error(name: str, blank: str | None) -> None:
    errors: dict[str, list[str]] = {}
    assert _check(name, blank, errors) is None
    assert errors == {}


def test_check_strips_lookup_fields_but_stores_key_and_value_verbatim() -> None:
    assert _check("api_key", " k \n", {}) == "k"
    assert _check("license_key", "\tLK ", {}) == "LK"
    assert _check("identifier", " i ", {}) == "i"  # activations are stored trimmed
    assert _check("key", " k ", {}) == " k "
    assert _check("value", " v ", {}) == " v "


@pytest.mark.parametrize(("name", "ok", "too_long"), [
    ("key", "k" * 255, "k" * 256),
    ("key", "€" * 255, "€" * 256),
    ("identifier", "i" * 255, "i" * 256),
    ("license_key", "L" * 255, "L" * 256),
    ("api_key", "a" * 255, "a" * 256),
    ("value", "v" * 10240, "v" * 10241),
    ("value", "é" * 5120, "é" * 5120 + "a"),
])
def test_check_limits(name: str, ok: str, too_long: str) -> None:
    errors: dict[str, list[str]] = {}
    assert _check(name, ok, errors) == ok and errors == {}
    assert _check(name, too_long, errors) is None
    assert list(errors) == [name] and len(errors[name]) == 1


def test_check_value_limit_is_in_bytes_and_says_so() -> None:
    errors: dict[str, list[str]] = {}
    _check("value", "€" * 3414, errors)
    assert errors == {"value": ["must be at most 10240 bytes (got 10242)"]}


def test_check_key_limit_is_in_characters_and_says_so() -> None:
    errors: dict[str, list[str]] = {}
    _check("key", "k" * 256, errors)
    assert errors == {"key": ["must be at most 255 characters (got 256)"]}


@pytest.mark.parametrize(("raw", "reason"), [
    (5, "must be a string"),
    (1.5, "must be a string"),
    (False, "must be a string"),
    ([], "must be a string"),
    ({"a": 1}, "must be a string"),
    ("a\x00b", "must not contain NUL characters"),
    ("a\ud800b", "must be valid Unicode text"),
    (_NotText("must be UTF-8 text"), "must be UTF-8 text"),
])
def test_check_refusals(raw: object, reason: str) -> None:
    errors: dict[str, list[str]] = {}
    assert _check("value", raw, errors) is None
    assert errors == {"value": [reason]}


# --- _header_api_key ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"Authorization": "Bearer km_x"}, "km_x"),
    ({"Authorization": "bearer   km_x  "}, "km_x"),
    ({"Authorization": "Bearer "}, None),
    ({"Authorization": "Basic km_x"}, None),
    ({"Authorization": "Bearerkm_x"}, None),
    ({"X-API-Key": "km_y"}, "km_y"),
    ({"X-API-Key": ""}, None),
    ({"Authorization": "Bearer km_x", "X-API-Key": "km_y"}, "km_x"),
    ({"Authorization": "Basic abc", "X-API-Key": "km_y"}, "km_y"),
])
def test_header_api_key(headers: dict[str, str], expected: str | None) -> None:
    assert _header_api_key(_request(headers=headers)) == expected


# --- read_body --------------------------------------------------------------------------------------
def test_read_body_joins_chunks_up_to_the_limit() -> None:
    request = _request([b"ab", b"cd", b"e"])
    assert asyncio.run(read_body(request, limit=5)) == b"abcde"


def test_read_body_stops_at_the_limit_without_content_length() -> None:
    with pytest.raises(BodyRejected) as info:
        asyncio.run(read_body(_request([b"abc", b"def"]), limit=5))
    assert info.value.status == 413


def test_read_body_trusts_a_declared_oversize_length_without_reading() -> None:
    with pytest.raises(BodyRejected) as info:
        asyncio.run(read_body(_request(b"", headers={"Content-Length": "70000"})))
    assert info.value.status == 413


def test_read_body_ignores_a_lying_small_content_length() -> None:
    with pytest.raises(BodyRejected):
        asyncio.run(read_body(_request(b"x" * 10, headers={"Content-Length": "1"}), limit=5))


# --- parse_create_meta --------------------------------------------------------------------------------
FULL = {"api_key": "km_a", "license_key": "LK", "identifier": "i.example", "key": "k", "value": "v"}


def test_parse_form() -> None:
    values, errors = _parse(b"api_key=km_a&license_key=LK&identifier=i.example&key=k&value=a+b%2Fc",
                            content_type="application/x-www-form-urlencoded")
    assert values == {**FULL, "value": "a b/c"} and errors == {}


def test_parse_json_and_query_with_header_key() -> None:
    body = json.dumps({k: v for k, v in FULL.items() if k not in ("api_key", "value")}).encode()
    values, errors = _parse(body, content_type="application/json", query=b"value=from+query",
                            headers={"X-API-Key": "km_h"})
    assert values == {**FULL, "api_key": "km_h", "value": "from query"} and errors == {}


def test_parse_multipart_with_file_part() -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n'
            b'--b\r\nContent-Disposition: form-data; name="meta_value"; filename="v.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nfile \xe2\x9c\x93\r\n--b--\r\n")
    values, errors = _parse(body, content_type="multipart/form-data; boundary=b")
    assert values["key"] == "k" and values["value"] == "file ✓" and errors == {}


def test_parse_collects_every_field_error() -> None:
    body = json.dumps({"key": 1, "value": "v" * 20000, "identifier": "a\u0000"}).encode()
    values, errors = _parse(body, content_type="application/json")
    assert set(errors) == {"key", "value", "identifier"}
    assert values["key"] is values["value"] is values["identifier"] is None


def test_parse_empty_body_is_no_parameters_whatever_the_type() -> None:
    for content_type in (None, "text/plain", "application/json", "multipart/form-data; boundary=b"):
        values, errors = _parse(b"  ", content_type=content_type)
        assert set(values.values()) == {None} and errors == {}


@pytest.mark.parametrize(("body", "content_type"), [
    (b"\xff", "application/x-www-form-urlencoded"),
    (b"a=%ff", "application/x-www-form-urlencoded"),
    (b'{"a": "\xed\xa0\x80"}', "application/json"),
    ('{"key": "k"}'.encode("utf-16"), "application/json"),
    ('{"key": "k"}'.encode("utf-32"), "application/json"),
    (b"[]", "application/json"),
    (b"{", "application/json"),
    (b"x", "text/plain"),
    (b"x", None),
    (b"--b\r\n", "multipart/form-data"),
    (b'--b\r\nContent-Disposition: form-data; name="key"\r\n\r\nk', "multipart/form-data; boundary=b"),
    (b"--b\r\nContent-Type: text/plain\r\n\r\nk\r\n--b--\r\n", "multipart/form-data; boundary=b"),
    (b"junk", "multipart/form-data; boundary=b"),
])
def test_parse_unparseable_body_is_400(body: bytes, content_type: str | None) -> None:
    rejected = _rejected(body, content_type=content_type)
    assert rejected.status == 400 and rejected.reason


def test_parse_invalid_query_string_is_400() -> None:
    assert _rejected(query=b"key=%ff").status == 400


def test_parse_multipart_non_utf8_parts_are_field_errors() -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="value"\r\n\r\n\xe9t\xe9\r\n'
            b'--b\r\nContent-Disposition: form-data; name="key"; filename="k"\r\n\r\n\xff\r\n--b--\r\n')
    values, errors = _parse(body, content_type="multipart/form-data; boundary=b")
    assert errors == {"value": ["must be UTF-8 text"], "key": ["must be UTF-8 text"]}
    assert values["value"] is None and values["key"] is None
