"""One scenario, start to end: a fresh stack, a first event through the whole pipeline, the steady load, the fault
in the middle of it, then waiting until every event is audited and delivered (or the settle time is up), and the
row. A scenario the machine cannot set up comes back "not run" with the reason, never as a pass.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.faults.disk import SetupImpossible
from bench.faults.load import CREATE_PATH, Sample, SteadyLoad
from bench.faults.measures import ScenarioResult, Window, check_goals, lags, summarize
from bench.faults.scenarios import Clock, Scenario
from bench.faults.stack import FaultStack, StackOptions, running_stack
from bench.world import BenchWorld


class WallClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Pace:
    """How hard and how long: the load's rate, the stretch of load before and after the fault, the fault's
    length (None: the scenario's own), the client's timeout and the longest wait for the follow-up work."""

    rate: float = 50.0
    lead: float = 6.0
    tail: float = 20.0
    fault_seconds: float | None = None
    timeout: float = 10.0
    settle: float = 420.0
    licenses: int = 64
    endpoints: int = 1
    settings: Mapping[str, str] = field(default_factory=dict)
    logs: Path | None = None  # where each scenario's process logs are kept (<logs>/<backend>-<scenario>/)


@dataclass
class ScenarioRun:
    """The row and what the chart draws."""

    result: ScenarioResult
    backend: str
    window: Window | None = None
    samples: list[Sample] = field(default_factory=list)
    delivery_lags: list[tuple[float, float, float]] = field(default_factory=list)  # (committed, accepted, lag)


def say(message: str) -> None:
    print(f"faults: {message}", file=sys.stderr, flush=True)


def keep_logs(stack: FaultStack, into: Path) -> None:
    """Copy the processes' logs (the embedded server's too) out of the run's temp dir before it goes."""
    into.mkdir(parents=True, exist_ok=True)
    for log in [*stack.log_dir.glob("*.log"), stack.var_dir / "postgres.log"]:
        if log.exists():
            shutil.copyfile(log, into / log.name)


def first_event_through(stack: FaultStack, timeout: float = 60.0) -> int:
    """Create one meta row and wait until its event is audited and delivered: every process is up and consuming
    before the measured load starts. Its meta id, left out of the counts."""
    reply = httpx.post(stack.api_url + CREATE_PATH, data=stack.world.form(key="faults-first"), timeout=10.0)
    meta_id = int(reply.json()["response"]["meta_id"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, audited = stack.committed_and_audited()
        if meta_id in audited and any(r.meta_id == meta_id for r in stack.receipts()):
            return meta_id
        time.sleep(0.3)
    raise RuntimeError(f"the first event was not audited and delivered within {timeout:g} s "
                       f"(logs under {stack.log_dir})")


def settle(stack: FaultStack, expected_deliveries: int, timeout: float, clock: Clock) -> None:
    """Wait until every created event is audited and every delivery accepted, or ``timeout`` has passed."""
    deadline = clock.now() + timeout
    while clock.now() < deadline:
        committed, audited = stack.committed_and_audited()
        delivered = {r.webhook_id for r in stack.receipts() if r.meta_id in committed}
        if len(audited) == len(committed) and len(delivered) >= len(committed) * expected_deliveries:
            return
        clock.sleep(1.0)


def run_scenario(scenario: Scenario, backend: str, pace: Pace, clock: Clock | None = None) -> ScenarioRun:
    clock = clock or WallClock()
    reason = scenario.unavailable(backend)
    if reason is not None:
        return ScenarioRun(ScenarioResult(scenario.name, not_run=reason), backend)
    options = StackOptions(backend=backend, endpoints=pace.endpoints, licenses=pace.licenses,
                           settings=dict(pace.settings), limited_disk=scenario.limited_disk)
    fault_seconds = scenario.seconds if pace.fault_seconds is None else pace.fault_seconds
    try:
        with running_stack(options) as stack:
            try:
                return _measured(scenario, stack, pace, fault_seconds, clock)
            finally:
                if pace.logs is not None:
                    keep_logs(stack, pace.logs / f"{backend}-{scenario.name}")
    except SetupImpossible as exc:
        return ScenarioRun(ScenarioResult(scenario.name, not_run=str(exc)), backend)


def _measured(scenario: Scenario, stack: FaultStack, pace: Pace, fault_seconds: float, clock: Clock) -> ScenarioRun:
    first = first_event_through(stack)
    world: BenchWorld = stack.world
    licenses = world.license_keys

    def form(i: int) -> dict[str, str]:
        return {**world.form(key=f"fault-{i}"), "license_key": licenses[i % len(licenses)]}

    load = SteadyLoad(stack.api_url, form, pace.rate, pace.timeout)
    say(f"{scenario.name}: {pace.rate:g} creates/s, {pace.lead:g} s, then {scenario.fault} for "
        f"{fault_seconds:g} s, then {pace.tail:g} s")
    load.start()
    clock.sleep(pace.lead)
    fault_start = clock.now()
    scenario.inject(stack, fault_seconds, clock)
    fault_end = clock.now()
    clock.sleep(pace.tail)
    samples = load.stop()
    window = Window(load.started_at, fault_start, fault_end, clock.now())
    say(f"{scenario.name}: load stopped after {len(samples)} requests; waiting up to {pace.settle:g} s for "
        "the follow-up work")
    settle(stack, pace.endpoints, pace.settle, clock)
    committed, audited = stack.committed_and_audited()
    committed.pop(first, None)
    receipts = [r for r in stack.receipts() if r.meta_id != first]
    result = summarize(scenario.name, samples, window, committed, len(set(audited) & set(committed)), receipts,
                       pace.endpoints)
    check_goals(result, scenario.recovery_goal, scenario.p99_tolerance, scenario.expected)
    dead = [s.name for s in stack.services() if not s.alive()]
    result.problems += [f"{name} is not running at the end" for name in dead]
    run = ScenarioRun(result, stack.options.backend, window, samples, lags(committed, receipts))
    if pace.logs is not None:
        save(run, pace.logs / f"{run.backend}-{scenario.name}" / "run.json")
    return run


def save(run: ScenarioRun, path: Path) -> None:
    """The run's raw timeline (samples, delivery lags, window) and its row, to redraw or recompute without a rerun."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(run)))
