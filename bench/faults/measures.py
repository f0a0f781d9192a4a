"""What one scenario's run amounts to: its table row, computed from timestamps alone (pure, no I/O, no clock).

Inputs are wall-clock seconds from three stampers on one machine: the load's samples (when each create was
due), the outbox (when each event committed) and the sink (when each delivery was accepted).

Definitions (docs/faults.md):
- written: created events in the outbox; audited: those with an audit record; delivered: distinct webhook-ids
  the sink accepted (2xx) for them; lost = written × endpoints − delivered; duplicates: webhook-ids the sink
  accepted more than once.
- normal create latency: a one-second bucket (by due time) whose answers are all 453 and whose p90 wait is at
  most ``LATENCY_FACTOR`` × the p99 before the fault (never below that p99 + ``LATENCY_SLACK``): one slow request
  among fifty is noise on a shared machine, a tenth of a second's requests is not.
- normal webhook lag (accepted − committed): at most ``LAG_FACTOR`` × the p99 lag before the fault, never below
  ``LAG_FLOOR``. "Before the fault" is what was answered, or accepted, before it began (after a warm-up).
- recovered: the later of (a) the start of the first ``STABLE_BUCKETS`` normal buckets in a row after the fault
  and (b) the last acceptance of a delivery whose lag was not normal; time to recover is that minus the fault's
  end (0 when nothing after the fault was abnormal). None when an event is never delivered or the load after
  the fault never has that many normal buckets in a row: the run did not recover.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.faults.load import TIMEOUT, Sample

CREATED = "453"
LATENCY_FACTOR = 2.0
LATENCY_SLACK = 0.05
LAG_FACTOR = 2.0
LAG_FLOOR = 1.0
BUCKET = 1.0
BUCKET_QUANTILE = 0.9
STABLE_BUCKETS = 3  # normal seconds in a row that make a recovery, so that one later blip is not a relapse
WARMUP = 1.0  # the first second of load opens connections and fills caches: not part of the baseline


@dataclass(frozen=True)
class Window:
    """The run's timeline, wall-clock seconds: load from ``load_start`` to ``load_end``, fault in between."""

    load_start: float
    fault_start: float
    fault_end: float
    load_end: float


@dataclass(frozen=True)
class Receipt:
    """One delivery the sink accepted."""

    at: float
    meta_id: int
    webhook_id: str


@dataclass
class ScenarioResult:
    scenario: str
    sent: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0  # answers with an HTTP status >= 500
    p99_before_ms: float = math.nan
    p99_fault_ms: float = math.nan
    max_wait_ms: float = math.nan
    written: int = 0
    audited: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    recovery_s: float | None = None
    not_run: str = ""  # why the scenario could not be set up; empty when it ran
    problems: list[str] = field(default_factory=list)  # goals the run missed

    @property
    def ran(self) -> bool:
        return not self.not_run


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def baseline_samples(samples: Iterable[Sample], window: Window) -> list[Sample]:
    """Requests due after the warm-up and answered before the fault began."""
    return [s for s in samples if window.load_start + WARMUP <= s.due and s.due + s.waited < window.fault_start]


def fault_samples(samples: Iterable[Sample], window: Window) -> list[Sample]:
    return [s for s in samples if window.fault_start <= s.due < window.fault_end]


def latency_bound(p99_before: float) -> float:
    return max(LATENCY_FACTOR * p99_before, p99_before + LATENCY_SLACK)


def lag_bound(p99_lag_before: float) -> float:
    return max(LAG_FACTOR * p99_lag_before, LAG_FLOOR) if not math.isnan(p99_lag_before) else LAG_FLOOR


def create_recovered_at(samples: Sequence[Sample], window: Window, bound: float) -> float | None:
    """Start of the first ``STABLE_BUCKETS`` normal buckets in a row after the fault; None if the load has none."""
    buckets: dict[int, list[Sample]] = {}
    for sample in samples:
        if sample.due >= window.fault_end:
            buckets.setdefault(int((sample.due - window.fault_end) // BUCKET), []).append(sample)

    def normal(index: int) -> bool:
        bucket = buckets.get(index, [])
        return bool(bucket) and all(s.outcome == CREATED for s in bucket) \
            and percentile([s.waited for s in bucket], BUCKET_QUANTILE) <= bound

    for index in sorted(buckets):
        if all(normal(index + k) for k in range(STABLE_BUCKETS)):
            return window.fault_end + index * BUCKET
    return None


def lags(committed: Mapping[int, float], receipts: Iterable[Receipt]) -> list[tuple[float, float, float]]:
    """(committed, accepted, lag) of each first acceptance of a webhook-id whose event is known."""
    first: dict[str, Receipt] = {}
    for receipt in receipts:
        known = first.get(receipt.webhook_id)
        if receipt.meta_id in committed and (known is None or receipt.at < known.at):
            first[receipt.webhook_id] = receipt
    return sorted((committed[r.meta_id], r.at, r.at - committed[r.meta_id]) for r in first.values())


def webhooks_recovered_at(delivery_lags: Sequence[tuple[float, float, float]], window: Window,
                          bound: float) -> float:
    late = [accepted for _, accepted, lag in delivery_lags if lag > bound]
    return max([window.fault_end, *late])


def summarize(scenario: str, samples: Sequence[Sample], window: Window, committed: Mapping[int, float],
              audited: int, receipts: Sequence[Receipt], endpoints: int) -> ScenarioResult:
    """The row of a scenario that ran; ``committed``: meta_id -> commit time of each created event."""
    result = ScenarioResult(scenario=scenario, sent=len(samples))
    result.answers = dict(sorted(Counter(s.outcome for s in samples).items()))
    result.server_errors = sum(1 for s in samples if s.http_status is not None and s.http_status >= 500)
    before = [s.waited for s in baseline_samples(samples, window) if s.outcome == CREATED]
    p99_before = percentile(before, 0.99)
    result.p99_before_ms = p99_before * 1000
    result.p99_fault_ms = percentile([s.waited for s in fault_samples(samples, window)], 0.99) * 1000
    result.max_wait_ms = max((s.waited for s in samples), default=math.nan) * 1000
    result.written, result.audited = len(committed), audited
    accepted = Counter(r.webhook_id for r in receipts if r.meta_id in committed)
    result.delivered = len(accepted)
    result.duplicates = sum(1 for count in accepted.values() if count > 1)
    result.lost = result.written * endpoints - result.delivered
    delivery_lags = lags(committed, receipts)
    lag_before = percentile([lag for at, accepted, lag in delivery_lags
                             if window.load_start + WARMUP <= at and accepted < window.fault_start], 0.99)
    create_at = create_recovered_at(samples, window, latency_bound(p99_before))
    if create_at is not None and result.lost == 0:
        webhooks_at = webhooks_recovered_at(delivery_lags, window, lag_bound(lag_before))
        result.recovery_s = max(create_at, webhooks_at) - window.fault_end
    return result


def check_goals(result: ScenarioResult, recovery_goal_s: float, p99_tolerance: float | None,
                known_outcomes: frozenset[str]) -> None:
    """Append to ``result.problems`` every goal the run missed."""
    if result.lost:
        result.problems.append(f"{result.lost} events lost")
    if result.duplicates:
        result.problems.append(f"{result.duplicates} duplicate webhook-ids")
    if result.audited != result.written:
        result.problems.append(f"{result.written - result.audited} events not audited")
    if result.answers.get(TIMEOUT):
        result.problems.append(f"{result.answers[TIMEOUT]} requests hung past the client's timeout")
    unknown = sorted(set(result.answers) - known_outcomes)
    if unknown:
        result.problems.append(f"unexpected outcomes: {', '.join(unknown)}")
    if p99_tolerance is not None and not result.p99_fault_ms <= result.p99_before_ms * (1 + p99_tolerance):
        result.problems.append(f"p99 during the fault {result.p99_fault_ms:.0f} ms is more than "
                               f"{p99_tolerance:.0%} above {result.p99_before_ms:.0f} ms")
    if result.recovery_s is None:
        result.problems.append("did not recover")
    elif result.recovery_s > recovery_goal_s:
        result.problems.append(f"recovered in {result.recovery_s:.1f} s, goal {recovery_goal_s:g} s")
