"""A host name whose DNS answer changes between attempts (rebinding) from an allowed address to the cloud
metadata address: the next attempt is refused before any byte goes out, recorded with the reason, and the
connection kept alive to the old address is never used for the new answer."""

from __future__ import annotations

import ipaddress

import pytest
from sqlalchemy import select

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import dispatch, jobs, ssrf
from domain.webhooks.models import WebhookAttempt
from tests.conftest import World
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import deliveries, meta_events, register, wait_until

HOST = "hooks.rebind.test"


class Dns:
    """The resolver's answer for ``HOST``, changed by the test as an attacker changes their DNS record."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked = 0

    def resolve(self, host: str, port: int, timeout: float) -> list[ssrf.Address]:
        assert host == HOST
        self.asked += 1
        return [ipaddress.ip_address(self.answer)]


async def _idle(port: int) -> int:
    return dispatch.dispatcher().connections.idle_count(port)


def idle_to(port: int) -> int:
    return dispatch.dispatcher().run(_idle(port))


def attempts_of(delivery_id: int) -> list[WebhookAttempt]:
    with unit_of_work() as session:
        return list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
                                    .order_by(WebhookAttempt.attempt_no)))


def test_a_dns_answer_changed_to_the_metadata_address_is_refused_on_the_next_attempt(
        settings: Settings, world: World, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    dns = Dns("127.0.0.1")  # loopback is allowed in tests (KEYMETA_WEBHOOK_ALLOWED_CIDRS=127.0.0.0/8)
    monkeypatch.setattr(ssrf, "resolve", dns.resolve)
    sink.on("/hook", Reply(500), Reply(200))
    register(f"http://{HOST}:{sink.port}/hook")
    [delivery_id] = jobs.fan_out_events(meta_events(world))

    assert jobs.deliver([delivery_id], settings).outcomes == {"pending": 1}  # a 500: retried on the schedule
    assert idle_to(sink.port) == 1  # the first attempt's connection to 127.0.0.1 is kept alive
    opened = dispatch.dispatcher().connections.opened

    dns.answer = "169.254.169.254"
    asked = dns.asked
    wait_until(lambda: jobs.deliver([delivery_id], settings).claimed, message="the retry to come due")

    first, second = attempts_of(delivery_id)
    assert (first.outcome, first.status_code, first.address) == ("failure", 500, "127.0.0.1")
    assert (second.outcome, second.status_code, second.address) == ("failure", None, None)
    assert second.error == f"address refused: refused {HOST}: 169.254.169.254 is a cloud metadata address"
    assert dns.asked == asked + 1  # resolved again for this attempt, not served from the first answer
    # Nothing was sent: not over the connection kept to the old address, not over a new one.
    assert len(sink.at("/hook")) == 1
    assert dispatch.dispatcher().connections.opened == opened and idle_to(sink.port) == 1
    [row] = deliveries(id=delivery_id)
    assert row.status == "pending" and row.attempts == 2 and (row.last_error or "").startswith("address refused")


def test_a_changed_answer_gets_its_own_connection_never_the_one_kept_to_the_old_address(
        settings: Settings, world: World, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    dns = Dns("127.0.0.1")
    monkeypatch.setattr(ssrf, "resolve", dns.resolve)
    sink.on("/hook", Reply(500), Reply(200))
    register(f"http://{HOST}:{sink.port}/hook")
    [delivery_id] = jobs.fan_out_events(meta_events(world))
    assert jobs.deliver([delivery_id], settings).outcomes == {"pending": 1}
    assert idle_to(sink.port) == 1

    dns.answer = "127.0.0.2"  # allowed too, but the sink listens on 127.0.0.1 only: reusing would have succeeded
    wait_until(lambda: jobs.deliver([delivery_id], settings).claimed, message="the retry to come due")

    second = attempts_of(delivery_id)[1]
    assert second.address == "127.0.0.2" and (second.error or "").startswith("connection failed")
    assert len(sink.at("/hook")) == 1 and idle_to(sink.port) == 1
