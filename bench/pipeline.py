"""Follow-up work under a sustained load, on real processes: audit lag and webhook end-to-end latency.

    python -m bench.pipeline [--backend embedded|postgres-rabbitmq|postgres-redis] [--rate 200] [--duration 10]
                             [--endpoints 3] [--json]

Starts the API (uvicorn), one Celery worker per queue, beat, and a webhook sink, all on 127.0.0.1; sends
create-meta requests at a fixed rate; then measures, per 453, the time from its commit to its audit record
(``audit lag``) and to each webhook's arrival at the sink (``webhook e2e``), plus the RSS of every process.
Targets: audit lag ≤ 2 s and webhook p99 ≤ 1 s at 200 req/s. ``embedded``: keymeta's embedded PostgreSQL
server under a var dir of the run's own (stopped at the end) and the filesystem broker; ``postgres-*``: a
scratch database on the machine's PostgreSQL (dropped at the end) and RabbitMQ or Redis on scratch queues.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.brokers import BROKER_URLS, scratch_queues
from bench.cpu import process_tree
from bench.embedded import INTERRUPTED, INTERRUPTED_MESSAGE, exit_on_sigterm
from bench.loadgen import KeepAlivePool, fixed_rate
from bench.server import REPO_ROOT, child_env, free_port, running_app
from bench.world import DEFAULT_POSTGRES_URL, BenchWorld, prepared_world
from domain.events.models import AuditRecord, OutboxEvent
from domain.platform.database import make_sync_engine
from domain.signing.master_key import decode_master_key
from domain.webhooks.audit_events import CLI
from domain.webhooks.endpoints import create_endpoint
from domain.webhooks.ssrf import parse_allowed

BROKERS = {"embedded": "", "postgres-rabbitmq": BROKER_URLS["rabbitmq"], "postgres-redis": BROKER_URLS["redis"]}
WORKERS = {"audit": ["audit"], "webhooks": ["webhooks"], "sweep": ["keys", "sweep"]}


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        ms = [s * 1000 for s in seconds]
        return cls(len(ms), percentile(ms, 0.5), percentile(ms, 0.99), max(ms) if ms else float("nan"))


@dataclass
class PipelineReport:
    config: dict[str, object]
    sent: int
    created: int
    achieved_rate: float
    audit_lag: Latency
    webhook_e2e: Latency
    deliveries_expected: int
    deliveries_received: int
    rss_mib: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def rss_mib(pid: int) -> float:
    total = 0
    for child in process_tree(pid):
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@contextmanager
def started(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    with (log_dir / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)


def register_endpoints(world: BenchWorld, url: str, count: int) -> None:
    engine = make_sync_engine(world.settings)
    try:
        with Session(engine) as session, session.begin():
            for i in range(count):
                create_endpoint(session, url=f"{url}/hook/{i}", event_types=None, actor=CLI,
                                master_key=decode_master_key(world.settings.master_key),
                                allowed=parse_allowed(["127.0.0.0/8"]))
    finally:
        engine.dispose()


async def drive(base_url: str, world: BenchWorld, rate: float, duration: float, run_id: str, warmup: float = 0.0
                ) -> tuple[int, dict[int, float]]:
    """Fixed-rate open loop on keep-alive connections (bench.loadgen: cheap enough not to starve the workers).

    The first ``warmup`` seconds run at the same rate but are not measured: (sent, 453s) of the rest."""
    done: dict[int, float] = {}
    pool = KeepAlivePool(base_url, max_connections=256)
    skipped = int(rate * warmup)

    async def one(i: int) -> None:
        _, body = await pool.post_form("/api/v1/create-license-key-meta", world.form(key=f"{run_id}-{i}"))
        inner = body["response"]
        if inner["code"] == 453 and i >= skipped:
            done[inner["meta_id"]] = time.time()

    total = skipped + int(rate * duration)
    try:
        await fixed_rate(rate, total, one)
    finally:
        await pool.close()
    return total - skipped, done


def committed_and_audited(world: BenchWorld) -> tuple[dict[int, float], dict[int, float]]:
    """meta_id -> commit time of its 453 (the outbox event's created_at), and -> its audit record's time.
    Both clocks are the server's, so a slow client cannot distort the lag."""
    engine = make_sync_engine(world.settings)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(OutboxEvent.subject_id, OutboxEvent.created_at, AuditRecord.recorded_at)
                .outerjoin(AuditRecord, AuditRecord.event_id == OutboxEvent.id)
                .where(OutboxEvent.type == "license_key_meta.created")).all()
    finally:
        engine.dispose()
    committed = {meta_id: created.timestamp() for meta_id, created, _ in rows if meta_id is not None}
    audited = {meta_id: recorded.timestamp() for meta_id, _, recorded in rows
               if meta_id is not None and recorded is not None}
    return committed, audited


def sink_times(path: Path) -> dict[tuple[int, str], float]:
    received: dict[tuple[int, str], float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            at, meta_id, webhook_id = line.split(" ", 2)
            received.setdefault((int(meta_id), webhook_id), float(at))
    return received


def run(args: argparse.Namespace) -> PipelineReport:
    database = "embedded" if args.backend == "embedded" else "postgres"
    run_id = secrets.token_hex(4)
    postgres_url = os.environ.get("KEYMETA_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    with prepared_world(database, postgres_url) as world, ExitStack() as stack:
        log_dir = world.settings.var_dir.parent
        sink_file = log_dir / "sink.lines"
        env = {**world.env(), "KEYMETA_QUEUE_PREFIX": f"bench{run_id}_", "KEYMETA_LOG_LEVEL": "WARNING",
               "KEYMETA_WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8", "KEYMETA_BENCH_SINK_FILE": str(sink_file),
               # Every request adds a key to the bench's one license key: no per-license cap may refuse them.
               "KEYMETA_META_MAX_KEYS_PER_LICENSE": str(10**9)}
        if BROKERS[args.backend]:
            env["KEYMETA_BROKER_URL"] = BROKERS[args.backend]
        stack.enter_context(scratch_queues(BROKERS[args.backend], env["KEYMETA_QUEUE_PREFIX"]))
        sink_port = free_port()
        stack.enter_context(started("sink", [sys.executable, "-m", "uvicorn", "--factory", "bench.sink_app:create_app",
                                             "--host", "127.0.0.1", "--port", str(sink_port), "--log-level",
                                             "warning", "--no-access-log"], child_env(env), log_dir))
        register_endpoints(world, f"http://127.0.0.1:{sink_port}", args.endpoints)
        processes = {}
        celery = str(Path(sys.executable).parent / "celery")
        prefix = env["KEYMETA_QUEUE_PREFIX"]
        for name, queues in WORKERS.items():
            pool = ["--pool", "threads", "--concurrency", str(args.webhook_threads)] \
                if name == "webhooks" and args.webhook_threads else ["--concurrency", str(args.worker_concurrency)]
            # Scale-out: --webhook-workers processes consume the webhooks queue side by side.
            for n in range(args.webhook_workers if name == "webhooks" else 1):
                label = f"worker-{name}" + (f"-{n + 1}" if n else "")
                processes[label] = stack.enter_context(started(
                    label, [celery, "-A", "workers.app", "worker", "-Q", ",".join(prefix + q for q in queues),
                            "-n", f"{name}{n + 1 if n else ''}@%h", *pool,
                            "--without-gossip", "--without-mingle", "-l", "WARNING"], child_env(env), log_dir))
        processes["beat"] = stack.enter_context(started("beat", [celery, "-A", "workers.app", "beat", "-l", "WARNING"],
                                                        child_env(env), log_dir))
        api = stack.enter_context(running_app("api.app:create_app", env, args.api_workers))
        processes["api"] = api.proc
        say(f"{args.backend}: {args.rate:g} req/s for {args.warmup:g} s of warm-up, then {args.duration:g} s "
            f"measured; {args.endpoints} webhook endpoints")
        started_at = time.monotonic()
        sent, created = asyncio.run(drive(api.base_url, world, args.rate, args.duration, run_id, args.warmup))
        elapsed = time.monotonic() - started_at - args.warmup
        rss = {name: round(rss_mib(proc.pid), 1) for name, proc in processes.items()}
        dead = [name for name, proc in processes.items() if proc.poll() is not None]
        expected = len(created) * args.endpoints
        deadline = time.monotonic() + args.settle
        committed: dict[int, float] = {}
        audited: dict[int, float] = {}
        received: dict[tuple[int, str], float] = {}
        while time.monotonic() < deadline:
            committed, audited = committed_and_audited(world)
            audited = {m: at for m, at in audited.items() if m in created}  # warm-up events are not measured
            received = {key: at for key, at in sink_times(sink_file).items() if key[0] in created}
            if len(audited) >= len(created) and len(received) >= expected:
                break
            time.sleep(0.5)
        for name in dead:
            tail = (log_dir / f"{name}.log").read_text(errors="replace")[-1500:]
            say(f"{name} exited during the run:\n{tail}")
    report = PipelineReport(
        config={"backend": args.backend, "rate": args.rate, "duration": args.duration, "warmup": args.warmup,
                "endpoints": args.endpoints,
                "api_workers": args.api_workers, "worker_concurrency": args.worker_concurrency,
                "cores": os.cpu_count()},
        sent=sent, created=len(created), achieved_rate=round(sent / elapsed, 1),
        audit_lag=Latency.of([audited[m] - committed[m] for m in audited if m in committed]),
        webhook_e2e=Latency.of([at - committed[m] for (m, _), at in received.items() if m in committed]),
        deliveries_expected=expected, deliveries_received=len(received), rss_mib=rss)
    report.problems += [f"{name} exited during the run" for name in dead]
    if report.created != sent:
        report.problems.append(f"{sent - report.created} requests were not 453")
    if len(audited) != report.created:
        report.problems.append(f"{report.created - len(audited)} audit records missing after {args.settle:g} s")
    if report.deliveries_received < expected:
        report.problems.append(f"{expected - report.deliveries_received} webhooks missing after {args.settle:g} s")
    return report


def to_table(report: PipelineReport) -> str:
    c = report.config
    lines = [f"keymeta pipeline bench: {c['backend']}, {c['cores']} cores, {report.achieved_rate:g} req/s for "
             f"{c['duration']} s after {c['warmup']} s of warm-up ({report.created}/{report.sent} created), "
             f"{c['endpoints']} webhook endpoints",
             f"{'':14}{'count':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"]
    for name, lat in (("audit lag", report.audit_lag), ("webhook e2e", report.webhook_e2e)):
        lines.append(f"{name:14}{lat.count:>7}{lat.p50_ms:>10.1f}{lat.p99_ms:>10.1f}{lat.max_ms:>10.1f}")
    lines.append(f"deliveries received {report.deliveries_received}/{report.deliveries_expected}")
    lines.append("RSS MiB: " + ", ".join(f"{k} {v:g}" for k, v in report.rss_mib.items()))
    lines += [f"PROBLEM: {p}" for p in report.problems]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=tuple(BROKERS), default="embedded")
    parser.add_argument("--rate", type=float, default=200.0, help="create-meta requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measured load (at most 120)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of load before the measured part (connections, caches and pools fill up)")
    parser.add_argument("--endpoints", type=int, default=3, help="webhook endpoints subscribed to every event")
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--webhook-threads", type=int, default=16,
                        help="thread pool size of the webhook worker, as in the Procfile (0: prefork like the others)")
    parser.add_argument("--webhook-workers", type=int, default=1, help="webhook worker processes (scale-out)")
    parser.add_argument("--settle", type=float, default=60.0, help="how long to wait for the follow-up work")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not (0 < args.rate <= 2000 and 0 < args.duration <= 120 and 0 <= args.warmup <= 60
            and 0 <= args.endpoints <= 50 and 1 <= args.webhook_workers <= 8):
        parser.error("need 0 < --rate <= 2000, 0 < --duration <= 120, 0 <= --warmup <= 60, 0 <= --endpoints <= 50 "
                     "and 1 <= --webhook-workers <= 8")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    try:
        report = run(args)
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bench: {INTERRUPTED_MESSAGE}", file=sys.stderr)
        return INTERRUPTED
    print(json.dumps(asdict(report), indent=2) if args.json else to_table(report))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
