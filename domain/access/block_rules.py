"""The block list as operators edit it: one rule per address range or identifier, added idempotently."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.access.checks import normalize_identifier, parse_network
from domain.access.models import BlockRule

MAX_IDENTIFIER = 255  # the column's width


class BlockRuleError(ValueError):
    """The rule given is malformed; the message says how."""


def add_block_rule(session: Session, *, ip: str | None = None, identifier: str | None = None
                   ) -> tuple[BlockRule, bool]:
    """Returns the rule and whether it was created now (adding a rule twice is not an error)."""
    if (ip is None) == (identifier is None):
        raise BlockRuleError("give exactly one of --ip or --identifier")
    if ip is not None:
        try:
            kind, value = "ip", str(parse_network(ip))
        except ValueError as exc:
            raise BlockRuleError(str(exc)) from exc
    else:
        text = (identifier or "").strip()
        if not text:
            raise BlockRuleError("identifier must not be empty")
        if len(text) > MAX_IDENTIFIER:
            raise BlockRuleError(f"identifier must be at most {MAX_IDENTIFIER} characters")
        kind, value = "identifier", normalize_identifier(text)
    existing = session.scalar(select(BlockRule).where(BlockRule.kind == kind, BlockRule.value == value))
    if existing is not None:
        return existing, False
    row = BlockRule(kind=kind, value=value)
    session.add(row)
    session.flush()
    return row, True
