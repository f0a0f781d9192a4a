"""A test event on request (domain.webhooks.test_events): one ``webhook.test`` delivery to the one endpoint
asked for, audited with its actor, shaped and signed like every webhook, and sent by the delivery job."""

from __future__ import annotations

import json

import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook

from domain.events.catalog import WEBHOOK_TEST, schema_of
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import delivery, endpoints, jobs, test_events
from domain.webhooks.audit_events import CLI, Actor
from domain.webhooks.states import DeliveryStatus
from tests.webhook_sink import Sink
from tests.webhook_support import deliveries, outbox_events, register


def send(endpoint_id: int, actor: Actor = CLI) -> test_events.TestSent:
    with unit_of_work() as session:
        return test_events.send_test_event(session, endpoint_id, actor)


def test_a_test_event_is_queued_for_that_endpoint_only(settings: Settings) -> None:
    mine, other = register("http://127.0.0.1:9/mine"), register("http://127.0.0.1:9/other")
    sent = send(mine.id)
    [row] = deliveries(event_type=WEBHOOK_TEST)
    assert (row.id, row.endpoint_id, row.msg_id, row.status) == (sent.delivery_id, mine.id, sent.msg_id,
                                                                 DeliveryStatus.PENDING)
    assert deliveries(endpoint_id=other.id) == []


def test_the_body_validates_against_the_catalog_schema(settings: Settings) -> None:
    endpoint = register("http://127.0.0.1:9/schema")
    body = json.loads(send(endpoint.id).body)
    jsonschema.validate(body, schema_of(WEBHOOK_TEST), cls=jsonschema.Draft202012Validator,
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert body["data"]["endpoint_id"] == endpoint.id


def test_each_request_is_audited_with_its_actor(settings: Settings) -> None:
    endpoint = register("http://127.0.0.1:9/audited")
    first, second = send(endpoint.id, Actor("portal:7")), send(endpoint.id, Actor("console:3", api_key_id=3))
    events = outbox_events(test_events.TEST_SENT, endpoint.id)
    assert [(e.payload["actor"], e.payload["detail"]["msg_id"]) for e in events] == [
        ("portal:7", first.msg_id), ("console:3", second.msg_id)]
    assert events[1].payload["api_key_id"] == 3
    assert all(e.fanned_out_at is not None for e in events), "the audit event itself is never fanned out"


def test_the_sweeper_rings_a_test_event_nobody_rang(settings: Settings) -> None:
    sent = send(register("http://127.0.0.1:9/swept").id)
    with unit_of_work() as session:
        assert delivery.sweep_due(session, rering_seconds=60, limit=100) == [sent.delivery_id]


def test_a_disabled_endpoint_gets_no_test_event(settings: Settings) -> None:
    endpoint = register("http://127.0.0.1:9/disabled")
    with unit_of_work() as session:
        endpoints.set_enabled(session, endpoint.id, False, CLI)
    with pytest.raises(endpoints.EndpointError, match="disabled"):
        send(endpoint.id)
    assert deliveries(endpoint_id=endpoint.id) == []


def test_an_unknown_endpoint_is_not_found(settings: Settings) -> None:
    with pytest.raises(endpoints.EndpointNotFound):
        send(2**62)


def test_the_delivery_job_sends_it_signed_to_the_endpoint(settings: Settings, sink: Sink) -> None:
    endpoint = register(sink.url("/test-event"))
    sent = send(endpoint.id)
    report = jobs.deliver([sent.delivery_id])
    assert report.outcomes == {"succeeded": 1}
    [received] = sink.at("/test-event")
    assert received.headers["webhook-id"] == sent.msg_id
    assert Webhook(endpoint.secret).verify(received.body, received.headers) == json.loads(sent.body)
