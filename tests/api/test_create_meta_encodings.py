"""The request of create-license-key-meta (docs/api.md): every accepted encoding, header API keys, aliases,
precedence, empty = missing."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode

import pytest

from tests.api.conftest import ENDPOINT, assert_envelope, assert_refused_and_audited, counts, meta_rows
from tests.conftest import World


@pytest.fixture
def client(shared_client):
    return shared_client


def _stored(world: World) -> list[tuple[str, str, str]]:
    return [(row.key, row.value, row.identifier) for row in meta_rows(world.license_key)]


def _multipart(fields: list[tuple[str, str]], boundary: str = "kmboundary") -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_urlencoded(client, world) -> None:
    assert_envelope(client.post(ENDPOINT, data=world.form(key="k", value="a b&c=d/é")), 453)
    assert _stored(world) == [("k", "a b&c=d/é", world.identifier)]


def test_urlencoded_with_charset_parameter(client, world) -> None:
    response = client.post(ENDPOINT, content=urlencode(world.form(key="k")),
                           headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert_envelope(response, 453)


def test_multipart_fields(client, world) -> None:
    body, content_type = _multipart(list(world.form(key="k", value="multi\r\nline").items()))
    assert_envelope(client.post(ENDPOINT, content=body, headers={"Content-Type": content_type}), 453)
    assert _stored(world) == [("k", "multi\r\nline", world.identifier)]


def test_multipart_with_a_file_part(client, world) -> None:
    form = world.form(key="k")
    del form["value"]
    response = client.post(ENDPOINT, data=form, files={"value": ("value.txt", "from a file ✓".encode(), "text/plain")})
    assert_envelope(response, 453)
    assert _stored(world) == [("k", "from a file ✓", world.identifier)]


def test_multipart_binary_file_part_is_refused_with_901(client, world) -> None:
    form = world.form(key="k")
    del form["value"]
    before = counts()
    response = client.post(ENDPOINT, data=form, files={"value": ("v.bin", b"\xff\xfe\x00", "application/octet-stream")})
    inner = assert_envelope(response, 901)
    assert list(inner["errors"]) == ["value"]
    assert_refused_and_audited(before, response, 901)


def test_json_object(client, world) -> None:
    assert_envelope(client.post(ENDPOINT, json=world.form(key="k", value="ü/€")), 453)
    assert _stored(world) == [("k", "ü/€", world.identifier)]


def test_json_with_charset_parameter(client, world) -> None:
    response = client.post(ENDPOINT, content=json.dumps(world.form(key="k")),
                           headers={"Content-Type": "application/json; charset=utf-8"})
    assert_envelope(response, 453)


def test_query_string_only(client, world) -> None:
    assert_envelope(client.post(ENDPOINT, params=world.form(key="k", value="from query")), 453)
    assert _stored(world) == [("k", "from query", world.identifier)]


@pytest.mark.parametrize("encoding", ["form", "json", "multipart"])
def test_body_wins_over_query(client, world, encoding: str) -> None:
    query = {"key": "query-key", "value": "query value", "identifier": "query.example"}
    body = world.form(key="body-key", value="body value")
    if encoding == "form":
        response = client.post(ENDPOINT, params=query, data=body)
    elif encoding == "json":
        response = client.post(ENDPOINT, params=query, json=body)
    else:
        content, content_type = _multipart(list(body.items()))
        response = client.post(ENDPOINT, params=query, content=content, headers={"Content-Type": content_type})
    assert_envelope(response, 453)
    assert _stored(world) == [("body-key", "body value", world.identifier)]


def test_query_and_body_combine(client, world) -> None:
    form = world.form(key="k")
    response = client.post(ENDPOINT, params={"api_key": form.pop("api_key"), "value": "q"}, data=form)
    assert_envelope(response, 453)
    assert _stored(world) == [("k", "test value", world.identifier)]


@pytest.mark.parametrize("header", ["bearer", "Bearer", "BEARER"])
def test_api_key_as_authorization_bearer(client, world, header: str) -> None:
    form = world.form(key="k")
    api_key = form.pop("api_key")
    response = client.post(ENDPOINT, data=form, headers={"Authorization": f"{header} {api_key}"})
    assert_envelope(response, 453)


def test_api_key_as_x_api_key(client, world) -> None:
    form = world.form(key="k")
    response = client.post(ENDPOINT, data=form, headers={"X-API-Key": form.pop("api_key")})
    assert_envelope(response, 453)


def test_api_key_header_with_json_body(client, world) -> None:
    form = world.form(key="k")
    response = client.post(ENDPOINT, json=form, headers={"X-API-Key": form.pop("api_key")})
    assert_envelope(response, 453)


def test_body_api_key_wins_over_header(client, world) -> None:
    response = client.post(ENDPOINT, data=world.form(api_key="km_wrong"),
                           headers={"Authorization": f"Bearer {world.api_key}"})
    assert_envelope(response, 100)


def test_empty_body_api_key_falls_back_to_header(client, world) -> None:
    response = client.post(ENDPOINT, data=world.form(api_key="  "), headers={"X-API-Key": world.api_key})
    assert_envelope(response, 453)


def test_non_bearer_authorization_is_not_an_api_key(client, world) -> None:
    form = world.form()
    api_key = form.pop("api_key")
    assert_envelope(client.post(ENDPOINT, data=form, headers={"Authorization": f"Basic {api_key}"}), 100)


def test_unknown_header_key_is_100(client, world) -> None:
    form = world.form()
    form.pop("api_key")
    assert_envelope(client.post(ENDPOINT, data=form, headers={"X-API-Key": "km_unknown"}), 100)


@pytest.mark.parametrize("encoding", ["form", "json", "query"])
def test_meta_key_and_meta_value_aliases(client, world, encoding: str) -> None:
    form = world.form()
    del form["key"], form["value"]
    form.update(meta_key="aliased", meta_value="aliased value")
    if encoding == "form":
        response = client.post(ENDPOINT, data=form)
    elif encoding == "json":
        response = client.post(ENDPOINT, json=form)
    else:
        response = client.post(ENDPOINT, params=form)
    assert_envelope(response, 453)
    assert _stored(world) == [("aliased", "aliased value", world.identifier)]


@pytest.mark.parametrize("alias_first", [True, False])
def test_canonical_name_wins_over_alias(client, world, alias_first: bool) -> None:
    base = [(k, v) for k, v in world.form().items() if k not in ("key", "value")]
    pairs = [("meta_key", "alias-key"), ("meta_value", "alias value"), ("key", "canon-key"), ("value", "canon value")]
    if not alias_first:
        pairs = pairs[2:] + pairs[:2]
    response = client.post(ENDPOINT, content=urlencode(base + pairs),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_envelope(response, 453)
    assert _stored(world) == [("canon-key", "canon value", world.identifier)]


def test_canonical_name_wins_over_alias_in_json(client, world) -> None:
    body = {"meta_key": "alias-key", **world.form(key="canon-key", value="canon value"), "meta_value": "alias"}
    assert_envelope(client.post(ENDPOINT, json=body), 453)
    assert _stored(world) == [("canon-key", "canon value", world.identifier)]


def test_empty_canonical_name_does_not_fall_back_to_alias(client, world) -> None:
    # The canonical name was given (empty): it wins, and empty counts as missing.
    body = world.form(key="")
    body["meta_key"] = "alias-key"
    assert_envelope(client.post(ENDPOINT, data=body), 450)


def test_duplicated_parameter_last_wins(client, world) -> None:
    pairs = [*world.form(key="first").items(), ("key", "last")]
    response = client.post(ENDPOINT, content=urlencode(pairs),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_envelope(response, 453)
    assert _stored(world) == [("last", "test value", world.identifier)]


@pytest.mark.parametrize("encoding", ["form", "json", "query"])
def test_empty_or_whitespace_counts_as_missing(client, world, encoding: str) -> None:
    for field, code in [("api_key", 100), ("identifier", 215), ("license_key", 210), ("key", 450), ("value", 451)]:
        for blank in ["", " ", "\t\r\n", "\u00a0\u2003"]:
            before = counts()
            form = world.form(**{field: blank})
            if encoding == "form":
                response = client.post(ENDPOINT, data=form)
            elif encoding == "json":
                response = client.post(ENDPOINT, json=form)
            else:
                response = client.post(ENDPOINT, params=form)
            assert_envelope(response, code)
            assert_refused_and_audited(before, response, code)


def test_json_null_counts_as_missing(client, world) -> None:
    body: dict[str, object] = {**world.form(), "value": None}
    assert_envelope(client.post(ENDPOINT, json=body), 451)


def test_api_key_and_license_key_tolerate_surrounding_whitespace(client, world) -> None:
    response = client.post(ENDPOINT, data=world.form(api_key=f" {world.api_key}\n",
                                                      license_key=f"{world.license_key}\r\n"))
    assert_envelope(response, 453)


def test_key_and_value_are_stored_verbatim_with_whitespace(client, world) -> None:
    assert_envelope(client.post(ENDPOINT, data=world.form(key=" spaced ", value="  v  ")), 453)
    assert _stored(world) == [(" spaced ", "  v  ", world.identifier)]


def test_unknown_parameters_are_ignored(client, world) -> None:
    body = {**world.form(key="k"), "extra": "x", "meta_id": "7"}
    assert_envelope(client.post(ENDPOINT, data=body), 453)


def test_request_id_is_echoed(client, world) -> None:
    request_id = uuid.uuid4().hex
    response = client.post(ENDPOINT, data=world.form(), headers={"X-Request-Id": request_id})
    assert_envelope(response, 453)
    assert response.headers["x-request-id"] == request_id
