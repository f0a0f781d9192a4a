"""``python -m bench``: the meta API's req/s as a share of the bare signed ceiling's, both under wrk, fresh database.

The real API (uvicorn, ``api.app:create_app``) and the ceiling (``bench.ceiling_app``: parse, sign, no database,
no framework) are each probed (signatures verified), warmed up and measured with the same wrk settings.

Workloads (``--workload``): ``create``, every request a create-meta; ``mixed``, creates, updates, gets and deletes
in the shares of ``bench.wrk.MIX``, every mutation with an Idempotency-Key of its own. Either way the requests go
to ``--licenses`` license keys in turn, not to one: a license key holds at most
``KEYMETA_META_MAX_KEYS_PER_LICENSE`` meta keys and creates on one license key wait for each other (they count
its keys under a lock on its row), and no real workload writes to one license key only. The mixed workload's
updates and gets hit keys written before the run on every license key, its deletes keys written for deletion.

Exit status: 0 when every check passed, 1 when a check failed (errors, unsigned or unverifiable
responses, meta rows not matching the 453s counted), 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from bench import ceiling_app
from bench.brokers import BROKER_URLS, scratch_queues
from bench.cpu import CpuMeter, process_tree
from bench.embedded import INTERRUPTED, INTERRUPTED_MESSAGE, exit_on_sigterm
from bench.probe import ProbeCall, probe
from bench.report import BenchReport, TargetRun, to_json, to_table
from bench.server import API_FACTORY, CEILING_FACTORY, running_app
from bench.world import BACKENDS, DEFAULT_LICENSES, DEFAULT_POSTGRES_URL, BenchWorld, prepared_world
from bench.wrk import (
    MIX,
    OPERATIONS,
    MixedPools,
    WrkMissing,
    ensure_wrk,
    lua_script,
    mixed_lua_script,
    parse_seconds,
    run_wrk,
)
from domain.signing.rsa_keys import generate_private_key, private_pem, public_pem, thumbprint

PROBES = 3
WORKLOADS = ("create", "mixed")
UPDATE_POOL_KEYS = 4  # meta keys on every license key that the mixed workload's updates and gets hit
DELETE_POOL_RATE = 10_000  # req/s the delete pool of a mixed run is sized for; beyond it deletes run out
MAX_KEYS_ENV = "KEYMETA_META_MAX_KEYS_PER_LICENSE"


def parse_mix(text: str) -> dict[str, int]:
    """``create=60,update=25,get=10,delete=5``: percent per operation, whole numbers adding up to 100; an
    operation left out gets 0."""
    mix = dict.fromkeys(MIX, 0)
    for part in text.split(","):
        op, _, share = part.partition("=")
        if op.strip() not in mix or not share.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: use op=percent with op one of {', '.join(MIX)}")
        mix[op.strip()] = int(share)
    if sum(mix.values()) != 100:
        raise argparse.ArgumentTypeError(f"the shares add up to {sum(mix.values())}, not 100")
    return mix


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, default="embedded",
                        help="embedded: keymeta's embedded PostgreSQL server under the run's own var dir; "
                             "postgres: a scratch database on KEYMETA_BENCH_POSTGRES_URL or " + DEFAULT_POSTGRES_URL)
    parser.add_argument("--broker", choices=tuple(BROKER_URLS), default="embedded",
                        help="where the API rings its doorbell (rabbitmq/redis: KEYMETA_BENCH_RABBITMQ_URL or "
                             "KEYMETA_BENCH_REDIS_URL, else the local default)")
    parser.add_argument("--workload", choices=WORKLOADS, default="create",
                        help="create: every request a create-meta; mixed: " +
                             ", ".join(f"{share} %% {op}" for op, share in MIX.items()))
    parser.add_argument("--mix", type=parse_mix, default=dict(MIX),
                        help="the mixed workload's shares, e.g. create=100 (default: " +
                             ",".join(f"{op}={share}" for op, share in MIX.items()) + ")")
    parser.add_argument("--licenses", type=int, default=DEFAULT_LICENSES,
                        help=f"license keys the requests are spread over (default {DEFAULT_LICENSES})")
    parser.add_argument("--max-keys-per-license", type=int, default=None,
                        help=f"{MAX_KEYS_ENV} for the API (default: the API's own default)")
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
    if args.licenses < 1 or (args.max_keys_per_license is not None and args.max_keys_per_license < 1):
        parser.error("need --licenses >= 1 and --max-keys-per-license >= 1")
    return args


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def create_script(world: BenchWorld, args: argparse.Namespace) -> Callable[[str, str], str]:
    def script(label: str, prefix: str) -> str:
        return lua_script(world.form(key="unused"), prefix, world.license_keys, args.threads)
    return script


def create_probes(world: BenchWorld, run_id: str) -> list[ProbeCall]:
    return [ProbeCall(world.form(key=f"p{run_id}-{i}")) for i in range(PROBES)]


def mixed_pools(world: BenchWorld, args: argparse.Namespace, run_id: str) -> dict[str, MixedPools]:
    """The warm-up's and the measured run's pools: update keys shared, delete keys each their own."""
    update_keys = tuple(f"s{run_id}-u{j}" for j in range(UPDATE_POOL_KEYS))
    pools = {}
    for label, duration in (("warmup", args.warmup), ("measured", args.duration)):
        slots = math.ceil(DELETE_POOL_RATE * parse_seconds(duration) * args.mix["delete"] / 100)
        pools[label] = MixedPools(license_keys=world.license_keys, update_keys=update_keys,
                                  delete_prefix=f"s{run_id}-d{label[0]}", delete_slots=slots)
    return pools


def seed_mixed(world: BenchWorld, pools: Mapping[str, MixedPools]) -> None:
    first = next(iter(pools.values()))
    rows = [(license_key, key) for license_key in first.license_keys for key in first.update_keys]
    for pool in pools.values():
        rows.extend(pool.delete_rows())
    world.seed_meta(rows)


def mixed_probes(world: BenchWorld, run_id: str) -> list[ProbeCall]:
    """One of each operation, in an order that makes each succeed, each mutation with an Idempotency-Key."""
    key = f"p{run_id}-mixed"
    calls = []
    for n, op in enumerate(("create", "update", "get", "delete")):
        form = world.form(key=key, value=f"probe {n}")
        if op in ("get", "delete"):
            del form["value"]
        headers = {} if op == "get" else {"Idempotency-Key": f"p{run_id}-{n}"}
        path, code = OPERATIONS[op]
        calls.append(ProbeCall(form=form, path=path, code=code, headers=headers))
    return calls


def measure(name: str, factory: str, env: Mapping[str, str], world: BenchWorld, public_keys: Mapping[str, str],
            args: argparse.Namespace, wrk: str, work_dir: Path, run_id: str,
            script: Callable[[str, str], str], probes: list[ProbeCall], workload: str = "create",
            count_rows: Callable[[str], int] | None = None,
            db_pids: Callable[[], set[int]] = set) -> TargetRun:
    """``script(label, key_prefix)``: the Lua script of the warm-up or the measured run."""
    measured_prefix = f"m{run_id}-"
    scripts = {}
    for label, prefix in (("warmup", f"w{run_id}-"), ("measured", measured_prefix)):
        scripts[label] = work_dir / f"{name}-{label}.lua"
        scripts[label].write_text(script(label, prefix))
    say(f"{name}: starting uvicorn ({args.workers} workers)")
    with running_app(factory, env, args.workers) as app:
        checked = probe(app.base_url, probes, public_keys)
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
                     app_cpu_s=cpu[0], db_cpu_s=cpu[1], workload=workload)


def run(args: argparse.Namespace, wrk: str) -> BenchReport:
    postgres_url = os.environ.get("KEYMETA_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    run_id = secrets.token_hex(4)
    say(f"preparing a fresh {args.backend} database with {args.licenses} license keys")
    broker_url, queue_prefix = BROKER_URLS[args.broker], f"bench{run_id}_"
    with prepared_world(args.backend, postgres_url, licenses=args.licenses) as world, \
            tempfile.TemporaryDirectory(prefix="bench-") as tmp, scratch_queues(broker_url, queue_prefix):
        work_dir = Path(tmp)
        api_env = {**world.env(), "KEYMETA_QUEUE_PREFIX": queue_prefix}
        if broker_url:
            api_env["KEYMETA_BROKER_URL"] = broker_url
        if args.max_keys_per_license is not None:
            api_env[MAX_KEYS_ENV] = str(args.max_keys_per_license)
        if args.workload == "mixed":
            pools = mixed_pools(world, args, run_id)
            say(f"mixed: writing {UPDATE_POOL_KEYS} pool keys on every license key and "
                f"{sum(p.delete_slots for p in pools.values())} keys to delete")
            seed_mixed(world, pools)

            def script(label: str, prefix: str) -> str:
                return mixed_lua_script(world.form(key="unused"), prefix, pools[label], args.threads, args.mix)

            api = measure("mixed", API_FACTORY, api_env, world, world.public_keys, args, wrk, work_dir, run_id,
                          script, mixed_probes(world, run_id), workload="mixed", count_rows=world.count_meta,
                          db_pids=world.backend_pids)
            remaining = world.count_meta(pools["measured"].delete_prefix)
            api = replace(api, deleted_rows=pools["measured"].delete_slots - remaining)
        else:
            api = measure("create-meta", API_FACTORY, api_env, world, world.public_keys, args, wrk, work_dir,
                          run_id, create_script(world, args), create_probes(world, run_id),
                          count_rows=world.count_meta, db_pids=world.backend_pids)
        ceiling_key = generate_private_key(2048)
        key_file = work_dir / "ceiling.pem"
        key_file.write_bytes(private_pem(ceiling_key))
        ceiling_keys = {thumbprint(ceiling_key.public_key()): public_pem(ceiling_key.public_key())}
        ceiling_env = {**world.env(), ceiling_app.KEY_FILE_ENV: str(key_file)}
        ceiling = measure("ceiling", CEILING_FACTORY, ceiling_env, world, ceiling_keys, args, wrk, work_dir,
                          run_id, create_script(world, args), create_probes(world, run_id))
    config = {"backend": args.backend, "broker": args.broker, "workers": args.workers, "connections": args.connections,
              "threads": args.threads, "duration": args.duration, "warmup": args.warmup, "workload": args.workload,
              **({"mix": args.mix} if args.workload == "mixed" else {}), "licenses": args.licenses,
              "max_keys_per_license": args.max_keys_per_license}
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
