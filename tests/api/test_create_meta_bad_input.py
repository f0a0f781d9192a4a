"""Hostile and malformed input: always a signed envelope, never a 500, nothing stored but the audit event."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from domain.platform.database import unit_of_work
from tests.api.conftest import ENDPOINT, assert_envelope, assert_refused_and_audited, counts, meta_rows
from tests.conftest import World

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(shared_client):
    return shared_client


def _refused(client, code: int, *, http_status: int | None = None, **request: object) -> dict:
    before = counts()
    response = client.post(ENDPOINT, **request)
    inner = assert_envelope(response, code, http_status=http_status)
    assert_refused_and_audited(before, response, code)
    return inner


def _incorrect(client, fields: set[str], **request: object) -> dict[str, list[str]]:
    """200/901 with ``errors`` naming exactly these fields, each with readable reasons."""
    inner = _refused(client, 901, **request)
    assert list(inner) == ["code", "message", "errors", "timestamp"]
    errors = inner["errors"]
    assert set(errors) == fields
    assert all(isinstance(r, list) and r and all(isinstance(x, str) and x for x in r) for r in errors.values())
    return errors


def _body_rejected(client, status: int, **request: object) -> list[str]:
    inner = _refused(client, 901, http_status=status, **request)
    assert list(inner) == ["code", "message", "errors", "timestamp"]
    assert list(inner["errors"]) == ["body"]
    return inner["errors"]["body"]


# --- missing fields ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "code"), [
    ("api_key", 100), ("identifier", 215), ("license_key", 210), ("key", 450), ("value", 451),
])
def test_missing_field(client, world: World, field: str, code: int) -> None:
    form = world.form()
    del form[field]
    _refused(client, code, data=form)


def test_no_parameters_at_all(client, settings) -> None:
    _refused(client, 100)
    _refused(client, 100, content=b"", headers=FORM)
    _refused(client, 100, content=b"{}", headers=JSON)


# --- field limits ------------------------------------------------------------------------------------
def test_limits_accept_exactly_the_maximum(client, world: World) -> None:
    form = world.form(key="k" * 255, value="é" * 5120)  # 255 characters; 10 KiB of UTF-8
    assert_envelope(client.post(ENDPOINT, data=form), 453)
    [row] = meta_rows(world.license_key)
    assert (row.key, row.value) == ("k" * 255, "é" * 5120)


def test_key_of_255_multibyte_characters_is_accepted(client, world: World) -> None:
    # Characters, not bytes, on every backend (PostgreSQL's varchar(255) counts characters too).
    assert_envelope(client.post(ENDPOINT, data=world.form(key="€" * 255, identifier=world.identifier)), 453)
    assert_envelope(client.post(ENDPOINT, data=world.form(key="😀" * 255)), 453)
    assert sorted(len(row.key) for row in meta_rows(world.license_key)) == [255, 255]


@pytest.mark.parametrize(("field", "value"), [
    ("key", "k" * 256),
    ("key", "€" * 256),
    ("value", "é" * 5120 + "a"),  # 10 KiB + 1 byte, only 5121 characters
    ("value", "€" * 3414),  # 10242 bytes
    ("identifier", "i" * 256),
    ("license_key", "L" * 256),
    ("api_key", "a" * 256),
])
@pytest.mark.parametrize("encoding", ["form", "json"])
def test_over_long_field_is_901_with_errors(client, world: World, field: str, value: str, encoding: str) -> None:
    form = world.form(**{field: value})
    request = {"data": form} if encoding == "form" else {"json": form}
    errors = _incorrect(client, {field}, **request)
    assert "255 characters" in errors[field][0] or "10240 bytes" in errors[field][0]


def test_several_over_long_fields_are_all_reported(client, world: World) -> None:
    form = world.form(key="k" * 300, value="v" * 20_000, identifier="i" * 300)
    _incorrect(client, {"key", "value", "identifier"}, data=form)


# --- body size ---------------------------------------------------------------------------------------
def test_one_mebibyte_body_is_413(client, world: World) -> None:
    reasons = _body_rejected(client, 413, data=world.form(value="v" * (1024 * 1024)))
    assert "65536" in reasons[0]


def test_body_just_over_64_kib_is_413(client, world: World) -> None:
    form = world.form(value="")
    padding = 64 * 1024 + 1 - len(json.dumps({**form, "pad": ""}))
    body = json.dumps({**form, "pad": "p" * padding}).encode()
    assert len(body) == 64 * 1024 + 1
    _body_rejected(client, 413, content=body, headers=JSON)


def test_body_of_exactly_64_kib_is_read(client, world: World) -> None:
    form = world.form()
    padding = 64 * 1024 - len(json.dumps({**form, "pad": ""}))
    body = json.dumps({**form, "pad": "p" * padding}).encode()
    assert len(body) == 64 * 1024
    assert_envelope(client.post(ENDPOINT, content=body, headers=JSON), 453)


def test_chunked_body_without_content_length_is_413(client, world: World) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps(world.form())[:-1].encode()
        for _ in range(80):
            yield b" " * 1024
        yield b"}"

    _body_rejected(client, 413, content=chunks(), headers=JSON)


# --- bodies that cannot be parsed --------------------------------------------------------------------
@pytest.mark.parametrize(("content", "headers"), [
    (b"api_key=\xff\xfe&key=k", FORM),
    (b"key=%FF%FE&value=v", FORM),
    (b'{"key": "\xff"}', JSON),
    (b'{"key": "\xed\xa0\x80"}', JSON),  # a UTF-8-encoded surrogate is not UTF-8
    ('{"key": "k"}'.encode("utf-16"), JSON),  # JSON on the wire is UTF-8 (RFC 8259)
    ('{"key": "k"}'.encode("utf-16-le"), JSON),
    (b'{"key": "k"', JSON),
    (b"key=k", JSON),
    (b'["api_key", "x"]', JSON),
    (b'"just a string"', JSON),
    (b"42", JSON),
    (b"null", JSON),
    (b"api_key=x", {"Content-Type": "text/plain"}),
    (b"<xml/>", {"Content-Type": "application/xml"}),
    (b"api_key=x", {}),
    (b"--x\r\nbroken", {"Content-Type": "multipart/form-data"}),
    (b"--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"}),
])
def test_unparseable_body_is_400(client, world: World, content: bytes, headers: dict[str, str]) -> None:
    _body_rejected(client, 400, content=content, headers=headers)


def _multipart(*parts: bytes, boundary: str = "kmb", close: bool = True) -> dict[str, object]:
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts)
    if close:
        body += f"--{boundary}--\r\n".encode()
    return {"content": body, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


def _part(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def _world_parts(world: World, **overrides: str) -> list[bytes]:
    return [_part(name, value.encode()) for name, value in world.form(**overrides).items()]


def test_multipart_text_part_that_is_not_utf8_is_901_not_mojibake(client, world: World) -> None:
    parts = [p for p in _world_parts(world) if b'name="value"' not in p] + [_part("value", b"caf\xe9")]
    errors = _incorrect(client, {"value"}, **_multipart(*parts))
    assert errors["value"] == ["must be UTF-8 text"]


def test_multipart_cut_off_before_closing_boundary_is_400(client, world: World) -> None:
    # Without the closing boundary the last part may be incomplete: refuse, never store a prefix.
    _body_rejected(client, 400, **_multipart(*_world_parts(world), close=False))


def test_multipart_part_without_a_name_is_400(client, world: World) -> None:
    nameless = b"Content-Disposition: form-data\r\n\r\nx"
    _body_rejected(client, 400, **_multipart(*_world_parts(world), nameless))


def test_multipart_with_too_many_parts_is_400(client, world: World) -> None:
    extra = [_part(f"f{i}", b"x") for i in range(100)]
    _body_rejected(client, 400, **_multipart(*_world_parts(world), *extra))


def test_multipart_with_quoted_boundary_and_epilogue(client, world: World) -> None:
    request = _multipart(*_world_parts(world, key="k"), boundary="a b")
    request["headers"] = {"Content-Type": 'multipart/form-data; boundary="a b"'}
    request["content"] = bytes(request["content"]) + b"epilogue"  # type: ignore[arg-type]
    assert_envelope(client.post(ENDPOINT, **request), 453)  # type: ignore[arg-type]


def test_empty_multipart_body_has_no_parameters(client, settings) -> None:
    _refused(client, 100, **_multipart(close=True))
    _refused(client, 100, content=b"", headers={"Content-Type": "multipart/form-data; boundary=kmb"})


def test_invalid_utf8_in_query_string_is_400(client, world: World) -> None:
    before = counts()
    response = client.post(ENDPOINT + "?key=%FF", data=world.form())
    inner = assert_envelope(response, 901, http_status=400)
    assert list(inner["errors"]) == ["body"]
    assert_refused_and_audited(before, response, 901)


def test_json_with_utf8_bom_is_accepted(client, world: World) -> None:
    body = b"\xef\xbb\xbf" + json.dumps(world.form()).encode()
    assert_envelope(client.post(ENDPOINT, content=body, headers=JSON), 453)


def test_too_many_form_fields_is_400(client, world: World) -> None:
    pairs = "&".join(f"f{i}=x" for i in range(200))
    _body_rejected(client, 400, content=pairs.encode(), headers=FORM)


# --- hostile values ----------------------------------------------------------------------------------
def test_sql_looking_strings_are_stored_verbatim(client, world: World) -> None:
    key = "x'); DROP TABLE license_key_meta; --"
    value = "1' OR '1'='1\"; DELETE FROM outbox_events; /* */ \\' %s %(x)s ?"
    inner = assert_envelope(client.post(ENDPOINT, data=world.form(key=key, value=value)), 453)
    [row] = meta_rows(world.license_key)
    assert (row.id, row.key, row.value) == (inner["meta_id"], key, value)
    with unit_of_work() as session:  # the tables are still there and still hold rows
        assert session.execute(text("SELECT count(*) FROM license_key_meta")).scalar_one() >= 1
        assert session.execute(text("SELECT count(*) FROM outbox_events")).scalar_one() >= 1


def test_sql_looking_license_key_matches_nothing(client, world: World) -> None:
    _refused(client, 210, data=world.form(license_key="' OR '1'='1"))
    _refused(client, 210, data=world.form(license_key="%"))
    _refused(client, 210, data=world.form(license_key="LK-%"))


def test_sql_looking_identifier_is_not_an_activation(client, world: World) -> None:
    _refused(client, 202, data=world.form(identifier="' OR 1=1 --"))


@pytest.mark.parametrize("field", ["key", "value", "identifier", "license_key", "api_key"])
def test_nul_character_is_901(client, world: World, field: str) -> None:
    _incorrect(client, {field}, data=world.form(**{field: "a\x00b"}))
    _incorrect(client, {field}, json=world.form(**{field: "a\u0000b"}))


@pytest.mark.parametrize("field", ["key", "value", "identifier"])
def test_lone_surrogate_in_json_is_901(client, world: World, field: str) -> None:
    body = json.dumps(world.form(**{field: "PLACEHOLDER"})).replace("PLACEHOLDER", "a\\ud800b").encode()
    _incorrect(client, {field}, content=body, headers=JSON)


def test_escaped_surrogate_pair_in_json_is_a_real_character(client, world: World) -> None:
    body = json.dumps(world.form(value="PLACEHOLDER")).replace("PLACEHOLDER", "\\ud83d\\ude00").encode()
    assert_envelope(client.post(ENDPOINT, content=body, headers=JSON), 453)
    assert meta_rows(world.license_key)[0].value == "😀"


@pytest.mark.parametrize("bad", [42, 4.2, True, ["x"], {"a": "b"}])
@pytest.mark.parametrize("field", ["key", "value", "api_key"])
def test_non_string_json_value_is_901(client, world: World, field: str, bad: object) -> None:
    errors = _incorrect(client, {field}, json={**world.form(), field: bad})
    assert errors[field] == ["must be a string"]


def test_non_string_alias_loses_to_canonical_string(client, world: World) -> None:
    assert_envelope(client.post(ENDPOINT, json={**world.form(key="k"), "meta_key": 5}), 453)


def test_api_key_that_is_a_prefix_of_a_valid_key_is_100(client, world: World) -> None:
    for candidate in (world.api_key[:-1], world.api_key[:8], world.api_key + "x", world.api_key.upper(),
                      world.api_key[:-1] + "%", "%"):
        _refused(client, 100, data=world.form(api_key=candidate))


def test_control_and_non_ascii_values_round_trip(client, world: World) -> None:
    value = "tab\there\r\nline 🙂 \u200b \u202e reversed \\ backslash \"quote\" </script>"
    inner = assert_envelope(client.post(ENDPOINT, json=world.form(key="ключ/😀", value=value)), 453)
    [row] = meta_rows(world.license_key)
    assert (row.id, row.key, row.value) == (inner["meta_id"], "ключ/😀", value)


def test_very_long_header_values_do_not_break_the_request(client, world: World) -> None:
    response = client.post(ENDPOINT, data=world.form(),
                           headers={"User-Agent": "u" * 8000, "X-Request-Id": "r" * 500})
    assert_envelope(response, 453)
    assert len(response.headers["x-request-id"]) <= 64
