"""A few ordinary HTTP requests whose signed envelopes are checked the way a client would."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from domain.signing.verification import EnvelopeInvalid, verify_envelope

PATH = "/api/v1/create-license-key-meta"


@dataclass(frozen=True)
class ProbeResult:
    checked: int
    verified: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.checked > 0 and self.verified == self.checked and not self.problems


def probe(base_url: str, forms: list[dict[str, str]], public_keys: Mapping[str, str]) -> ProbeResult:
    """POST each form; expect HTTP 200, code 453 and a signature one of ``public_keys`` verifies."""
    problems: list[str] = []
    verified = 0
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        for form in forms:
            reply = client.post(PATH, data=form)
            try:
                code = reply.json()["response"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if reply.status_code != 200 or code != 453:
                problems.append(f"HTTP {reply.status_code}, code {code}: {reply.text[:200]}")
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
    return ProbeResult(checked=len(forms), verified=verified, problems=problems)
