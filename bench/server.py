"""Start an app under uvicorn (a child process of our own), wait until it answers, stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
API_FACTORY = "api.app:create_app"
CEILING_FACTORY = "bench.ceiling_app:create_app"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without inherited KEYMETA_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYMETA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def uvicorn_command(factory: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning"]


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with status {proc.returncode} before it was ready")
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not answer {base_url}/healthz within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Graceful (SIGTERM lets in-flight requests finish), then SIGKILL of the group we created."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@dataclass(frozen=True)
class RunningApp:
    base_url: str
    proc: subprocess.Popen[bytes]


@contextmanager
def running_app(factory: str, env: Mapping[str, str], workers: int,
                ready_timeout: float = 60.0) -> Iterator[RunningApp]:
    """The server (and its workers) are gone when the block exits."""
    port = free_port()
    proc = subprocess.Popen(uvicorn_command(factory, port, workers), cwd=REPO_ROOT, env=child_env(env),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, base_url, ready_timeout)
        yield RunningApp(base_url, proc)
    finally:
        _stop(proc)
