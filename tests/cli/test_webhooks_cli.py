"""``keymeta webhooks …``: one-line errors, secrets shown once, replay through the real delivery code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from cli import main
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import audit_events, jobs
from domain.webhooks.models import WebhookEndpoint
from tests.conftest import World
from tests.domain.webhooks import v1a_consumer
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import deliveries, meta_events, outbox_events


@pytest.fixture
def settings(webhook_settings: Settings) -> Settings:
    """Webhook timings and allow-list of tests/webhook_support.py."""
    return webhook_settings


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["webhooks", *args], catch_exceptions=False)


def ok_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fails(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    return result.stderr


def test_create_prints_the_secret_once_and_stores_it_sealed(settings: Settings, sink: Sink) -> None:
    created = ok_json("create", "--url", sink.url("/cli"), "--event", "license_key_meta.created")
    assert created["secret"].startswith("whsec_") and created["event_types"] == ["license_key_meta.created"]
    listed = ok_json("list")["endpoints"]
    assert [e["id"] for e in listed] == [created["id"]] and "secret" not in listed[0]
    assert created["secret"] not in run("list").output
    with unit_of_work() as session:
        row = session.scalars(select(WebhookEndpoint)).one()
        assert created["secret"][6:].encode() not in row.secret_encrypted
    assert outbox_events(audit_events.ENDPOINT_CREATED, created["id"])[0].payload["actor"] == "cli"


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "ftp://example.com/hook"], "must start with https://"),
    (["--url", "not a url"], "must start with https://"),
    (["--url", "https://"], "the URL has no host"),
    (["--url", "https://exa mple.com/"], "invalid host name"),
    (["--url", "https://example.com:99999/"], "invalid URL"),
    (["--url", "http://hooks.invalid/"], "cannot resolve hooks.invalid"),
    (["--url", "https://user:pw@example.com/"], "credentials in the URL"),
    (["--url", "http://8.8.8.8/hook"], "plain http"),
    (["--url", "https://10.0.0.1/hook"], "10.0.0.1 is private"),
    (["--url", "https://[::ffff:169.254.169.254]/"], "metadata"),
    (["--url", "https://example.com/" + "a" * 2100], "at most 2048"),
    (["--url", "https://example.com/hook", "--event", "nope.happened"], "unknown event type 'nope.happened'"),
])
def test_bad_input_is_a_one_line_error(settings: Settings, args: list[str], message: str) -> None:
    assert message in fails("create", *args)


def test_duplicate_endpoint_is_refused(settings: Settings, sink: Sink) -> None:
    first = ok_json("create", "--url", sink.url("/dup"))
    assert f"endpoint {first['id']} already has this URL" in fails("create", "--url", sink.url("/dup"))
    assert f"endpoint {first['id']} already" in fails("create", "--url", sink.url("/dup"), "--event", "*")
    ok_json("create", "--url", sink.url("/dup"), "--event", "license_key_meta.created")  # other events: fine


def test_disable_enable_and_unknown_ids(settings: Settings, sink: Sink) -> None:
    created = ok_json("create", "--url", sink.url("/x"))
    assert ok_json("disable", str(created["id"]))["enabled"] is False
    assert ok_json("list")["endpoints"][0]["disabled_reason"] == "disabled by an operator"
    assert ok_json("enable", str(created["id"]))["enabled"] is True
    assert len(outbox_events(audit_events.ENDPOINT_DISABLED, created["id"])) == 1
    assert len(outbox_events(audit_events.ENDPOINT_ENABLED, created["id"])) == 1
    assert "no webhook endpoint with id 999999" in fails("disable", "999999")
    assert "no webhook endpoint" in fails("rotate-secret", "999999")


def test_rotate_secret_both_secrets_verify(settings: Settings, world: World, sink: Sink) -> None:
    created = ok_json("create", "--url", sink.on("/rot", Reply(200)))
    rotated = ok_json("rotate-secret", str(created["id"]))
    assert rotated["secret"] != created["secret"] and rotated["secret_version"] == 2
    jobs.deliver(jobs.fan_out_events(meta_events(world)))
    [request] = sink.at("/rot")
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (created["secret"], rotated["secret"]):
        Webhook(secret).verify(request.body, request.headers)

    again = ok_json("rotate-secret", str(created["id"]), "--overlap", "0")  # no overlap: only the newest signs
    jobs.deliver(jobs.fan_out_events(meta_events(world)))
    latest = sink.at("/rot")[-1]
    assert len(latest.headers["webhook-signature"].split(" ")) == 1
    Webhook(again["secret"]).verify(latest.body, latest.headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(rotated["secret"]).verify(latest.body, latest.headers)


def test_create_v1a_prints_the_public_key_a_delivery_verifies_with(settings: Settings, world: World,
                                                                    sink: Sink) -> None:
    created = ok_json("create", "--url", sink.on("/v1a", Reply(200)), "--signature-scheme", "v1a")
    assert created["signature_scheme"] == "v1a" and created["public_key"].startswith("whpk_")
    assert "secret" not in created
    assert ok_json("list")["endpoints"][0]["public_key"] == created["public_key"]  # published, not shown once
    jobs.deliver(jobs.fan_out_events(meta_events(world)))
    [request] = sink.at("/v1a")
    v1a_consumer.verify(created["public_key"], request.body, request.headers,
                        now=int(request.headers["webhook-timestamp"]))

    rotated = ok_json("rotate-secret", str(created["id"]))
    assert rotated["public_key"] != created["public_key"] and rotated["previous_public_key"] == created["public_key"]
    assert "secret" not in rotated and "whsk_" not in run("list").output
    assert "invalid value for '--signature-scheme'" in run("create", "--url", sink.url("/x"),
                                                           "--signature-scheme", "v2").output.lower()


def test_replay_by_delivery_and_since(settings: Settings, world: World, sink: Sink) -> None:
    ok_json("create", "--url", sink.on("/replay", Reply(200)))
    created = jobs.fan_out_events(meta_events(world, 2))
    jobs.deliver(created)
    assert len(sink.at("/replay")) == 2

    replayed = ok_json("replay", "--delivery", str(created[0]))
    assert replayed["replayed"] == [created[0]] and replayed["status"] == "pending"
    jobs.deliver(jobs.sweep_deliveries())  # what beat + worker do
    third = sink.at("/replay")[2]
    assert third.headers["webhook-id"] == deliveries(id=created[0])[0].msg_id  # same id: consumers dedupe

    since = ok_json("replay", "--since", "2000-01-01T00:00:00Z")
    assert since["count"] == 2 and sorted(since["replayed"]) == sorted(created)
    jobs.deliver(jobs.sweep_deliveries())
    assert len(sink.at("/replay")) == 5
    assert ok_json("replay", "--since", "2999-01-01")["count"] == 0
    assert len(outbox_events(audit_events.DELIVERIES_REPLAYED)) == 3


def test_replay_errors(settings: Settings) -> None:
    assert "exactly one of" in fails("replay")
    assert "exactly one of" in fails("replay", "--delivery", "1", "--since", "0")
    assert "no webhook delivery with id 424242" in fails("replay", "--delivery", "424242")
    assert "not a time" in fails("replay", "--since", "yesterday-ish")


def test_replay_to_a_disabled_endpoint_is_refused(settings: Settings, world: World, sink: Sink) -> None:
    created = ok_json("create", "--url", sink.url("/off"))
    [delivery_id] = jobs.fan_out_events(meta_events(world))
    jobs.deliver([delivery_id])
    ok_json("disable", str(created["id"]))
    assert "is disabled; enable it before replaying" in fails("replay", "--delivery", str(delivery_id))


def test_deliveries_log(settings: Settings, world: World, sink: Sink) -> None:
    created = ok_json("create", "--url", sink.on("/log", Reply(500, b"nope"), Reply(200)))
    [delivery_id] = jobs.fan_out_events(meta_events(world))
    jobs.deliver([delivery_id])
    log = ok_json("deliveries", "--endpoint", str(created["id"]), "--attempts")["deliveries"]
    assert log[0]["id"] == delivery_id and log[0]["status"] == "pending"
    assert log[0]["attempt_log"][0]["status_code"] == 500 and log[0]["attempt_log"][0]["response_excerpt"] == "nope"
    assert run("deliveries").exit_code == 0
