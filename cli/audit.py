"""``keymeta audit list`` and ``keymeta audit verify``."""

from __future__ import annotations

from typing import Any

import click

from cli import main
from cli.support import CliError, json_option, parse_time
from domain.events.audit import list_records, verify_chain
from domain.platform.database import unit_of_work


@main.group()
def audit() -> None:
    """The audit log: one hash-chained record per request and per lifecycle event."""


@audit.command("list")
@click.option("--since", default=None, help="ISO 8601 or Unix seconds.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
def audit_list(since: str | None, limit: int) -> dict[str, Any]:
    """Print audit records, newest last."""
    with unit_of_work() as session:
        rows = list_records(session, since=parse_time(since) if since else None, limit=limit)
        return {"records": [
            {"seq": r.seq, "recorded_at": r.recorded_at, "action": r.action, "status": r.status,
             "code": r.outcome_code, "actor_api_key_id": r.actor_api_key_id, "request_id": r.request_id,
             "source_ip": r.source_ip, "product_id": r.product_id, "license_key": r.license_key_masked,
             "identifier": r.identifier, "meta_key": r.meta_key, "event_id": r.event_id}
            for r in rows]}


@audit.command("verify")
@json_option
def audit_verify() -> dict[str, Any]:
    """Recompute the hash chain; exit non-zero naming the first broken record."""
    with unit_of_work() as session:
        checked, broken = verify_chain(session)
    if broken is not None:
        raise CliError(f"audit chain broken at seq {broken.seq} (record id {broken.record_id}): {broken.reason}"
                       f" ({checked} records before it verified)")
    return {"verified": checked, "status": "ok"}
