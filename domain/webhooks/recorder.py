"""Records a worker process's finished attempts: one thread, one short transaction per group of results.

Results from any number of batches (tasks) share a transaction, so under load the database sees one commit
per group, not per attempt, and a task need not stay to record its own sends. A group is whatever finished
while the previous group was being recorded (at most ``RECORD_GROUP``): no result waits for a timer.
Once recorded, a claim is let go (``leases`` stops renewing it). While the database is unreachable a group waits
and is tried again (``record``): the consumer already has those attempts, and recording them once
the database is back, within their lease, spares it a second delivery. A group that still cannot be recorded
after ``RECORD_PATIENCE_SECONDS`` (or fails otherwise) is logged and dropped, and let go: its rows stay leased
until the lease runs out, then the sweeper re-rings them and the next claim records the attempt as lost.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

from domain.platform.database import is_connection_failure, unit_of_work
from domain.platform.logs import get_logger
from domain.platform.per_process import PerProcess
from domain.webhooks import delivery
from domain.webhooks.leases import Leases
from domain.webhooks.policy import RetryPolicy
from domain.webhooks.states import AttemptOutcome
from domain.webhooks.transport import SendResult

log = get_logger("keymeta.webhooks")
RECORD_GROUP = 200
RECORD_RETRY_SECONDS = 0.5  # how often a group tries again while the database is unreachable
RECORD_PATIENCE_SECONDS = 60.0
UNRECORDED = "unrecorded"  # an outcome in a report: the group's transaction failed


@dataclass
class Batch:
    """One caller's claims: what became of them, and an event set once every one is recorded."""

    size: int
    policy: RetryPolicy
    on_audit: Callable[[list[int]], None] | None = None  # ring ``audit.record`` for these (any thread)
    leases: Leases | None = None  # renews these claims until they are recorded or dropped
    outcomes: dict[str, int] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._left = self.size
        self._lock = threading.Lock()
        if not self.size:
            self.done.set()

    def snapshot(self) -> tuple[dict[str, int], int]:
        """(outcomes, attempts not recorded yet), as of now."""
        with self._lock:
            return dict(self.outcomes), self._left

    def settle(self, statuses: Sequence[str], audit_event_ids: list[int]) -> None:
        with self._lock:
            for status in statuses:
                self.outcomes[status] = self.outcomes.get(status, 0) + 1
            self._left -= len(statuses)
            finished = self._left <= 0
        if audit_event_ids and self.on_audit is not None:
            try:
                self.on_audit(audit_event_ids)
            except Exception as exc:  # noqa: BLE001 - the audit sweeper re-rings what this could not
                log.warning("webhooks.audit_ring_failed", error=str(exc), count=len(audit_event_ids))
        if finished:
            self.done.set()


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


def _record_group(results: list[tuple[delivery.Claim, SendResult]], policy: RetryPolicy) -> list[delivery.Recorded]:
    with unit_of_work() as session:
        return delivery.record_many(session, results, policy)


def _record_group_patiently(results: list[tuple[delivery.Claim, SendResult]], policy: RetryPolicy,
                            patience: float) -> list[delivery.Recorded]:
    """The group's one transaction, tried again every ``RECORD_RETRY_SECONDS`` while the database cannot serve,
    for at most ``patience`` seconds (nothing of it commits until one try does); any other error, or the end of
    patience, raises."""
    deadline = time.monotonic() + patience
    waiting = False
    while True:
        try:
            recorded = _record_group(results, policy)
        except Exception as exc:
            if not is_connection_failure(exc) or time.monotonic() >= deadline:
                raise
            if not waiting:
                log.warning("webhooks.record_waiting_for_database", error=str(exc), size=len(results))
                waiting = True
            time.sleep(RECORD_RETRY_SECONDS)
            continue
        if waiting:
            log.info("webhooks.record_resumed", size=len(results))
        return recorded


def record(results: list[tuple[delivery.Claim, SendResult]], policy: RetryPolicy,
           patience: float = RECORD_PATIENCE_SECONDS) -> list[delivery.Recorded]:
    """Record a group in one transaction, waiting up to ``patience`` for a database that went away; one by one
    if that still fails (e.g. a deadlock victim each time). An endpoint that answered again after failing gets
    its waiting retries brought forward, in a transaction of their own (if that fails they keep their
    schedule: nothing is lost)."""
    try:
        recorded = _record_group_patiently(results, policy, patience)
    except OperationalError as exc:
        log.warning("webhooks.record_group_failed", error=str(exc.orig), size=len(results))
        recorded = [item for result in results for item in _record_group([result], policy)]
    by_delivery = {claim.delivery_id: claim.endpoint_id for claim, _ in results}
    recovered = sorted({by_delivery[r.delivery_id] for r in recorded if r.ended_failure_streak})
    if recovered:
        try:
            with unit_of_work() as session:
                brought = delivery.bring_forward(session, recovered)
        except Exception as exc:  # noqa: BLE001 - the attempts are recorded; the retries keep their schedule
            log.warning("webhooks.bring_forward_failed", endpoint_ids=recovered, error=str(exc))
        else:
            log.info("webhooks.endpoint_recovered", endpoint_ids=recovered, retries_brought_forward=brought)
    return recorded


Finished = tuple[Batch, delivery.Claim, SendResult]


class Recorder:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self._outstanding = 0  # attempts expected and not recorded yet
        self._settled = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="webhook-record", daemon=True)
        self._thread.start()

    def expect(self, count: int) -> None:
        """``count`` attempts were started: ``drain`` waits for them too."""
        with self._settled:
            self._outstanding += count

    def put(self, batch: Batch, claim: delivery.Claim, result: SendResult) -> None:
        self._queue.put((batch, claim, result))

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every expected attempt to be recorded; how many were not."""
        with self._settled:
            self._settled.wait_for(lambda: self._outstanding <= 0, timeout)
            return self._outstanding

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < RECORD_GROUP:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            by_policy: dict[RetryPolicy, list[Finished]] = {}
            for item in items:
                by_policy.setdefault(item[0].policy, []).append(item)
            for policy, group in by_policy.items():
                self._record(group, policy)
            with self._settled:
                self._outstanding -= len(items)
                self._settled.notify_all()

    @staticmethod
    def _record(group: list[Finished], policy: RetryPolicy) -> None:
        try:
            recorded: list[delivery.Recorded] | None = record([(claim, result) for _, claim, result in group], policy)
        except Exception as exc:  # noqa: BLE001 - the thread must live on; the leases bring these rows back
            log.error("webhooks.record_failed", error=str(exc), size=len(group))
            recorded = None
        settled: dict[int, tuple[Batch, list[delivery.Claim], list[str], list[int]]] = {}
        for index, (batch, claim, result) in enumerate(group):
            _, claims, statuses, audit_ids = settled.setdefault(id(batch), (batch, [], [], []))
            claims.append(claim)
            if recorded is None:
                statuses.append(UNRECORDED)
                continue
            item = recorded[index]
            log_attempt(claim, result, item.status)
            statuses.append(item.status)
            audit_ids += item.audit_event_ids
        for batch, claims, statuses, audit_ids in settled.values():
            if batch.leases is not None:
                batch.leases.let_go(claims)
            batch.settle(statuses, audit_ids)


_recorder = PerProcess(Recorder)


def drain(timeout: float) -> int:
    """Before a worker process exits: wait for its attempts still running to be recorded (none started: 0)."""
    current = _recorder.made()
    return current.drain(timeout) if current is not None else 0


def recorder() -> Recorder:
    """This process's recorder, started on first use."""
    return _recorder.get()
