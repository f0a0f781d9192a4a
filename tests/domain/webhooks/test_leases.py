"""Claims stay leased while their worker holds them, and only those: against the real database."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import delivery, jobs
from domain.webhooks.leases import Leases
from domain.webhooks.models import WebhookDelivery
from tests.conftest import World
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import claimed, register, wait_until


def leased_until(delivery_id: int) -> dt.datetime | None:
    with unit_of_work() as session:
        return session.scalar(select(WebhookDelivery.locked_until).where(WebhookDelivery.id == delivery_id))


def test_renewal_extends_only_claims_still_held_by_their_attempt(settings: Settings, world: World, sink: Sink,
                                                                 master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    held, taken_over, let_go = claimed(master_key, world, 3)
    with unit_of_work() as session:  # the lease of `taken_over` ran out and another worker claimed attempt 2
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == taken_over.delivery_id)
                        .values(attempts=2))
    before = {c.delivery_id: leased_until(c.delivery_id) for c in (held, taken_over, let_go)}
    keeper = Leases(600.0, start=False)
    keeper.hold([held, taken_over, let_go])
    keeper.let_go([let_go])
    assert keeper.held() == sorted([(held.delivery_id, 1), (taken_over.delivery_id, 1)])

    assert keeper.renew() == 1
    renewed = leased_until(held.delivery_id)
    assert renewed is not None and before[held.delivery_id] is not None
    assert renewed - before[held.delivery_id] > dt.timedelta(seconds=500)  # 600 s from now, was 10 s
    assert leased_until(taken_over.delivery_id) == before[taken_over.delivery_id]
    assert leased_until(let_go.delivery_id) == before[let_go.delivery_id]


def test_renewal_skips_a_row_being_recorded_instead_of_waiting_for_it(settings: Settings, world: World, sink: Sink,
                                                                      master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    claims = claimed(master_key, world, 2)
    keeper = Leases(600.0, start=False)
    keeper.hold(claims)
    with unit_of_work() as recording:  # as the recorder holds a group's rows, in another transaction
        recording.execute(select(WebhookDelivery.id).where(WebhookDelivery.id == claims[0].delivery_id)
                          .with_for_update())
        assert keeper.renew() == 1  # the other one; the locked row waits for the next round
        assert leased_until(claims[1].delivery_id) != leased_until(claims[0].delivery_id)
    assert keeper.renew() == 2


def test_a_later_attempt_supersedes_an_earlier_one_never_the_reverse(settings: Settings, world: World, sink: Sink,
                                                                     master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    [claim] = claimed(master_key, world, 1)
    later = delivery.Claim(**{**claim.__dict__, "attempt_no": claim.attempt_no + 1})
    keeper = Leases(10.0, start=False)
    keeper.hold([later])
    keeper.hold([claim])  # the earlier attempt's hold arrives late
    assert keeper.held() == [(claim.delivery_id, later.attempt_no)]


def test_let_go_ignores_another_attempt_of_the_same_delivery(settings: Settings, world: World, sink: Sink,
                                                             master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    [claim] = claimed(master_key, world, 1)
    keeper = Leases(10.0, start=False)
    keeper.hold([claim])
    keeper.let_go([delivery.Claim(**{**claim.__dict__, "attempt_no": claim.attempt_no + 1})])
    assert keeper.held() == [(claim.delivery_id, claim.attempt_no)]


def test_a_held_claim_outlives_its_lease_and_a_recorded_one_is_let_go(settings: Settings, world: World, sink: Sink,
                                                                      master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    [claim] = claimed(master_key, world, 1, lease_seconds=1.0)
    first = leased_until(claim.delivery_id)
    assert first is not None
    keeper = Leases(1.0)  # its thread renews every third of a second
    try:
        keeper.hold([claim])
        wait_until(lambda: (leased_until(claim.delivery_id) or first) > first + dt.timedelta(seconds=1.5))
        assert jobs.deliver([claim.delivery_id]).claimed == 0  # never due while held

        keeper.let_go([claim])
        wait_until(lambda: jobs.deliver([claim.delivery_id]).claimed == 1)  # due once the lease runs out
    finally:
        keeper.stop()


def test_send_and_record_holds_claims_until_they_are_recorded(settings: Settings, world: World, sink: Sink,
                                                              master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200, delay=0.3)))  # inside the tests' 0.5 s read timeout
    claims = claimed(master_key, world, 2)
    report = jobs.send_and_record(claims, settings, wait=0.0)
    keeper = jobs.leases.leases(settings.webhook_lease_seconds)
    assert report.sending == 2
    assert {d for d, _ in keeper.held()} >= {c.delivery_id for c in claims}
    wait_until(lambda: not {d for d, _ in keeper.held()} & {c.delivery_id for c in claims})
    with unit_of_work() as session:
        statuses = set(session.scalars(select(WebhookDelivery.status)
                                       .where(WebhookDelivery.id.in_([c.delivery_id for c in claims]))))
    assert statuses == {"succeeded"}


def test_a_dead_workers_claim_is_rung_by_the_first_sweep_after_its_lease(settings: Settings, world: World,
                                                                          sink: Sink, master_key: bytes) -> None:
    register(sink.on("/hook", Reply(200)))
    [claim] = claimed(master_key, world, 1, lease_seconds=1.0)  # and its worker dies: nobody renews it
    lease_end = leased_until(claim.delivery_id)
    assert lease_end is not None
    with unit_of_work() as session:  # re-rings wait a minute, yet an expired claim is rung at once
        assert delivery.sweep_due(session, rering_seconds=60, limit=10, now=lease_end) == []
        assert delivery.sweep_due(session, rering_seconds=60, limit=10,
                                  now=lease_end + dt.timedelta(milliseconds=1)) == [claim.delivery_id]
