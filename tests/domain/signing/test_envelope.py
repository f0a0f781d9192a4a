"""Golden tests: the vendor's published responses, byte for byte."""

from __future__ import annotations

import base64
import json

import pytest

from domain.signing.envelope import (
    SignatureScheme,
    encode_response,
    envelope_signed_text,
    php_json,
    php_json_unescaped,
    response_object,
    signed_bytes,
)
from domain.signing.rsa_keys import Signer, generate_private_key, public_pem
from domain.signing.verification import EnvelopeInvalid, verify_envelope
from tests.conftest import FIXTURES

EXAMPLES = json.loads((FIXTURES / "vendor-examples.json").read_text())["examples"]
VENDOR_KEY = (FIXTURES / "vendor-public-key.pem").read_text()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_encoder_rebuilds_vendor_response_base64_byte_for_byte(example: dict) -> None:
    body = example["body"]
    assert encode_response(body["response"]) == body["response_base64"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_vendor_signature_verifies_with_vendor_public_key(example: dict) -> None:
    assert verify_envelope(example["body"], {"vendor": VENDOR_KEY}) == "vendor"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_tampered_vendor_response_is_rejected(example: dict) -> None:
    body = dict(example["body"])
    body["response"] = {**body["response"], "code": 999}
    with pytest.raises(EnvelopeInvalid, match="does not match"):
        verify_envelope(body, {"vendor": VENDOR_KEY})
    forged = dict(example["body"])
    forged["response_base64"] = encode_response({**example["body"]["response"], "code": 999})
    forged.pop("response")
    with pytest.raises(EnvelopeInvalid, match="no known key"):
        verify_envelope(forged, {"vendor": VENDOR_KEY})


def test_php_json_escapes_slashes_and_non_ascii_like_php() -> None:
    assert php_json({"a": "x/y", "b": "é€😀"}) == '{"a":"x\\/y","b":"\\u00e9\\u20ac\\ud83d\\ude00"}'


def test_response_object_orders_code_message_extras_timestamp_last() -> None:
    obj = response_object(453, "Metadata created", {"meta_id": 7}, timestamp=1)
    assert list(obj) == ["code", "message", "meta_id", "timestamp"]


def test_own_signature_round_trip_and_wrong_key() -> None:
    key, other = generate_private_key(), generate_private_key()
    encoded = encode_response(response_object(453, "Metadata created", {"meta_id": 1}, timestamp=5))
    envelope = {"response": json.loads(base64.b64decode(encoded)), "response_base64": encoded,
                "signature": Signer("k1", key).sign(encoded), "private_key_used": "global"}
    assert verify_envelope(json.dumps(envelope), {"k1": public_pem(key.public_key())}) == "k1"
    with pytest.raises(EnvelopeInvalid):
        verify_envelope(envelope, {"k2": public_pem(other.public_key())})


# --- the envelope scheme: what the vendor's SDKs verify ---------------------------------------------------------
def test_envelope_scheme_bytes_leave_slashes_and_non_ascii_unescaped() -> None:
    response = response_object(901, "Incorrect data found", {"errors": {"value": ["a/b é 日本"]}}, timestamp=7)
    encoded = encode_response(response)
    expected = (
        '{"response":{"code":901,"message":"Incorrect data found","errors":{"value":["a/b é 日本"]},"timestamp":7},'
        '"response_base64":"eyJjb2RlIjo5MDEsIm1lc3NhZ2UiOiJJbmNvcnJlY3QgZGF0YSBmb3VuZCIsImVycm9ycyI6eyJ2YWx1ZSI6'
        'WyJhXC9iIFx1MDBlOSBcdTY1ZTVcdTY3MmMiXX0sInRpbWVzdGFtcCI6N30=",'
        '"private_key_used":"product"}'
    )
    assert envelope_signed_text(response, encoded, "product") == expected
    assert signed_bytes(SignatureScheme.ENVELOPE, response, encoded, "product") == expected.encode("utf-8")


def test_response_base64_scheme_bytes_are_the_base64_text() -> None:
    response = response_object(453, "Metadata created", {"meta_id": 1}, timestamp=7)
    encoded = encode_response(response)
    assert signed_bytes(SignatureScheme.RESPONSE_BASE64, response, encoded, "global") == encoded.encode("ascii")


def test_php_escapes_line_and_paragraph_separators_even_unescaped() -> None:
    # PHP >= 7.1 without JSON_UNESCAPED_LINE_TERMINATORS; JSON.stringify would leave them raw (docs/api.md).
    assert php_json_unescaped({"v": "a\u2028b\u2029c/é"}) == '{"v":"a\\u2028b\\u2029c/é"}'


def test_control_characters_are_escaped_as_php_writes_them() -> None:
    assert php_json_unescaped({"v": "\n\t\u0001\"\\"}) == '{"v":"\\n\\t\\u0001\\"\\\\"}'


def test_an_empty_object_extra_is_left_out_an_empty_list_is_not() -> None:
    # PHP decodes {} as an empty array and re-encodes it as []: an envelope never carries an empty object.
    obj = response_object(4540, "Metadata found", {"errors": {}, "meta": []}, timestamp=1)
    assert list(obj) == ["code", "message", "meta", "timestamp"]
