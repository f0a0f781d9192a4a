"""The Idempotency-Key header's rules, the request fingerprint, and which outcomes are kept (pure)."""

from __future__ import annotations

import re

import pytest

from domain.idempotency.keys import fingerprint, is_decided, key_problem


@pytest.mark.parametrize("value", ["a", "7f1c2e9a-0b6e-4d0a-9a39-5f1e2b3c4d5e", "x" * 255, "with space", "~!\"#{}"])
def test_one_to_255_printable_ascii_characters_are_a_key(value: str) -> None:
    assert key_problem([value]) is None


@pytest.mark.parametrize(("value", "reason"), [
    ("", "must not be empty"),
    ("x" * 256, "must be at most 255 characters"),
    ("a\x00b", "must be printable ASCII characters only"),
    ("a\tb", "must be printable ASCII characters only"),
    ("a\x7fb", "must be printable ASCII characters only"),
    ("caf\u00e9", "must be printable ASCII characters only"),  # UTF-8 bytes arrive as latin-1 characters
    ("key-\u20ac", "must be printable ASCII characters only"),
])
def test_a_malformed_key_is_refused_with_its_reason(value: str, reason: str) -> None:
    assert key_problem([value]) == reason


def test_several_key_headers_are_refused() -> None:
    assert key_problem(["a", "b"]) == "send one Idempotency-Key header, not several"


def test_the_fingerprint_ignores_the_api_key_absent_parameters_and_order() -> None:
    base = fingerprint("create-license-key-meta", {"api_key": "one", "license_key": "LK", "key": "k", "value": "v"})
    assert fingerprint("create-license-key-meta",
                       {"value": "v", "key": "k", "license_key": "LK", "api_key": "two", "identifier": None}) == base
    assert re.fullmatch(r"[0-9a-f]{64}", base)


@pytest.mark.parametrize(("endpoint", "values"), [
    ("update-license-key-meta", {"license_key": "LK", "key": "k", "value": "v"}),
    ("create-license-key-meta", {"license_key": "LK", "key": "k", "value": "w"}),
    ("create-license-key-meta", {"license_key": "LK", "key": "k", "value": "v", "identifier": "d.ltd"}),
    ("create-license-key-meta", {"license_key": "LK", "key": "k"}),
])
def test_another_endpoint_or_other_parameters_give_another_fingerprint(endpoint: str,
                                                                      values: dict[str, str]) -> None:
    assert fingerprint(endpoint, values) != fingerprint("create-license-key-meta",
                                                        {"license_key": "LK", "key": "k", "value": "v"})


def test_a_lone_surrogate_in_a_parameter_still_has_a_fingerprint() -> None:
    assert fingerprint("create-license-key-meta", {"value": "\ud800"}) != fingerprint("create-license-key-meta", {})


@pytest.mark.parametrize(("status", "code"), [(200, 453), (200, 452), (200, 901), (400, 901), (401, 100),
                                              (403, 150), (413, 901), (422, 4220)])
def test_decided_outcomes_are_kept(status: int, code: int) -> None:
    assert is_decided(status, code)


@pytest.mark.parametrize(("status", "code"), [(500, None), (503, None), (500, 453), (429, 4290), (409, 4090),
                                              (200, None)])
def test_server_failures_rate_limits_conflicts_and_non_envelopes_are_not_kept(status: int, code: int | None) -> None:
    assert not is_decided(status, code)
