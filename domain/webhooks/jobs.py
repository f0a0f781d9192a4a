"""The transaction owner for webhook work, shared by the Celery tasks and the tests.

Like a CLI command or a task, it opens the transactions (``unit_of_work``); the services it calls only
flush. A delivery batch: one short claim transaction, the POSTs in parallel outside any transaction,
then one short transaction per recorded attempt.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

from domain.platform.database import unit_of_work
from domain.platform.logs import get_logger
from domain.platform.settings import Settings, get_settings
from domain.signing.master_key import load_master_key
from domain.webhooks import delivery, fan_out, ssrf
from domain.webhooks.policy import RetryPolicy
from domain.webhooks.states import AttemptOutcome
from domain.webhooks.transport import SendLimits, SendResult

log = get_logger("keymeta.webhooks")
RECORD_GROUP = 50
RECORD_INTERVAL = 0.25  # seconds


_local = threading.local()


def _send_pool(parallel: int) -> concurrent.futures.ThreadPoolExecutor:
    """This thread's own send threads, kept between tasks: starting threads for every batch cost more CPU than
    the batch's POSTs. One pool per task thread, so a slow consumer holds up only the task that sends to it."""
    pool: concurrent.futures.ThreadPoolExecutor | None = getattr(_local, "send_pool", None)
    if pool is None or getattr(_local, "send_pool_size", None) != parallel:
        if pool is not None:
            pool.shutdown(wait=False)
        pool = concurrent.futures.ThreadPoolExecutor(parallel, thread_name_prefix="webhook-send")
        _local.send_pool, _local.send_pool_size = pool, parallel
    return pool


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
    outcomes: dict[str, int] = field(default_factory=dict)
    audit_event_ids: list[int] = field(default_factory=list)  # ring ``audit.record`` for these
    request_ids: list[str] = field(default_factory=list)  # distinct, of the claimed deliveries' events


def error_kind(error: str | None) -> str | None:
    """The leading words of an attempt's error ("connect timeout", "address refused", …) for the log line.

    The full text stays in the attempt row: it may quote a redirect's Location or an exception message.
    """
    if error is None:
        return None
    return re.split(r"[:(;]", error, maxsplit=1)[0].strip()[:64] or None


def log_attempt(claim: delivery.Claim, result: SendResult, recorded_status: str) -> None:
    """One line per attempt. Never the URL, the secret, the signature, the body or the response."""
    (log.info if result.ok else log.warning)(
        "webhooks.attempt", delivery_id=claim.delivery_id, endpoint_id=claim.endpoint_id,
        attempt_no=claim.attempt_no, outcome=AttemptOutcome.SUCCESS if result.ok else AttemptOutcome.FAILURE,
        status_code=result.status_code, duration_ms=result.duration_ms, delivery_status=recorded_status,
        error_kind=error_kind(result.error), request_id=claim.request_id)


def claim_terms(settings: Settings) -> delivery.ClaimTerms:
    # An attempt lasts at most the total cap (plus DNS and the record transaction): the lease outlives it.
    per_attempt = settings.webhook_total_timeout_seconds + settings.webhook_connect_timeout_seconds
    return delivery.ClaimTerms(master_key=load_master_key(settings),
                               lease_seconds=max(settings.webhook_lease_seconds, 2 * per_attempt),
                               parallel=settings.webhook_send_threads, attempt_seconds=per_attempt)


def deliver(delivery_ids: Sequence[int], settings: Settings | None = None) -> DeliverReport:
    settings = settings or get_settings()
    terms = claim_terms(settings)
    with unit_of_work() as session:
        claims = delivery.claim(session, delivery_ids, terms)
    return send_and_record(claims, settings)


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
                        hand_on: Callable[[fan_out.FanOutResult], None] | None = None) -> FanOutReport:
    """Fan out, hand the unclaimed deliveries on (``hand_on``, before any POST, so they never wait for this
    task's sends), then send the claimed ones straight away: a webhook costs no second message, claim or
    doorbell wait. A crash after the fan-out commit leaves leased rows that the sweeper hands on."""
    settings = settings or get_settings()
    result = fan_out_claiming(event_ids, settings)
    if hand_on is not None:
        hand_on(result)
    return FanOutReport(result, send_and_record(result.claims, settings))


def send_and_record(claims: Sequence[delivery.Claim], settings: Settings) -> DeliverReport:
    """The POSTs of claimed deliveries, outside any transaction, and the record of every attempt."""
    policy, limits = retry_policy(settings), send_limits(settings)
    parallel = settings.webhook_send_threads
    report = DeliverReport(claimed=len(claims),
                           request_ids=list(dict.fromkeys(c.request_id for c in claims if c.request_id)))
    if not claims:
        return report

    # POSTs run on ``parallel`` threads; this thread records finished attempts in small groups (one short
    # transaction per group, never during a POST), so the database sees a few commits per batch, not one per
    # attempt. A result waits at most RECORD_INTERVAL before it is recorded.
    def record_group(results: list[tuple[delivery.Claim, SendResult]]) -> list[delivery.Recorded]:
        with unit_of_work() as session:
            return delivery.record_many(session, results, policy)

    def record(results: list[tuple[delivery.Claim, SendResult]]) -> None:
        if not results:
            return
        try:
            recorded = record_group(results)
        except OperationalError as exc:  # e.g. a deadlock victim: record one by one instead
            log.warning("webhooks.record_group_failed", error=str(exc.orig), size=len(results))
            recorded = [item for result in results for item in record_group([result])]
        for (claim_, result), item in zip(results, recorded, strict=True):
            log_attempt(claim_, result, item.status)
            report.outcomes[item.status] = report.outcomes.get(item.status, 0) + 1
            report.audit_event_ids.extend(item.audit_event_ids)

    if len(claims) == 1:  # sent on this thread: no hand-over to a send thread and back
        record([(claims[0], delivery.send(claims[0], limits))])
        return report
    pool = _send_pool(parallel)
    running = {pool.submit(delivery.send, claim, limits): claim for claim in claims}
    finished: list[tuple[delivery.Claim, SendResult]] = []
    last_recorded = time.monotonic()
    while running:
        done, _ = concurrent.futures.wait(running, timeout=RECORD_INTERVAL,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        finished += [(running.pop(future), future.result()) for future in done]
        if len(finished) >= RECORD_GROUP or time.monotonic() - last_recorded >= RECORD_INTERVAL:
            record(finished)
            finished, last_recorded = [], time.monotonic()
    record(finished)
    return report
