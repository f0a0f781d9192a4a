"""The transaction owner for webhook work, shared by the Celery tasks and the tests.

Like a CLI command or a task, it opens the transactions (``unit_of_work``); the services it calls only
flush. A delivery batch: one short claim transaction, then the POSTs on the process's delivery loop outside
any transaction (``dispatch``), each attempt recorded by the process's recorder (``recorder``) in a group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings, get_settings
from domain.signing.master_key import load_master_key
from domain.webhooks import delivery, dispatch, fan_out, leases, recorder, ssrf
from domain.webhooks.policy import RetryPolicy
from domain.webhooks.transport import SendLimits, SendResult


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(schedule=tuple(settings.webhook_retry_schedule), jitter=settings.webhook_retry_jitter,
                       retry_after_max=settings.webhook_retry_after_max_seconds,
                       disable_after=settings.webhook_disable_after_seconds)


def send_limits(settings: Settings) -> SendLimits:
    return SendLimits(connect_timeout=settings.webhook_connect_timeout_seconds,
                      read_timeout=settings.webhook_read_timeout_seconds,
                      total_timeout=settings.webhook_total_timeout_seconds,
                      excerpt_bytes=settings.webhook_response_excerpt_bytes,
                      allowed=ssrf.parse_allowed(settings.webhook_allowed_cidrs))


def fan_out_events(event_ids: Sequence[int]) -> list[int]:
    """Delivery ids created, none claimed (ring ``webhooks.deliver`` for them)."""
    with unit_of_work() as session:
        return fan_out.fan_out(session, event_ids).delivery_ids


def sweep_deliveries(settings: Settings | None = None) -> list[int]:
    """Delivery ids due now (ring ``webhooks.deliver`` for them)."""
    settings = settings or get_settings()
    with unit_of_work() as session:
        return delivery.sweep_due(session, rering_seconds=settings.webhook_rering_seconds,
                                  limit=settings.webhook_sweep_batch)


@dataclass
class DeliverReport:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # of the attempts recorded by the time it returned
    request_ids: list[str] = field(default_factory=list)  # distinct, of the claimed deliveries' events
    sending: int = 0  # attempts still running (or waiting for their endpoint's turn) when it returned


def claim_terms(settings: Settings) -> delivery.ClaimTerms:
    return delivery.ClaimTerms(master_key=load_master_key(settings), lease_seconds=settings.webhook_lease_seconds)


def deliver(delivery_ids: Sequence[int], settings: Settings | None = None, *, wait: float | None = None,
            on_audit: Callable[[list[int]], None] | None = None) -> DeliverReport:
    """Claim the due ones among ``delivery_ids`` and send them (``send_and_record``)."""
    settings = settings or get_settings()
    terms = claim_terms(settings)
    with unit_of_work() as session:
        claims = delivery.claim(session, delivery_ids, terms)
    return send_and_record(claims, settings, wait=wait, on_audit=on_audit)


@dataclass
class FanOutReport:
    fanned_out: fan_out.FanOutResult
    delivered: DeliverReport


def fan_out_claiming(event_ids: Sequence[int], settings: Settings | None = None) -> fan_out.FanOutResult:
    """Fan out; the first ``webhook_inline_deliveries`` deliveries are created claimed, for the caller to send
    (``send_and_record``) once it has rung ``webhooks.deliver`` for the ``unclaimed_ids``."""
    settings = settings or get_settings()
    with unit_of_work() as session:
        return fan_out.fan_out(session, event_ids, claim_first=settings.webhook_inline_deliveries,
                               terms=claim_terms(settings))


def fan_out_and_deliver(event_ids: Sequence[int], settings: Settings | None = None, *,
                        hand_on: Callable[[fan_out.FanOutResult], None] | None = None, wait: float | None = None,
                        on_audit: Callable[[list[int]], None] | None = None) -> FanOutReport:
    """Fan out, hand the unclaimed deliveries on (``hand_on``, before any POST, so they never wait for this
    task's sends), then send the claimed ones straight away: a webhook costs no second message, claim or
    doorbell wait. A crash after the fan-out commit leaves leased rows that the sweeper hands on."""
    settings = settings or get_settings()
    result = fan_out_claiming(event_ids, settings)
    if hand_on is not None:
        hand_on(result)
    return FanOutReport(result, send_and_record(result.claims, settings, wait=wait, on_audit=on_audit))


def send_and_record(claims: Sequence[delivery.Claim], settings: Settings, *, wait: float | None = None,
                    on_audit: Callable[[list[int]], None] | None = None) -> DeliverReport:
    """Start the POSTs of claimed deliveries on the process's delivery loop, outside any transaction; the
    process's recorder records each attempt as it ends. Returns once all are recorded, or after ``wait``
    seconds if given (the rest go on in the background, so a slow consumer never holds the caller's thread).
    ``on_audit`` is called, on the recorder's thread, with audit event ids as recording creates them."""
    report = DeliverReport(claimed=len(claims),
                           request_ids=list(dict.fromkeys(c.request_id for c in claims if c.request_id)))
    if not claims:
        return report
    held = leases.leases(settings.webhook_lease_seconds)
    batch = recorder.Batch(len(claims), retry_policy(settings), on_audit, held)
    record = recorder.recorder()
    held.hold(claims)  # renewed from now until recorded: the claim outlives any wait for its endpoint's turn
    try:
        limits = send_limits(settings)
        record.expect(len(claims))
        dispatch.dispatcher().submit(claims, limits, lambda claim, result: record.put(batch, claim, result))
    except BaseException:
        held.let_go(claims)  # nothing will record them: their leases bring them back
        raise
    batch.done.wait(wait)
    report.outcomes, report.sending = batch.snapshot()
    return report


def finish_sending(settings: Settings | None = None) -> int:
    """Wait (at most one attempt's time cap) for this process's attempts still running to be recorded, before
    it exits; how many were not (their leases bring them back)."""
    settings = settings or get_settings()
    return recorder.drain(settings.webhook_total_timeout_seconds + settings.webhook_connect_timeout_seconds)


def send(claims: Sequence[delivery.Claim], settings: Settings) -> list[tuple[delivery.Claim, SendResult]]:
    """The POSTs of claimed deliveries, nothing recorded: (claim, result) in finishing order."""
    return dispatch.dispatcher().send(claims, send_limits(settings))
