"""Bad input on update, delete and get: an absent, empty or whitespace key; invalid UTF-8; NUL. Never a 500, never
a partial write, every refusal signed and audited."""

from __future__ import annotations

import pytest

from tests.api.conftest import assert_envelope, counts, meta_rows, new_outbox_events
from tests.api.test_meta_family_codes import create, family_world
from tests.conftest import World


@pytest.fixture
def client(shared_client):
    return shared_client


@pytest.fixture
def world(settings) -> World:
    return family_world()


KEY_REQUIRED = {"update": 350, "delete": 250}


def _base(world: World) -> dict[str, str]:
    return {"api_key": world.api_key, "license_key": world.license_key, "identifier": world.identifier}


def _audited_once(before, response, code: int) -> None:
    assert counts().meta == before.meta
    [event] = new_outbox_events(before)
    assert event.outcome_code == code and event.request_id == response.headers["x-request-id"]


@pytest.mark.parametrize("operation", ["update", "delete"])
@pytest.mark.parametrize("key", [None, "", "   ", "\t\n"])
def test_absent_empty_or_whitespace_key_is_key_required(client, world, operation: str, key: str | None) -> None:
    create(client, world, "kept", "v")
    form = {**_base(world), "value": "new"}
    if key is not None:
        form["key"] = key
    before = counts()
    response = client.post(f"/api/v1/{operation}-license-key-meta", data=form)
    assert_envelope(response, KEY_REQUIRED[operation])
    _audited_once(before, response, KEY_REQUIRED[operation])
    assert [(r.key, r.value) for r in meta_rows(world.license_key)] == [("kept", "v")]


@pytest.mark.parametrize("key", [None, "", "   "])
def test_get_without_a_key_lists_every_key(client, world, key: str | None) -> None:
    create(client, world, "listed", "v")
    form = _base(world) if key is None else {**_base(world), "key": key}
    inner = assert_envelope(client.post("/api/v1/get-license-key-meta", data=form), 4540)
    assert [m["key"] for m in inner["meta"]] == ["listed"]


@pytest.mark.parametrize("operation", ["update", "delete", "get"])
@pytest.mark.parametrize("body", [b"key=%ff%fe", b"key=\xff\xfe"])
def test_invalid_utf8_is_a_signed_901_or_400(client, world, operation: str, body: bytes) -> None:
    create(client, world, "kept", "v")
    before = counts()
    response = client.post(f"/api/v1/{operation}-license-key-meta",
                           content=body + b"&api_key=" + world.api_key.encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    inner = assert_envelope(response, 901, http_status=400)
    assert list(inner["errors"]) == ["body"]
    _audited_once(before, response, 901)
    assert [(r.key, r.value) for r in meta_rows(world.license_key)] == [("kept", "v")]


@pytest.mark.parametrize(("operation", "field"), [("update", "key"), ("update", "value"), ("delete", "key"),
                                                  ("get", "key")])
def test_nul_is_a_signed_901(client, world, operation: str, field: str) -> None:
    create(client, world, "kept", "v")
    form = {**_base(world), "key": "kept", "value": "new", field: "a\u0000b"}
    before = counts()
    response = client.post(f"/api/v1/{operation}-license-key-meta", json=form)
    inner = assert_envelope(response, 901)
    assert inner["errors"] == {field: ["must not contain NUL characters"]}
    _audited_once(before, response, 901)
    assert [(r.key, r.value) for r in meta_rows(world.license_key)] == [("kept", "v")]


def test_a_value_over_its_limit_on_delete_is_ignored_not_refused(client, world) -> None:
    create(client, world, "kept", "v")
    form = {**_base(world), "key": "kept", "value": "x" * (10 * 1024 + 1)}
    assert_envelope(client.post("/api/v1/delete-license-key-meta", data=form), 252)
