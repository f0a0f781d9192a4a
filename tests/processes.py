"""Real processes for integration tests: API (uvicorn), Celery workers and beat; the cuttable TCP proxy is the
fault bench's (``bench.faults.proxy``).

Every process gets its own session (so SIGKILL reaches prefork children) and a log file under the test's
tmp dir; ``Proc.output()`` shows it when an assertion fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from bench.faults.proxy import TcpProxy

__all__ = ["BIN", "Proc", "Stack", "TcpProxy", "free_port", "wait_until"]

BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1,
               message: str = "condition") -> T:
    """Poll until ``predicate()`` is truthy; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {value!r})")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no acks, exactly like a crash."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, args: list[str]) -> Proc:
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        handle = log_path.open("wb")
        popen = subprocess.Popen(args, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=self.log_dir)
        handle.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def worker(self, *queues: str, name: str = "w", concurrency: int = 1, pool: str = "prefork") -> Proc:
        prefix = self.env.get("KEYMETA_QUEUE_PREFIX", "")
        return self.start(f"worker-{name}", [
            str(BIN / "celery"), "-A", "workers.app", "worker", "-Q", ",".join(prefix + q for q in queues),
            "-n", f"{name}-{len(self.procs)}@%h", "--concurrency", str(concurrency), "--pool", pool,
            "--without-gossip", "--without-mingle", "-l", "INFO"])

    def audit_pipeline(self) -> None:
        """What the audit log needs to run: an audit worker, a sweep worker and beat (the sweeper)."""
        self.worker("audit", name="audit")
        self.worker("sweep", name="sweep")
        self.beat()

    def beat(self) -> Proc:
        return self.start("beat", [str(BIN / "celery"), "-A", "workers.app", "beat", "-l", "INFO"])

    def api(self, workers: int = 1) -> tuple[Proc, str]:
        port = free_port()
        proc = self.start("api", [
            str(BIN / "uvicorn"), "--factory", "api.app:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--log-level", "warning"])
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if not proc.alive():
                raise AssertionError(f"API exited:\n{proc.output()[-3000:]}")
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, message="API to answer /healthz")
        return proc, base

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM everything at once (warm shutdown), then SIGKILL whatever is still up at the deadline."""
        for proc in self.procs:
            if proc.alive():
                os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
