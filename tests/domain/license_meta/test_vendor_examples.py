"""Golden tests: the vendor's published update and delete responses (353, 352, 252), byte for byte, with the
messages this service answers."""

from __future__ import annotations

import json

import pytest

from domain.license_meta.codes import Code
from domain.signing.envelope import encode_response, response_object
from domain.signing.verification import verify_envelope
from tests.conftest import FIXTURES

EXAMPLES = json.loads((FIXTURES / "vendor-examples-update-delete.json").read_text())["examples"]
VENDOR_KEY = (FIXTURES / "vendor-public-key.pem").read_text()


def test_the_fixture_holds_the_three_published_responses() -> None:
    assert sorted(e["body"]["response"]["code"] for e in EXAMPLES) == [252, 352, 353]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_encoder_rebuilds_vendor_response_base64_byte_for_byte(example: dict) -> None:
    body = example["body"]
    assert encode_response(body["response"]) == body["response_base64"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_our_code_and_message_rebuild_the_vendor_bytes(example: dict) -> None:
    published = example["body"]["response"]
    code = Code(published["code"])
    extras = {"meta_id": published["meta_id"]} if "meta_id" in published else None
    rebuilt = response_object(int(code), code.message, extras, timestamp=published["timestamp"])
    assert encode_response(rebuilt) == example["body"]["response_base64"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_vendor_signature_verifies_with_vendor_public_key(example: dict) -> None:
    assert verify_envelope(example["body"], {"vendor": VENDOR_KEY}) == "vendor"
