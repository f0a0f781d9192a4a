"""The envelope signer keeps the signatures of refusals: an identical refusal in the same second (same code,
message, extras, signing key and scheme) is signed once; every success answer is signed anew.

The signer runs on the suite's database (its real global key); its clock is fixed by each test.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from api.signed_response import EnvelopeSigner, rsa_signature
from domain.license_meta.codes import AnyCode, Code, ExtensionCode
from domain.platform.database import make_async_engine
from domain.platform.settings import Settings
from domain.signing.envelope import SignatureScheme, envelope_signed_text
from domain.signing.keys import GLOBAL_SCOPE, SignerStore
from domain.signing.master_key import load_master_key
from domain.signing.rsa_keys import Signer, load_public_pem
from domain.signing.verification import verify_envelope
from tests.api.conftest import public_keys

SECOND = 1_800_000_000  # a whole Unix second


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingSign:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, signer: Signer, data: bytes) -> str:
        self.calls += 1
        return rsa_signature(signer, data)


Answer = tuple[AnyCode, dict[str, Any] | None, SignatureScheme, float]  # code, extras, scheme, clock


def answer(settings: Settings, answers: list[Answer], *, cache_entries: int = 256) -> tuple[list[bytes], int]:
    """The bodies of ``answers``, given in order by one signer, and how often it signed."""
    clock, sign = Clock(SECOND), CountingSign()

    async def run() -> list[bytes]:
        engine = make_async_engine(settings)
        try:
            store = SignerStore(load_master_key(settings), ttl_seconds=3600)
            signer = EnvelopeSigner(store, engine.connect, clock=clock, sign=sign, cache_entries=cache_entries)
            bodies = []
            for code, extras, scheme, now in answers:
                clock.now = now
                response = await signer.respond(code, GLOBAL_SCOPE, extras=extras, scheme=scheme)
                bodies.append(bytes(response.body))
            return bodies
        finally:
            await engine.dispose()

    return asyncio.run(run()), sign.calls


def assert_all_verify(bodies: list[bytes], scheme: SignatureScheme = SignatureScheme.RESPONSE_BASE64) -> None:
    keys = public_keys()
    for body in bodies:
        if scheme is SignatureScheme.RESPONSE_BASE64:
            assert verify_envelope(body, keys) in keys
            continue
        # The vendor SDKs' scheme: the envelope without its signature, re-encoded (docs/api.md).
        document = json.loads(body)
        signed = envelope_signed_text(document["response"], document["response_base64"],
                                      document["private_key_used"]).encode("utf-8")
        signature = base64.b64decode(document["signature"])
        assert any(_verifies(pem, signature, signed) for pem in keys.values())


def _verifies(pem: str, signature: bytes, data: bytes) -> bool:
    try:
        load_public_pem(pem).verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


DEFAULT = SignatureScheme.RESPONSE_BASE64


def refusal(now: float, code: AnyCode = Code.INVALID_API_KEY, extras: dict[str, Any] | None = None,
            scheme: SignatureScheme = DEFAULT) -> Answer:
    return code, extras, scheme, now


def test_identical_refusals_in_one_second_are_signed_once_and_byte_identical(settings: Settings) -> None:
    bodies, signed = answer(settings, [refusal(SECOND + 0.1), refusal(SECOND + 0.9)])
    assert bodies[0] == bodies[1]
    assert signed == 1
    assert_all_verify(bodies)


def test_a_refusal_in_the_next_second_is_signed_again(settings: Settings) -> None:
    bodies, signed = answer(settings, [refusal(SECOND + 0.9), refusal(SECOND + 1.0)])
    assert bodies[0] != bodies[1]
    assert signed == 2
    assert_all_verify(bodies)


def test_a_refusal_with_other_extras_or_code_is_signed_again(settings: Settings) -> None:
    too_long = {"errors": {"value": ["too long"]}}
    bodies, signed = answer(settings, [
        refusal(SECOND, Code.INCORRECT_DATA, too_long),
        refusal(SECOND, Code.INCORRECT_DATA, {"errors": {"key": ["too long"]}}),
        refusal(SECOND, Code.INCORRECT_DATA, too_long),
        refusal(SECOND, Code.INACTIVE_API_KEY),
    ])
    assert len(set(bodies)) == 3 and bodies[0] == bodies[2]
    assert signed == 3
    assert_all_verify(bodies)


def test_each_signature_scheme_signs_its_own_bytes(settings: Settings) -> None:
    envelope = SignatureScheme.ENVELOPE
    bodies, signed = answer(settings, [refusal(SECOND), refusal(SECOND, scheme=envelope),
                                       refusal(SECOND, scheme=envelope)])
    assert signed == 2
    assert bodies[1] == bodies[2]
    assert_all_verify(bodies[:1])
    assert_all_verify(bodies[1:], envelope)


def test_success_answers_are_signed_every_time(settings: Settings) -> None:
    found = (ExtensionCode.META_FOUND, {"meta": []}, DEFAULT, SECOND)
    created = (Code.META_CREATED, {"meta_id": 7}, DEFAULT, SECOND)
    bodies, signed = answer(settings, [created, created, found, found])
    assert bodies[0] == bodies[1] and bodies[2] == bodies[3]
    assert signed == 4
    assert_all_verify(bodies)


def test_the_least_recently_used_refusal_is_forgotten_first(settings: Settings) -> None:
    first, second, third = refusal(SECOND), refusal(SECOND, Code.INACTIVE_API_KEY), refusal(SECOND, Code.IP_NOT_ALLOWED)
    # Kept: first, second; first used again (most recent); third pushes out second; first is still kept.
    _, signed = answer(settings, [first, second, first, third, first, second], cache_entries=2)
    assert signed == 4  # first, second, third, and second again
