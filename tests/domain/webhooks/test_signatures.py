"""Signatures as any Standard Webhooks library checks them (verified with the ``standardwebhooks`` package)."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from domain.webhooks.signatures import SecretError, generate_secret, secret_key, sign, signature_header


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
