"""Signatures as any Standard Webhooks consumer checks them: ``v1`` with the ``standardwebhooks`` package, ``v1a``
against the reference library's vector and with ``cryptography`` alone (``v1a_consumer``)."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from domain.webhooks.signatures import (
    SecretError,
    generate_secret,
    generate_signing_key,
    public_key,
    secret_key,
    sign,
    signature_header,
)
from tests.domain.webhooks import v1a_consumer


def test_generated_secret_has_the_whsec_format() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) == 32
    assert generate_secret() != secret


def test_signature_matches_the_library_and_verifies() -> None:
    secret, body, now = generate_secret(), b'{"type":"x","data":{"v":"\\u00e9"}}', int(time.time())
    header = signature_header([secret], "msg_abc", now, body)
    expected = Webhook(secret).sign("msg_abc", dt.datetime.fromtimestamp(now, dt.UTC), body.decode())
    assert header == expected
    headers = {"webhook-id": "msg_abc", "webhook-timestamp": str(now), "webhook-signature": header}
    assert Webhook(secret).verify(body, headers) == {"type": "x", "data": {"v": "é"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_two_secrets_give_two_signatures_either_verifies() -> None:
    new, old, body, now = generate_secret(), generate_secret(), b"{}", int(time.time())
    header = signature_header([new, old], "msg_1", now, body)
    assert len(header.split(" ")) == 2 and header.split(" ")[0] == sign(new, "msg_1", now, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": header}
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)


@pytest.mark.parametrize("bad", [
    "abc", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 23).decode(),
    "whsec_" + base64.b64encode(b"x" * 65).decode(),
])
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(SecretError):
        secret_key(bad)


def test_secret_sizes_24_to_64_bytes_are_accepted() -> None:
    for size in (24, 64):
        assert len(secret_key("whsec_" + base64.b64encode(b"k" * size).decode())) == size


# The Standard Webhooks specification gives no v1a vector; its reference Go library does (TestAsymmetricWebhookSign
# in standard-webhooks/standard-webhooks libraries/go/webhook_asymmetric_test.go): the private key there is the
# base64 seed without its whsk_ prefix, which that library strips when present.
REFERENCE_SEED = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
REFERENCE_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REFERENCE_TIMESTAMP = 1614265330
REFERENCE_BODY = b'{"test": 2432232314}'
REFERENCE_SIGNATURE = ("v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==")


def reference_headers(signature: str) -> dict[str, str]:
    return {"webhook-id": REFERENCE_MSG_ID, "webhook-timestamp": str(REFERENCE_TIMESTAMP),
            "webhook-signature": signature}


def test_v1a_signature_matches_the_reference_library_vector() -> None:
    signing_key = "whsk_" + REFERENCE_SEED
    assert sign(signing_key, REFERENCE_MSG_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY) == REFERENCE_SIGNATURE
    # And the vector verifies, with cryptography alone, under the public key keymeta publishes for that key.
    v1a_consumer.verify(public_key(signing_key), REFERENCE_BODY, reference_headers(REFERENCE_SIGNATURE),
                        now=REFERENCE_TIMESTAMP)


def test_v1a_public_key_is_the_raw_ed25519_public_key_in_base64() -> None:
    seed = base64.b64decode(REFERENCE_SEED)
    raw = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public_key("whsk_" + REFERENCE_SEED) == "whpk_" + base64.b64encode(raw).decode()


def test_v1a_is_refused_by_another_key_a_changed_body_or_a_stale_timestamp() -> None:
    headers = reference_headers(REFERENCE_SIGNATURE)
    with pytest.raises(v1a_consumer.Unverified):
        v1a_consumer.verify(public_key(generate_signing_key()), REFERENCE_BODY, headers, now=REFERENCE_TIMESTAMP)
    reference_public = public_key("whsk_" + REFERENCE_SEED)
    with pytest.raises(v1a_consumer.Unverified):
        v1a_consumer.verify(reference_public, REFERENCE_BODY + b" ", headers, now=REFERENCE_TIMESTAMP)
    with pytest.raises(v1a_consumer.Unverified):
        v1a_consumer.verify(reference_public, REFERENCE_BODY, headers, now=REFERENCE_TIMESTAMP + 301)
    # A v1 signature made with the public key's text as an HMAC secret is no v1a signature.
    with pytest.raises(v1a_consumer.Unverified):
        v1a_consumer.verify(reference_public, REFERENCE_BODY, reference_headers("v1," + REFERENCE_SIGNATURE[4:]),
                            now=REFERENCE_TIMESTAMP)


def test_generated_signing_key_has_the_whsk_format_and_its_own_public_key() -> None:
    key = generate_signing_key()
    assert key.startswith("whsk_") and len(base64.b64decode(key[5:], validate=True)) == 32
    assert public_key(key).startswith("whpk_") and len(base64.b64decode(public_key(key)[5:], validate=True)) == 32
    assert public_key(generate_signing_key()) != public_key(key)


def test_two_v1a_keys_give_two_signatures_either_public_key_verifies() -> None:
    new, old, body, now = generate_signing_key(), generate_signing_key(), b"{}", 1_700_000_000
    header = signature_header([new, old], "msg_1", now, body)
    assert [s.split(",")[0] for s in header.split(" ")] == ["v1a", "v1a"]
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": header}
    v1a_consumer.verify(public_key(new), body, headers, now=now)
    v1a_consumer.verify(public_key(old), body, headers, now=now)


@pytest.mark.parametrize("bad", [
    "whsk_", "whsk_not base64!", "whsk_" + base64.b64encode(b"x" * 31).decode(),
    "whsk_" + base64.b64encode(b"x" * 64).decode(), "whpk_" + REFERENCE_SEED,
])
def test_malformed_signing_keys_are_refused(bad: str) -> None:
    with pytest.raises(SecretError):
        sign(bad, "msg_1", 1, b"{}")
