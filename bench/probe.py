"""A few ordinary HTTP requests whose signed envelopes are checked the way a client would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from domain.signing.verification import EnvelopeInvalid, verify_envelope

PATH = "/api/v1/create-license-key-meta"


@dataclass(frozen=True)
class ProbeCall:
    form: dict[str, str]
    path: str = PATH
    code: int = 453  # the answer expected
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    checked: int
    verified: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.checked > 0 and self.verified == self.checked and not self.problems


def probe(base_url: str, forms: Sequence[dict[str, str] | ProbeCall], public_keys: Mapping[str, str]) -> ProbeResult:
    """POST each form (a plain form: a create, expecting 453), in order; expect HTTP 200, the call's code and a
    signature one of ``public_keys`` verifies."""
    problems: list[str] = []
    verified = 0
    calls = [call if isinstance(call, ProbeCall) else ProbeCall(form=call) for call in forms]
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        for call in calls:
            reply = client.post(call.path, data=call.form, headers=call.headers)
            try:
                code = reply.json()["response"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if reply.status_code != 200 or code != call.code:
                problems.append(f"{call.path}: HTTP {reply.status_code}, code {code} (expected {call.code}): "
                                f"{reply.text[:200]}")
                continue
            try:
                kid = verify_envelope(reply.content, public_keys, reply.headers.get("x-signature-key-id"))
            except EnvelopeInvalid as exc:
                problems.append(f"signature: {exc}")
                continue
            if kid != reply.headers.get("x-signature-key-id"):
                problems.append(f"verified by {kid}, header names {reply.headers.get('x-signature-key-id')}")
                continue
            verified += 1
    return ProbeResult(checked=len(calls), verified=verified, problems=problems)
