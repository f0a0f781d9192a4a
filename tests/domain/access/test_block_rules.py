"""Operators add block rules idempotently; a malformed rule is refused with a reason."""

from __future__ import annotations

import pytest

from domain.access.block_rules import BlockRuleError, add_block_rule
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings


def test_an_address_is_stored_as_its_network_and_adding_it_twice_returns_the_same_rule(settings: Settings) -> None:
    with unit_of_work() as session:
        first, created = add_block_rule(session, ip="198.51.100.7")
        again, created_again = add_block_rule(session, ip="198.51.100.7/32")
        assert (first.kind, first.value, created) == ("ip", "198.51.100.7/32", True)
        assert (again.id, created_again) == (first.id, False)


def test_an_identifier_is_normalised(settings: Settings) -> None:
    with unit_of_work() as session:
        rule, _ = add_block_rule(session, identifier="  Blocked.Example  ")
        assert (rule.kind, rule.value) == ("identifier", "blocked.example")


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({}, "exactly one of"),
    ({"ip": "10.0.0.1", "identifier": "x.example"}, "exactly one of"),
    ({"ip": "not-an-address"}, "not-an-address"),
    ({"identifier": "   "}, "must not be empty"),
    ({"identifier": "x" * 256}, "at most 255"),
])
def test_malformed_rules_are_refused(settings: Settings, kwargs: dict[str, str], reason: str) -> None:
    with unit_of_work() as session, pytest.raises(BlockRuleError, match=reason):
        add_block_rule(session, **kwargs)
