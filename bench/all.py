"""``make bench``: every figure in one run, on one backend.

    python -m bench.all [--backend embedded|postgres-rabbitmq|postgres-redis] [--quick]

1. create-meta vs the signed no-database ceiling under wrk (``python -m bench``),
2. audit lag, webhook end-to-end latency and process RSS at a sustained rate (``python -m bench.pipeline``),
3. webhook fan-out throughput vs a raw httpx POST loop (``python -m bench.webhooks``).
Each part prints its own report; the exit status is the worst of the three.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from bench.world import DEFAULT_POSTGRES_URL

BACKENDS = ("embedded", "postgres-rabbitmq", "postgres-redis")


def commands(backend: str, quick: bool) -> list[list[str]]:
    postgres = backend != "embedded"
    admin_url = os.environ.get("KEYMETA_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    duration = ["--duration", "5s"] if quick else []
    return [
        [sys.executable, "-m", "bench", "--backend", "postgres" if postgres else "sqlite",
         "--broker", backend.removeprefix("postgres-"), *duration],
        [sys.executable, "-m", "bench.pipeline", "--backend", backend, "--duration", "5" if quick else "10"],
        [sys.executable, "-m", "bench.webhooks", "--endpoints", "10", "--repeat", "1" if quick else "3",
         *(["--postgres", admin_url] if postgres else [])],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, default="embedded")
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke check)")
    args = parser.parse_args(argv)
    print(f"keymeta bench, backend {args.backend}, {os.cpu_count()} cores", flush=True)
    worst = 0
    for command in commands(args.backend, args.quick):
        print(f"\n$ python {' '.join(command[1:])}", flush=True)
        worst = max(worst, subprocess.call(command))
    return worst


if __name__ == "__main__":
    sys.exit(main())
