"""An endpoint's share of a worker (attempts at once, attempts per second): its limits, and the
``keymeta webhooks create/limit`` options that set it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli import main
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import endpoints, ssrf
from domain.webhooks.audit_events import CLI
from domain.webhooks.models import WebhookEndpoint
from tests.webhook_sink import Sink

LOOPBACK = ssrf.parse_allowed(["127.0.0.0/8"])


@pytest.mark.parametrize(("max_in_flight", "rate_limit"), [(0, None), (257, None), (8, 0.0), (8, -1.0),
                                                            (8, float("inf")), (8, float("nan"))])
def test_out_of_range_shares_are_refused(max_in_flight: int, rate_limit: float | None) -> None:
    with pytest.raises(endpoints.EndpointError):
        endpoints.check_share(max_in_flight, rate_limit)


def cli(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(main, ["webhooks", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_the_cli_sets_and_clears_an_endpoints_share(settings: Settings, sink: Sink) -> None:
    created = cli("create", "--url", sink.url("/cli"), "--max-in-flight", "2", "--rate-limit", "5")
    assert (created["max_in_flight"], created["rate_limit"]) == (2, 5.0)
    endpoint_id = str(created["id"])
    assert cli("limit", endpoint_id, "--max-in-flight", "4")["rate_limit"] == 5.0  # the rate is kept
    assert cli("limit", endpoint_id, "--no-rate-limit")["rate_limit"] is None
    with unit_of_work() as session:
        row = session.get(WebhookEndpoint, int(endpoint_id))
        assert row is not None and (row.max_in_flight, row.rate_limit) == (4, None)
    refused = CliRunner().invoke(main, ["webhooks", "limit", endpoint_id, "--max-in-flight", "0"])
    assert refused.exit_code == 1 and "max_in_flight must be between 1 and 256" in refused.stderr


def test_an_update_that_changes_nothing_records_nothing(settings: Settings, sink: Sink, master_key: bytes) -> None:
    with unit_of_work() as session:
        created = endpoints.create_endpoint(session, url=sink.url("/same"), event_types=None, master_key=master_key,
                                            allowed=LOOPBACK, actor=CLI, max_in_flight=3)
        endpoint_id, updated_at = created.endpoint.id, created.endpoint.updated_at
    with unit_of_work() as session:
        row = endpoints.update_endpoint(session, endpoint_id, actor=CLI, allowed=LOOPBACK, max_in_flight=3)
        assert row.updated_at == updated_at
