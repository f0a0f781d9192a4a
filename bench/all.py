"""``make bench``: every figure in one run, on one backend, and nothing the run started is left running.

    python -m bench.all [--backend embedded|postgres-rabbitmq|postgres-redis] [--quick]

1. create-meta vs the bare signed ceiling under wrk (``python -m bench``),
2. the mixed workload (creates, updates, gets, deletes, with Idempotency-Keys) vs the same ceiling
   (``python -m bench --workload mixed``),
3. audit lag, webhook end-to-end latency and process RSS at a sustained rate (``python -m bench.pipeline``),
4. webhook fan-out throughput vs a raw httpx POST loop (``python -m bench.webhooks``),
5. webhook delivery with 1 and 2 worker processes (``python -m bench.webhooks --scale-out 1,2``).
``embedded``: keymeta's embedded PostgreSQL server (``KEYMETA_DATABASE_URL`` unset) under a fresh var dir of each
part's own, and the filesystem broker; ``postgres-*``: scratch databases on the machine's PostgreSQL
(``KEYMETA_BENCH_POSTGRES_URL``) and RabbitMQ or Redis. Each part prints its own report and stops what it
started; the parts' temp dirs live under one of this run's, and an embedded server a part could not stop (it
was killed) is stopped here. The exit status is the worst of the parts'.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.embedded import INTERRUPTED, exit_on_sigterm, leftover_var_dirs, stop
from bench.world import DEFAULT_POSTGRES_URL

BACKENDS = ("embedded", "postgres-rabbitmq", "postgres-redis")


def commands(backend: str, quick: bool) -> list[list[str]]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (use one of {', '.join(BACKENDS)})")
    postgres = backend != "embedded"
    admin_url = os.environ.get("KEYMETA_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    duration = ["--duration", "5s"] if quick else []
    wrk_part = [sys.executable, "-m", "bench", "--backend", "postgres" if postgres else "embedded",
                "--broker", backend.removeprefix("postgres-"), *duration]
    return [
        wrk_part,
        [*wrk_part, "--workload", "mixed"],
        [sys.executable, "-m", "bench.pipeline", "--backend", backend, "--duration", "5" if quick else "10"],
        [sys.executable, "-m", "bench.webhooks", "--endpoints", "10", "--repeat", "1" if quick else "3",
         *(["--postgres", admin_url] if postgres else [])],
        [sys.executable, "-m", "bench.webhooks", "--scale-out", "1,2", "--events", "200",
         "--repeat", "1" if quick else "3", *(["--postgres", admin_url] if postgres else [])],
    ]


def run_part(command: list[str], env: dict[str, str]) -> int:
    """The part's exit status, or ``INTERRUPTED``. On Ctrl-C (which reaches the part too: one process group) or
    SIGTERM (passed on to it), wait while the part stops what it started, rather than kill it half-way."""
    proc = subprocess.Popen(command, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        pass
    except SystemExit:
        proc.terminate()
    while True:
        try:
            proc.wait()
            return INTERRUPTED
        except (KeyboardInterrupt, SystemExit):
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, default="embedded")
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke check)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    print(f"keymeta bench, backend {args.backend}, {os.cpu_count()} cores", flush=True)
    worst = 0
    with tempfile.TemporaryDirectory(prefix="keymeta-bench-all-") as scratch:
        env = {**os.environ, "TMPDIR": scratch}  # every part's temp dirs, the embedded servers' var dirs among them
        try:
            for command in commands(args.backend, args.quick):
                print(f"\n$ python {' '.join(command[1:])}", flush=True)
                status = run_part(command, env)
                worst = max(worst, status)
                if status == INTERRUPTED:
                    break
        except KeyboardInterrupt:  # between two parts
            worst = INTERRUPTED
        finally:
            for var_dir in leftover_var_dirs(Path(scratch)):
                print(f"bench: stopping the embedded PostgreSQL server a part left under {var_dir}",
                      file=sys.stderr, flush=True)
                stop(var_dir)
    return worst


if __name__ == "__main__":
    sys.exit(main())
