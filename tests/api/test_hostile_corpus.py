"""The hostile-request corpus (tests/api/corpus/hostile_requests.json) against the signed endpoint.

Each entry names its expected code and HTTP status; every answer must be a correctly signed envelope (never a
500, never an unsigned error page) and must echo no injected header. ``{A}``, ``{L}``, ``{I}``, ``{K}`` in a
body, query or header are the test's API key, license key, identifier and a fresh meta key.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from domain.signing.verification import verify_envelope
from tests.api.conftest import ENDPOINT, public_keys
from tests.conftest import World

CORPUS = json.loads((Path(__file__).parent / "corpus" / "hostile_requests.json").read_text())


def _fill(text: str, world: World, meta_key: str) -> str:
    for token, value in (("{A}", world.api_key), ("{L}", world.license_key), ("{I}", world.identifier),
                         ("{K}", meta_key)):
        text = text.replace(token, value)
    return text


def _body(entry: dict[str, Any], world: World, meta_key: str) -> bytes:
    generate, depth = entry.get("generate"), entry.get("depth", 0)
    if generate == "deep_json":
        return ("[" * depth + "]" * depth).encode()
    if generate == "deep_json_field":
        return ('{"api_key":"' + world.api_key + '","value":' + "[" * depth + "]" * depth + "}").encode()
    body = _fill(entry["body"], world, meta_key).encode(entry.get("body_encoding", "utf-8"))
    return body + _fill(entry.get("raw_tail", ""), world, meta_key).encode("latin-1")


def test_corpus_is_big_and_covers_the_categories() -> None:
    assert len(CORPUS) >= 50
    assert len({entry["name"] for entry in CORPUS}) == len(CORPUS)
    names = " ".join(entry["name"] for entry in CORPUS).lower()
    for topic in ("rtl", "zero-width", "combining", "emoji", "overlong", "cr/lf", "duplicated", "nested",
                  "number", "10k levels", "nul", "traversal", "format string", "long", "huge"):
        assert topic in names, topic


@pytest.mark.parametrize("entry", CORPUS, ids=[entry["name"] for entry in CORPUS])
def test_hostile_request_gets_its_signed_answer(shared_client: Any, world: World, entry: dict[str, Any]) -> None:
    meta_key = f"key-{uuid.uuid4().hex[:8]}"
    headers = {name: _fill(value, world, meta_key) for name, value in entry.get("headers", {}).items()}
    if entry["content_type"]:
        headers["Content-Type"] = entry["content_type"]
    query = _fill(entry.get("query", ""), world, meta_key)
    url = ENDPOINT + (f"?{query}" if query else "")
    response = shared_client.request(entry.get("method", "POST"), url, content=_body(entry, world, meta_key),
                                     headers=headers)

    assert response.status_code == entry["expect_status"], response.text[:500]
    signed_by = response.headers["x-signature-key-id"]
    assert verify_envelope(response.content, public_keys(), preferred_kid=signed_by) == signed_by
    inner = response.json()["response"]
    assert inner["code"] == entry["expect_code"], inner
    assert "x-injected" not in {name.lower() for name in response.headers}
    if inner["code"] == 453:
        assert isinstance(inner["meta_id"], int)
