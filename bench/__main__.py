"""``python -m bench``: create-meta's req/s as a share of the bare signed ceiling's, both under wrk, fresh database.

The real API (uvicorn, ``api.app:create_app``) and the ceiling (``bench.ceiling_app``: parse, sign, no database,
no framework) are each probed (signatures verified), warmed up and measured with the same wrk settings.

Exit status: 0 when every check passed, 1 when a check failed (errors, unsigned or unverifiable
responses, meta rows not matching the 453s counted), 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from bench import ceiling_app
from bench.brokers import BROKER_URLS, scratch_queues
from bench.cpu import CpuMeter, process_tree
from bench.embedded import INTERRUPTED, INTERRUPTED_MESSAGE, exit_on_sigterm
from bench.probe import probe
from bench.report import BenchReport, TargetRun, to_json, to_table
from bench.server import API_FACTORY, CEILING_FACTORY, running_app
from bench.world import BACKENDS, DEFAULT_POSTGRES_URL, BenchWorld, prepared_world
from bench.wrk import WrkMissing, ensure_wrk, lua_script, parse_seconds, run_wrk
from domain.signing.rsa_keys import generate_private_key, private_pem, public_pem, thumbprint

PROBES = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, default="embedded",
                        help="embedded: keymeta's embedded PostgreSQL server under the run's own var dir; "
                             "postgres: a scratch database on KEYMETA_BENCH_POSTGRES_URL or " + DEFAULT_POSTGRES_URL)
    parser.add_argument("--broker", choices=tuple(BROKER_URLS), default="embedded",
                        help="where the API rings its doorbell (rabbitmq/redis: KEYMETA_BENCH_RABBITMQ_URL or "
                             "KEYMETA_BENCH_REDIS_URL, else the local default)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="uvicorn workers (default: cores)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", default="10s", help="wrk duration of the measured run (default 10s)")
    parser.add_argument("--warmup", default="2s", help="unmeasured wrk run first (0 to skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)
    if not 0 < parse_seconds(args.duration) <= 600 or not 0 <= parse_seconds(args.warmup) <= 60:
        parser.error("--duration must be in (0, 600] s and --warmup in [0, 60] s")
    if args.workers < 1 or args.threads < 1 or args.connections < args.threads:
        parser.error("need --workers >= 1, --threads >= 1 and --connections >= --threads")
    return args


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measure(name: str, factory: str, env: Mapping[str, str], world: BenchWorld, public_keys: Mapping[str, str],
            args: argparse.Namespace, wrk: str, work_dir: Path, run_id: str,
            count_rows: Callable[[str], int] | None = None,
            db_pids: Callable[[], set[int]] = set) -> TargetRun:
    measured_prefix = f"m{run_id}-"
    scripts = {}
    for label, prefix in (("warmup", f"w{run_id}-"), ("measured", measured_prefix)):
        scripts[label] = work_dir / f"{name}-{label}.lua"
        scripts[label].write_text(lua_script(world.form(key="unused"), prefix))
    say(f"{name}: starting uvicorn ({args.workers} workers)")
    with running_app(factory, env, args.workers) as app:
        checked = probe(app.base_url, [world.form(key=f"p{run_id}-{i}") for i in range(PROBES)], public_keys)
        url = app.base_url + ceiling_app.PATH
        options = {"connections": args.connections, "threads": args.threads}
        if parse_seconds(args.warmup) > 0:
            say(f"{name}: warm-up {args.warmup}")
            run_wrk(wrk, url, scripts["warmup"], duration=args.warmup, **options)
        say(f"{name}: measuring {args.duration}")
        app_cpu, db_cpu = CpuMeter(lambda: process_tree(app.proc.pid)), CpuMeter(db_pids)
        app_cpu.start()
        db_cpu.start()
        result = run_wrk(wrk, url, scripts["measured"], duration=args.duration, **options)
        cpu = (app_cpu.stop(), db_cpu.stop())
        exit_status = app.proc.poll()  # None: still serving, as it should be
    # The server has stopped gracefully: every request it accepted has finished writing.
    rows = count_rows(measured_prefix) if count_rows else None
    return TargetRun(name=name, wrk=result, probe=checked, db_rows=rows, server_exit=exit_status,
                     app_cpu_s=cpu[0], db_cpu_s=cpu[1])


def run(args: argparse.Namespace, wrk: str) -> BenchReport:
    postgres_url = os.environ.get("KEYMETA_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    run_id = secrets.token_hex(4)
    say(f"preparing a fresh {args.backend} database")
    broker_url, queue_prefix = BROKER_URLS[args.broker], f"bench{run_id}_"
    with prepared_world(args.backend, postgres_url) as world, tempfile.TemporaryDirectory(prefix="bench-") as tmp, \
            scratch_queues(broker_url, queue_prefix):
        work_dir = Path(tmp)
        api_env = {**world.env(), "KEYMETA_QUEUE_PREFIX": queue_prefix}
        if broker_url:
            api_env["KEYMETA_BROKER_URL"] = broker_url
        api = measure("create-meta", API_FACTORY, api_env, world, world.public_keys, args, wrk, work_dir,
                      run_id, count_rows=world.count_meta, db_pids=world.backend_pids)
        ceiling_key = generate_private_key(2048)
        key_file = work_dir / "ceiling.pem"
        key_file.write_bytes(private_pem(ceiling_key))
        ceiling_keys = {thumbprint(ceiling_key.public_key()): public_pem(ceiling_key.public_key())}
        ceiling_env = {**world.env(), ceiling_app.KEY_FILE_ENV: str(key_file)}
        ceiling = measure("ceiling", CEILING_FACTORY, ceiling_env, world, ceiling_keys, args, wrk, work_dir,
                          run_id)
    config = {"backend": args.backend, "broker": args.broker, "workers": args.workers, "connections": args.connections,
              "threads": args.threads, "duration": args.duration, "warmup": args.warmup}
    report = BenchReport(config=config, api=api, ceiling=ceiling)
    report.check()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    try:
        wrk = ensure_wrk()
    except WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        report = run(args, wrk)
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bench: {INTERRUPTED_MESSAGE}", file=sys.stderr)
        return INTERRUPTED
    print(to_json(report) if args.json else to_table(report))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
