"""``keymeta webhooks portal-link ID [--ttl 1h]``: a signed, expiring consumer portal link for one endpoint.

The command is added to the ``webhooks`` group by ``cli/webhooks.py`` (``webhooks.add_command(portal_link)``).
"""

from __future__ import annotations

import re
from typing import Any

import click

from cli.setup import master_key_or_fail
from cli.support import CliError, json_option
from domain.console import portal
from domain.platform.database import unit_of_work
from domain.platform.settings import get_settings
from domain.webhooks import endpoints
from domain.webhooks.audit_events import CLI

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``7d``: seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration such as 30m, 1h or 7d", param_hint="--ttl")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@click.command("portal-link")
@click.argument("endpoint_id", type=click.IntRange(min=1, max=2**63 - 1))
@click.option("--ttl", default="1h", show_default=True, help="How long the link works: 30m, 1h, 7d (at most 30d).")
@click.option("--base-url", default=None,
              help="Where the API is reached, e.g. https://keymeta.example.com (default: the path only).")
@json_option
def portal_link(endpoint_id: int, ttl: str, base_url: str | None) -> dict[str, Any]:
    """Print a signed, expiring link to the consumer portal of one webhook endpoint."""
    seconds = parse_ttl(ttl)
    master_key = master_key_or_fail()
    base = (base_url or get_settings().public_url or "").rstrip("/")
    try:
        with unit_of_work() as session:
            link = portal.issue_link(session, master_key, endpoint_id, ttl_seconds=seconds, actor=CLI)
    except endpoints.EndpointError as exc:
        raise CliError(str(exc)) from exc
    return {"endpoint_id": link.endpoint_id, "url": base + link.path, "expires_at": link.expires_at}
