"""The fault bench's parts that need no stack: the row computed from synthetic timelines (no clock), the table, the
proxy's black hole, and scenarios that cannot be set up coming back "not run" with their reason."""

from __future__ import annotations

import socket
import time

import pytest

from bench.faults import disk
from bench.faults.load import REFUSED, TIMEOUT, Sample, answer_code
from bench.faults.measures import Receipt, ScenarioResult, Window, check_goals, summarize
from bench.faults.proxy import TcpProxy
from bench.faults.run import Pace, run_scenario
from bench.faults.scenarios import SCENARIOS
from bench.faults.table import row, summary, to_markdown

WINDOW = Window(load_start=1000.0, fault_start=1005.0, fault_end=1010.0, load_end=1020.0)
RATE = 10  # requests per second in the synthetic timelines


def steady(outcome_during_fault: str = "453", waited: float = 0.01, slow_after: float = 0.0) -> list[Sample]:
    """A request every 0.1 s; ``slow_after``: seconds after the fault during which requests wait 1 s."""
    samples = []
    for i in range(int((WINDOW.load_end - WINDOW.load_start) * RATE)):
        due = WINDOW.load_start + i / RATE
        in_fault = WINDOW.fault_start <= due < WINDOW.fault_end
        slow = WINDOW.fault_end <= due < WINDOW.fault_end + slow_after
        samples.append(Sample(due=due, waited=1.0 if slow else waited,
                              outcome=outcome_during_fault if in_fault else "453", http_status=200))
    return samples


def events(samples: list[Sample]) -> dict[int, float]:
    return {i: s.due + s.waited for i, s in enumerate(samples) if s.outcome == "453"}


def on_time(committed: dict[int, float], lag: float = 0.1) -> list[Receipt]:
    return [Receipt(at + lag, meta_id, f"msg_{meta_id}") for meta_id, at in committed.items()]


def test_a_fault_that_delays_nothing_recovers_at_once_and_loses_nothing() -> None:
    samples = steady()
    committed = events(samples)
    result = summarize("x", samples, WINDOW, committed, len(committed), on_time(committed), endpoints=1)
    assert (result.sent, result.written, result.delivered, result.lost, result.duplicates) == (200, 200, 200, 0, 0)
    assert result.recovery_s == 0.0
    assert result.answers == {"453": 200}


def test_lost_is_written_times_endpoints_minus_distinct_webhook_ids_accepted() -> None:
    samples = steady()
    committed = events(samples)
    receipts = on_time(committed)
    receipts = [*receipts[:-3], receipts[0]]  # three never arrive, one arrives twice
    result = summarize("x", samples, WINDOW, committed, len(committed), receipts, endpoints=1)
    assert (result.delivered, result.lost, result.duplicates) == (197, 3, 1)
    assert result.recovery_s is None, "an event never delivered is no recovery"


def test_recovery_waits_for_the_last_late_delivery() -> None:
    samples = steady()
    committed = events(samples)
    receipts = [Receipt(WINDOW.fault_end + 7.5 if WINDOW.fault_start <= at < WINDOW.fault_end else at + 0.1,
                        meta_id, f"msg_{meta_id}") for meta_id, at in committed.items()]
    result = summarize("x", samples, WINDOW, committed, len(committed), receipts, endpoints=1)
    assert result.recovery_s == pytest.approx(7.5)


def test_recovery_waits_for_create_latency_back_to_normal() -> None:
    samples = steady(slow_after=3.5)
    committed = events(samples)
    result = summarize("x", samples, WINDOW, committed, len(committed), on_time(committed), endpoints=1)
    assert result.recovery_s == pytest.approx(4.0)  # half of the fourth one-second bucket is still slow


def test_one_slow_request_among_many_is_not_a_relapse() -> None:
    samples = steady()
    last = samples[-1]
    samples[-1] = Sample(last.due, 1.0, last.outcome, last.http_status)
    committed = events(samples)
    result = summarize("x", samples, WINDOW, committed, len(committed), on_time(committed), endpoints=1)
    assert result.recovery_s == 0.0


def test_refusals_during_the_fault_count_as_answers_by_code_not_as_5xx() -> None:
    samples = steady(outcome_during_fault=REFUSED)
    samples = [Sample(s.due, s.waited, s.outcome, None if s.outcome == REFUSED else 200) for s in samples]
    committed = events(samples)
    result = summarize("x", samples, WINDOW, committed, len(committed), on_time(committed), endpoints=1)
    assert result.answers == {"453": 150, REFUSED: 50}
    assert result.server_errors == 0


def test_a_load_that_ends_abnormal_has_not_recovered() -> None:
    samples = steady(slow_after=100)
    committed = events(samples)
    result = summarize("x", samples, WINDOW, committed, len(committed), on_time(committed), endpoints=1)
    assert result.recovery_s is None


def test_goals_name_each_one_missed() -> None:
    result = ScenarioResult("x", answers={"453": 5, TIMEOUT: 1, "http-500": 2}, p99_before_ms=10, p99_fault_ms=13,
                            written=5, audited=4, delivered=4, lost=1, duplicates=2, recovery_s=12.0)
    check_goals(result, recovery_goal_s=10, p99_tolerance=0.2, known_outcomes=frozenset({"453"}))
    assert result.problems == ["1 events lost", "2 duplicate webhook-ids", "1 events not audited",
                               "1 requests hung past the client's timeout", f"unexpected outcomes: http-500, {TIMEOUT}",
                               "p99 during the fault 13 ms is more than 20% above 10 ms",
                               "recovered in 12.0 s, goal 10 s"]


def test_answer_codes_of_envelopes_plain_errors_and_other_bodies() -> None:
    assert answer_code(200, b'{"response": {"code": 453}}') == "453"
    assert answer_code(503, b'{"error": "database unavailable, retry shortly", "code": 5030}') == "5030"
    assert answer_code(500, b"Internal Server Error") == "http-500"


def test_a_scenario_without_a_server_to_stop_is_not_run_with_its_reason() -> None:
    run = run_scenario(SCENARIOS["broker-stopped"], "embedded", Pace())
    assert not run.result.ran and "filesystem transport" in run.result.not_run
    line = row(run.result)
    assert line[-1].startswith("NOT RUN: ") and "ok" not in line
    assert summary([run.result]) == "0 met every goal, 0 missed one, 1 not run (broker-stopped)"
    assert "NOT RUN" in to_markdown([run.result])


def test_a_disk_that_cannot_be_limited_is_not_run_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk.os, "geteuid", lambda: 1000)
    run = run_scenario(SCENARIOS["disk-full"], "embedded", Pace())
    assert run.result.not_run == "mounting a size-limited filesystem needs root; this bench runs as uid 1000"
    assert not run.result.problems and run.window is None


def test_the_black_holed_proxy_lets_connects_time_out_instead_of_refusing() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        proxy = TcpProxy("127.0.0.1", server.getsockname()[1])
        try:
            proxy.black_hole()
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5).close()
            assert time.monotonic() - started >= 0.5
            proxy.cut()
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5).close()
            proxy.restore()
            socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5).close()
        finally:
            proxy.close()


def test_two_normal_seconds_between_slow_ones_are_not_yet_a_recovery() -> None:
    relapse = (WINDOW.fault_end + 2, WINDOW.fault_end + 3)
    samples = [Sample(s.due, 1.0 if relapse[0] <= s.due < relapse[1] else s.waited, s.outcome, s.http_status)
               for s in steady()]
    committed = events(samples)
    result = summarize("x", samples, WINDOW, committed, len(committed), on_time(committed), endpoints=1)
    assert result.recovery_s == pytest.approx(3.0)
