"""The faults: what each one does to the stack, for how long, on which backends, and the goals its row must meet.

``inject(stack, seconds, clock)`` does the fault and returns when it has ended (the process is back, the proxy
restored, the disk freed): the runner takes the fault window from the clock around it. ``unavailable(backend)``
is the reason a scenario cannot be set up on a backend, None when it can.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bench.faults import disk
from bench.faults.load import REFUSED, RESET
from bench.faults.measures import CREATED
from bench.faults.stack import FaultStack

DATABASE_UNAVAILABLE = "5030"  # the API's signed 503 while PostgreSQL cannot be reached
RECOVERY_GOAL = 10.0
RETRY_RECOVERY_GOAL = 30.0  # the consumer's own outage: the retry schedule decides when it is tried again
KILL_EVERY = 5.0


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


Inject = Callable[[FaultStack, float, Clock], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # what is done, as the table and the docs say it
    seconds: float  # the fault's length in the full bench
    short_seconds: float  # and in the CI versions
    inject: Inject
    recovery_goal: float = RECOVERY_GOAL
    p99_tolerance: float | None = None  # create p99 during the fault may exceed the one before by this share
    expected: frozenset[str] = frozenset({CREATED})  # every answer (or failure) a request may get
    backends: tuple[str, ...] = ("embedded", "postgres-rabbitmq")
    not_applicable: str = ""  # why the other backends cannot have this fault
    limited_disk: bool = False

    def unavailable(self, backend: str) -> str | None:
        return None if backend in self.backends else self.not_applicable


def stop_broker(stack: FaultStack, seconds: float, clock: Clock) -> None:
    assert stack.broker_proxy is not None
    stack.broker_proxy.cut()
    clock.sleep(seconds)
    stack.broker_proxy.restore()


def stop_database(stack: FaultStack, seconds: float, clock: Clock) -> None:
    start = clock.now()
    stack.stop_database()
    clock.sleep(max(0.0, start + seconds - clock.now()))
    stack.start_database()


def kill_api(stack: FaultStack, seconds: float, clock: Clock) -> None:
    """SIGKILL, then start it again at once: the fault lasts until it answers again."""
    stack.api.kill()
    stack.api.start()
    stack.wait_for_api()


def kill_workers(stack: FaultStack, seconds: float, clock: Clock) -> None:
    """SIGKILL the audit and webhook workers every ``KILL_EVERY`` s (at most), starting each again at once."""
    end = clock.now() + seconds
    every = min(KILL_EVERY, seconds / 2)
    while True:
        for name in ("audit", "webhooks"):
            stack.workers[name].kill()
            stack.workers[name].start()
        if clock.now() + every > end:
            break
        clock.sleep(every)
    clock.sleep(max(0.0, end - clock.now()))


def failing_consumer(stack: FaultStack, seconds: float, clock: Clock) -> None:
    stack.set_consumer_status(500)
    clock.sleep(seconds)
    stack.set_consumer_status(200)


def black_hole_consumer(stack: FaultStack, seconds: float, clock: Clock) -> None:
    stack.sink_proxy.black_hole()
    clock.sleep(seconds)
    stack.sink_proxy.restore()


def stop_beat(stack: FaultStack, seconds: float, clock: Clock) -> None:
    start = clock.now()
    stack.beat.stop()
    clock.sleep(max(0.0, start + seconds - clock.now()))
    stack.beat.start()


def fill_disk(stack: FaultStack, seconds: float, clock: Clock) -> None:
    assert stack.disk_root is not None
    start = clock.now()
    try:
        disk.fill(stack.disk_root)
        clock.sleep(max(0.0, start + seconds - clock.now()))
    finally:
        disk.free(stack.disk_root)


SCENARIOS = {s.name: s for s in (
    Scenario("broker-stopped", "RabbitMQ stopped (its proxy refuses and resets)", 30, 3, stop_broker,
             p99_tolerance=0.2, backends=("postgres-rabbitmq",),
             not_applicable="the embedded broker is kombu's filesystem transport: there is no server to stop"),
    Scenario("database-stopped", "PostgreSQL stopped (embedded: fast shutdown; shared: its proxy refuses)", 10, 3,
             stop_database, expected=frozenset({CREATED, DATABASE_UNAVAILABLE})),
    Scenario("api-killed", "API process SIGKILLed, started again at once", 0, 0, kill_api,
             expected=frozenset({CREATED, REFUSED, RESET})),
    Scenario("workers-killed", f"audit and webhook workers SIGKILLed every {KILL_EVERY:g} s (a shorter fault: twice)",
             30, 4, kill_workers),
    Scenario("consumer-500", "webhook consumer answers 500, then 200", 60, 3, failing_consumer,
             recovery_goal=RETRY_RECOVERY_GOAL),
    Scenario("consumer-black-holed", "network to the consumer drops packets (connect timeouts)", 30, 3,
             black_hole_consumer, recovery_goal=RETRY_RECOVERY_GOAL),
    Scenario("beat-stopped", "beat stopped, then started again", 60, 3, stop_beat),
    Scenario("disk-full", "the var dir's filesystem full", 10, 3, fill_disk,
             expected=frozenset({CREATED, DATABASE_UNAVAILABLE}), backends=("embedded",),
             not_applicable="only the embedded default keeps its database and broker under the var dir",
             limited_disk=True),
)}
