"""The system a fault hits: a fresh database, the broker, a webhook sink, the API, the workers and beat, all real
processes of the run's own, each of which a scenario may kill, stop or cut off and bring back.

Backends: ``embedded`` (keymeta's embedded PostgreSQL under the run's var dir, really stopped and started;
the filesystem broker) and ``postgres-rabbitmq`` (a scratch database on the machine's PostgreSQL and scratch
queues on its RabbitMQ, both shared with other work: each is reached through a ``TcpProxy`` that a fault
stops, never the server itself). The sink too is reached through a proxy, which a fault can black-hole.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.brokers import BROKER_URLS, scratch_queues
from bench.faults.disk import limited_filesystem
from bench.faults.measures import Receipt
from bench.faults.proxy import TcpProxy
from bench.pipeline import WORKERS, committed_and_audited, register_endpoints
from bench.server import REPO_ROOT, child_env, free_port, uvicorn_command
from bench.world import DEFAULT_POSTGRES_URL, BenchWorld, prepared_world
from domain.platform import embedded_postgres

BACKENDS = ("embedded", "postgres-rabbitmq")
READY_TIMEOUT = 60.0
WEBHOOK_THREADS = 16  # as in the Procfile
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class StackOptions:
    backend: str
    endpoints: int = 1
    licenses: int = 64
    settings: dict[str, str] = field(default_factory=dict)  # extra KEYMETA_* variables for every process
    limited_disk: bool = False  # the var dir on a filesystem of its own that a fault can fill


@dataclass
class Service:
    """One process (group) of the stack, started again with the same command after a kill or a stop."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: no shutdown, no acknowledgements, exactly like a crash."""
        if self.proc is not None and self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM to the group: a warm shutdown."""
        if self.proc is not None and self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, SIGKILL at the deadline."""
        self.terminate()
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def stop_all(services: list[Service], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every one at once, then SIGKILL whatever is still up at the one deadline."""
    for service in services:
        service.terminate()
    deadline = time.monotonic() + timeout
    for service in services:
        service.stop(max(0.1, deadline - time.monotonic()))


@dataclass
class FaultStack:
    options: StackOptions
    world: BenchWorld
    env: dict[str, str]
    api: Service
    api_url: str
    sink: Service
    sink_url: str  # direct, for the bench's own control calls
    sink_proxy: TcpProxy
    sink_file: Path
    workers: dict[str, Service]
    beat: Service
    log_dir: Path
    database_proxy: TcpProxy | None = None
    broker_proxy: TcpProxy | None = None
    disk_root: Path | None = None

    @property
    def var_dir(self) -> Path:
        return self.world.settings.var_dir

    def services(self) -> list[Service]:
        return [self.sink, *self.workers.values(), self.beat, self.api]

    def wait_for_api(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.api_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.api.alive():
                    raise RuntimeError(f"the API exited before it was ready (log: {self.api.log_path})")
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"the API did not answer /healthz within {timeout:.0f} s (log: {self.api.log_path})")

    def stop_database(self) -> None:
        if self.database_proxy is not None:
            self.database_proxy.cut()
        else:
            embedded_postgres.stop(self.var_dir)

    def start_database(self) -> None:
        if self.database_proxy is not None:
            self.database_proxy.restore()
        else:
            embedded_postgres.ensure_running(self.var_dir)

    def set_consumer_status(self, status: int) -> None:
        httpx.post(f"{self.sink_url}/_status", content=str(status), timeout=5.0)

    def committed_and_audited(self) -> tuple[dict[int, float], dict[int, float]]:
        """meta_id -> commit time of its created event, and -> its audit record's time (direct, no proxy)."""
        return committed_and_audited(self.world)

    def receipts(self) -> list[Receipt]:
        """Every delivery the sink accepted, duplicates included."""
        if not self.sink_file.exists():
            return []
        found = []
        for line in self.sink_file.read_text().splitlines():
            at, meta_id, webhook_id = line.split(" ", 2)
            found.append(Receipt(float(at), int(meta_id), webhook_id))
        return found


def _through_proxy(url: str, default_port: int, stack: ExitStack) -> tuple[str, TcpProxy]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    proxy = TcpProxy(host, port)
    stack.callback(proxy.close)
    netloc = parts.netloc.rsplit("@", 1)
    address = f"127.0.0.1:{proxy.port}"
    proxied = parts._replace(netloc=f"{netloc[0]}@{address}" if len(netloc) == 2 else address)
    return proxied.geturl(), proxy


def _worker_argv(name: str, queues: list[str], prefix: str) -> list[str]:
    celery = str(Path(sys.executable).parent / "celery")
    pool = ["--pool", "threads", "--concurrency", str(WEBHOOK_THREADS)] if name == "webhooks" \
        else ["--concurrency", "2"]
    return [celery, "-A", "workers.app", "worker", "-Q", ",".join(prefix + q for q in queues), "-n", f"{name}@%h",
            *pool, "--without-gossip", "--without-mingle", "-l", "WARNING"]


@contextmanager
def running_stack(options: StackOptions) -> Iterator[FaultStack]:
    """Every process started and the API answering; all stopped, proxies closed, the database dropped or
    stopped, scratch queues deleted (and the limited filesystem unmounted) when the block ends."""
    if options.backend not in BACKENDS:
        raise ValueError(f"unknown backend {options.backend!r} (use one of {', '.join(BACKENDS)})")
    postgres_url = os.environ.get("KEYMETA_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    database = "embedded" if options.backend == "embedded" else "postgres"
    with ExitStack() as stack:
        disk_root = stack.enter_context(limited_filesystem()) if options.limited_disk else None
        world = stack.enter_context(prepared_world(database, postgres_url, options.licenses, temp_root=disk_root))
        # Logs and the sink's receipts live outside the var dir: a full var dir must not silence either.
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keymeta-faults-logs-")))
        sink_file = log_dir / "sink.lines"
        prefix = f"faults{secrets.token_hex(4)}_"
        env = {**world.env(), "KEYMETA_QUEUE_PREFIX": prefix, "KEYMETA_LOG_LEVEL": "WARNING",
               "KEYMETA_WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8", "KEYMETA_BENCH_SINK_FILE": str(sink_file),
               # Every create adds a key to one of few license keys: no per-license cap may refuse them.
               "KEYMETA_META_MAX_KEYS_PER_LICENSE": str(10**9), **options.settings}
        database_proxy = broker_proxy = None
        if database == "postgres":
            env["KEYMETA_DATABASE_URL"], database_proxy = _through_proxy(world.settings.database_url, 5432, stack)
            broker_url = BROKER_URLS["rabbitmq"]
            stack.enter_context(scratch_queues(broker_url, prefix))
            env["KEYMETA_BROKER_URL"], broker_proxy = _through_proxy(broker_url, 5672, stack)
        sink_port, api_port = free_port(), free_port()
        sink = Service("sink", [sys.executable, "-m", "uvicorn", "--factory", "bench.sink_app:create_app", "--host",
                                "127.0.0.1", "--port", str(sink_port), "--log-level", "warning", "--no-access-log"],
                       child_env(env), log_dir / "sink.log")
        sink_proxy = TcpProxy("127.0.0.1", sink_port)
        stack.callback(sink_proxy.close)
        register_endpoints(world, f"http://127.0.0.1:{sink_proxy.port}", options.endpoints)
        workers = {name: Service(f"worker-{name}", _worker_argv(name, queues, prefix), child_env(env),
                                 log_dir / f"worker-{name}.log") for name, queues in WORKERS.items()}
        beat = Service("beat", [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", "beat", "-l",
                                "WARNING"], child_env(env), log_dir / "beat.log")
        api = Service("api", uvicorn_command("api.app:create_app", api_port, 1), child_env(env), log_dir / "api.log")
        faults = FaultStack(options=options, world=world, env=env, api=api, api_url=f"http://127.0.0.1:{api_port}",
                            sink=sink, sink_url=f"http://127.0.0.1:{sink_port}", sink_proxy=sink_proxy,
                            sink_file=sink_file, workers=workers, beat=beat, log_dir=log_dir,
                            database_proxy=database_proxy, broker_proxy=broker_proxy, disk_root=disk_root)
        stack.callback(stop_all, faults.services())
        for service in faults.services():
            service.start()
        faults.wait_for_api()
        yield faults
