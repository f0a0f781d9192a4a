"""``keymeta webhooks test ID``: queue a ``webhook.test`` delivery to one endpoint (never to the others).

The command is added to the ``webhooks`` group by ``cli/webhooks.py``; like a replay it is left to the delivery
sweeper, which rings a webhooks worker within seconds.
"""

from __future__ import annotations

from typing import Any

import click

from cli.support import CliError, json_option
from domain.events.catalog import WEBHOOK_TEST
from domain.platform.database import unit_of_work
from domain.webhooks import endpoints, test_events
from domain.webhooks.audit_events import CLI

QUEUED_NOTE = "queued; the delivery sweeper sends it within seconds (a running beat and webhooks worker needed)"


@click.command("test")
@click.argument("endpoint_id", type=click.IntRange(min=1, max=2**63 - 1))
@json_option
def webhook_test(endpoint_id: int) -> dict[str, Any]:
    """Send a test event (webhook.test) to this endpoint only."""
    try:
        with unit_of_work() as session:
            sent = test_events.send_test_event(session, endpoint_id, CLI)
    except endpoints.EndpointError as exc:
        raise CliError(str(exc)) from exc
    return {"endpoint_id": endpoint_id, "delivery_id": sent.delivery_id, "msg_id": sent.msg_id,
            "event_type": WEBHOOK_TEST, "note": QUEUED_NOTE}
