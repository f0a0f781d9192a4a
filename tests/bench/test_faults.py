"""Short versions of the fault bench (``make faults``) on real processes: a few seconds of fault under a low, steady
load of creates, and exact counts afterwards: every request answered with a code the fault may cause, every event
written audited and delivered once, none lost, no webhook-id twice."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from bench.faults.load import REFUSED, RESET
from bench.faults.run import Pace, ScenarioRun, run_scenario
from bench.faults.scenarios import SCENARIOS

pytestmark = pytest.mark.integration

SHORT = Pace(rate=20.0, lead=2.0, tail=3.0, settle=25.0, licenses=8)  # a healthy stack settles in seconds


def run_short(name: str, backend: str, logs: Path) -> ScenarioRun:
    scenario = SCENARIOS[name]
    pace = replace(SHORT, fault_seconds=scenario.short_seconds, logs=logs)
    run = run_scenario(scenario, backend, pace)
    assert run.result.ran, f"{name} on {backend} was not run: {run.result.not_run}"
    return run


def assert_nothing_lost(run: ScenarioRun, logs: Path) -> None:
    result = run.result
    context = f"{result} (logs under {logs})"
    assert result.sent == sum(result.answers.values()) == len(run.samples), context
    assert result.written == result.audited == result.delivered, context
    assert (result.lost, result.duplicates) == (0, 0), context
    assert result.recovery_s is not None, context


def test_broker_stopped_answers_every_create_and_loses_no_event(tmp_path: Path) -> None:
    run = run_short("broker-stopped", "postgres-rabbitmq", tmp_path)
    result = run.result
    assert result.answers == {"453": result.sent}, "the response path never waits on the broker"
    assert result.written == result.audited == result.sent
    assert_nothing_lost(run, tmp_path)  # the thread-pool webhook worker consumes again after the reconnect


def assert_created_or_signed_503(run: ScenarioRun) -> None:
    answers = run.result.answers
    assert set(answers) == {"453", "5030"}, f"every answer a 453 or the signed 503: {answers}"
    assert run.result.written == answers["453"]


def test_database_stopped_answers_signed_503s_and_loses_no_event(tmp_path: Path) -> None:
    run = run_short("database-stopped", "embedded", tmp_path)
    assert_nothing_lost(run, tmp_path)
    assert_created_or_signed_503(run)


def test_a_full_disk_answers_signed_503s_and_loses_no_event(tmp_path: Path) -> None:
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("filling a filesystem of its own needs root (to mount a tmpfs); CI runs it as root")
    run = run_short("disk-full", "embedded", tmp_path)
    assert_nothing_lost(run, tmp_path)
    assert_created_or_signed_503(run)


def test_api_killed_loses_no_committed_event(tmp_path: Path) -> None:
    run = run_short("api-killed", "embedded", tmp_path)
    assert_nothing_lost(run, tmp_path)
    answers = run.result.answers
    assert set(answers) <= SCENARIOS["api-killed"].expected, answers
    assert answers.get(REFUSED, 0) + answers.get(RESET, 0) > 0, "the API really was down"
    # A request the kill cut off may have committed before it died: written counts it, its client saw a reset.
    assert answers["453"] <= run.result.written <= answers["453"] + answers.get(RESET, 0)


def test_failing_consumer_gets_every_event_once_on_the_first_retry(tmp_path: Path) -> None:
    run = run_short("consumer-500", "embedded", tmp_path)
    assert_nothing_lost(run, tmp_path)
    assert run.result.answers == {"453": run.result.sent}
    assert run.result.written == run.result.sent
    failed_during_fault = [lag for committed, _, lag in run.delivery_lags
                           if run.window is not None and run.window.fault_start <= committed < run.window.fault_end]
    assert failed_during_fault and max(failed_during_fault) > 1.0, "the consumer really refused some"
