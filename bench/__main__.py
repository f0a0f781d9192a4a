"""``python -m bench``: the meta API's req/s as a share of the bare signed ceiling's, both under wrk, fresh database.

The real API (uvicorn, ``api.app:create_app``) and the ceiling (``bench.ceiling_app``: parse, sign, no database,
no framework) are each probed (signatures verified), warmed up and measured with the same wrk settings.

Workloads (``--workload``): ``create``, every request a create-meta; ``mixed``, creates, updates, gets and deletes
in the shares of ``bench.wrk.MIX``, every mutation with an Idempotency-Key of its own; ``invalid-keys``, a flood of
creates with an API key nobody issued (every answer a signed refusal 100), then the create workload on the same
world, so the two rates come from one run (no ceiling: refusals are compared with real work). The requests go
to ``--licenses`` license keys in turn, not to one: a license key holds at most
``KEYMETA_META_MAX_KEYS_PER_LICENSE`` meta keys and creates on one license key wait for each other (they count
its keys under a lock on its row), and no real workload writes to one license key only. The mixed workload's
updates and gets hit keys written before the run on every license key, its deletes keys written for deletion.

Exit status: 0 when every check passed, 1 when a check failed (errors, unsigned or unverifiable
responses, meta rows not matching the 453s counted), 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench import ceiling_app
from bench.brokers import BROKER_URLS, scratch_queues
from bench.cpu import CpuMeter, process_tree
from bench.embedded import INTERRUPTED, INTERRUPTED_MESSAGE, exit_on_sigterm
from bench.probe import ProbeCall, ProbeResult, probe
from bench.report import BenchReport, TargetRun, to_json, to_table
from bench.server import API_FACTORY, CEILING_FACTORY, running_app
from bench.world import BACKENDS, DEFAULT_LICENSES, DEFAULT_POSTGRES_URL, BenchWorld, prepared_world
from bench.wrk import (
    MIX,
    OPERATIONS,
    MixedPools,
    WrkMissing,
    ensure_wrk,
    invalid_keys_lua_script,
    lua_script,
    mixed_lua_script,
    parse_seconds,
    run_wrk,
)
from domain.signing.rsa_keys import generate_private_key, private_pem, public_pem, thumbprint
from domain.signing.verification import EnvelopeInvalid, verify_envelope

PROBES = 3
WORKLOADS = ("create", "mixed", "invalid-keys")
UNKNOWN_API_KEY = "km_bench_nobody_issued_this_key"
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
                             ", ".join(f"{share} %% {op}" for op, share in MIX.items()) +
                             "; invalid-keys: a flood of creates with an unknown API key, then create")
    parser.add_argument("--mix", type=parse_mix, default=dict(MIX),
                        help="the mixed workload's shares, e.g. create=100 (default: " +
                             ",".join(f"{op}={share}" for op, share in MIX.items()) + ")")
    parser.add_argument("--without-idempotency-keys", action="store_true",
                        help="the mixed workload's mutations without an Idempotency-Key")
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


def refusal_probe(base_url: str, form: dict[str, str], public_keys: Mapping[str, str]) -> ProbeResult:
    """Two identical requests with an unknown key: each a 401 with code 100, signed by a published key."""
    problems, verified = [], 0
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        for _ in range(2):
            reply = client.post(ProbeCall(form).path, data=form)
            try:
                code = reply.json()["response"]["code"]
                kid = verify_envelope(reply.content, public_keys, reply.headers.get("x-signature-key-id"))
            except (ValueError, KeyError, TypeError, EnvelopeInvalid) as exc:
                problems.append(f"refusal: HTTP {reply.status_code}: {exc}")
                continue
            if reply.status_code != 401 or code != 100 or kid != reply.headers.get("x-signature-key-id"):
                problems.append(f"refusal: HTTP {reply.status_code}, code {code}, verified by {kid}")
                continue
            verified += 1
    return ProbeResult(checked=2, verified=verified, problems=problems)


def measure(name: str, factory: str, env: Mapping[str, str], world: BenchWorld, public_keys: Mapping[str, str],
            args: argparse.Namespace, wrk: str, work_dir: Path, run_id: str,
            script: Callable[[str, str], str], probes: list[ProbeCall], workload: str = "create",
            count_rows: Callable[[str], int] | None = None,
            db_pids: Callable[[], set[int]] = set,
            refusals: dict[str, str] | None = None) -> TargetRun:
    """``script(label, key_prefix)``: the Lua script of the warm-up or the measured run; ``refusals``: a form whose
    answer must be a signed 100, probed besides ``probes``."""
    measured_prefix = f"m{run_id}-"
    scripts = {}
    for label, prefix in (("warmup", f"w{run_id}-"), ("measured", measured_prefix)):
        scripts[label] = work_dir / f"{name}-{label}.lua"
        scripts[label].write_text(script(label, prefix))
    say(f"{name}: starting uvicorn ({args.workers} workers)")
    with running_app(factory, env, args.workers) as app:
        checked = probe(app.base_url, probes, public_keys)
        if refusals is not None:
            refused = refusal_probe(app.base_url, refusals, public_keys)
            checked = ProbeResult(checked=checked.checked + refused.checked,
                                  verified=checked.verified + refused.verified,
                                  problems=checked.problems + refused.problems)
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


@dataclass
class RefusalReport:
    """The invalid-keys workload: the refusal flood's rate against the create rate of the same run."""

    config: dict[str, Any]
    flood: TargetRun
    create: TargetRun
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.flood.wrk.rps / self.create.wrk.rps if self.create.wrk.rps else 0.0

    def check(self) -> None:
        for run in (self.flood, self.create):
            if run.server_exit is not None:
                self.problems.append(f"{run.name}: uvicorn exited with status {run.server_exit} during the run")
            if not run.probe.ok:
                self.problems.append(f"{run.name}: signature probe failed: {'; '.join(run.probe.problems)}")
        flood, create = self.flood.wrk, self.create.wrk
        if flood.socket_errors or flood.responses.get("other", 0) or flood.responses.get("401") != flood.requests:
            self.problems.append(f"{self.flood.name}: every answer must be a 401 with code 100: {flood.responses}, "
                                 f"socket errors {flood.errors}")
        if create.error_count or create.responses.get("453", 0) != create.requests:
            self.problems.append(f"{self.create.name}: every answer must be a 453: {create.responses}, "
                                 f"errors {create.errors}")

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "invalid_keys": _refusal_row(self.flood),
                           "create_meta": _refusal_row(self.create), "ratio": round(self.ratio, 3),
                           "ratio_of": "invalid-keys req/s / create-meta req/s", "ok": not self.problems,
                           "problems": self.problems}, indent=2)

    def to_table(self) -> str:
        c = self.config
        lines = [f"keymeta bench: {c['backend']} (doorbell: {c['broker']}), {c['workers']} uvicorn workers, wrk "
                 f"{c['connections']} connections / {c['threads']} threads / {c['duration']}, workload invalid-keys",
                 f"{'target':<13} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'answers':>9} {'signatures':>11} "
                 f"{'CPU ms/req: app':>16} {'db':>5}"]
        for run, code in ((self.flood, "100"), (self.create, "453")):
            w = run.wrk
            lines.append(f"{run.name:<13} {w.rps:>9.1f} {w.latency_ms['p50']:>8.1f} {w.latency_ms['p99']:>8.1f} "
                         f"{w.responses.get(code, 0):>5} {code} {run.probe.verified:>5}/{run.probe.checked:<5} "
                         f"{run.cpu_ms_per_request(run.app_cpu_s):>16.2f} {run.cpu_ms_per_request(run.db_cpu_s):>5.2f}")
        lines.append(f"ratio invalid-keys/create-meta: {self.ratio:.2f}")
        lines.extend(f"PROBLEM: {p}" for p in self.problems)
        return "\n".join(lines)


def _refusal_row(run: TargetRun) -> dict[str, Any]:
    return {"requests_per_second": round(run.wrk.rps, 1), "requests": run.wrk.requests,
            "latency_ms": {k: round(v, 2) for k, v in run.wrk.latency_ms.items()}, "responses": run.wrk.responses,
            "signatures_verified": f"{run.probe.verified}/{run.probe.checked}",
            "app_cpu_ms_per_request": round(run.cpu_ms_per_request(run.app_cpu_s), 3),
            "db_cpu_ms_per_request": round(run.cpu_ms_per_request(run.db_cpu_s), 3)}


def run_invalid_keys(args: argparse.Namespace, wrk: str, world: BenchWorld, api_env: Mapping[str, str],
                     work_dir: Path, run_id: str) -> RefusalReport:
    unknown = world.form(key="unused")
    unknown["api_key"] = UNKNOWN_API_KEY

    def flood_script(label: str, prefix: str) -> str:
        return invalid_keys_lua_script(unknown)

    flood = measure("invalid-keys", API_FACTORY, api_env, world, world.public_keys, args, wrk, work_dir, run_id,
                    flood_script, create_probes(world, f"{run_id}f"), workload="invalid-keys",
                    db_pids=world.backend_pids, refusals=unknown)
    create = measure("create-meta", API_FACTORY, api_env, world, world.public_keys, args, wrk, work_dir, run_id,
                     create_script(world, args), create_probes(world, run_id), db_pids=world.backend_pids)
    config = {"backend": args.backend, "broker": args.broker, "workers": args.workers,
              "connections": args.connections, "threads": args.threads, "duration": args.duration,
              "warmup": args.warmup, "workload": args.workload, "licenses": args.licenses}
    report = RefusalReport(config=config, flood=flood, create=create)
    report.check()
    return report


def run(args: argparse.Namespace, wrk: str) -> BenchReport | RefusalReport:
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
        if args.workload == "invalid-keys":
            return run_invalid_keys(args, wrk, world, api_env, work_dir, run_id)
        if args.workload == "mixed":
            pools = mixed_pools(world, args, run_id)
            say(f"mixed: writing {UPDATE_POOL_KEYS} pool keys on every license key and "
                f"{sum(p.delete_slots for p in pools.values())} keys to delete")
            seed_mixed(world, pools)

            def script(label: str, prefix: str) -> str:
                return mixed_lua_script(world.form(key="unused"), prefix, pools[label], args.threads, args.mix,
                                        keyed=not args.without_idempotency_keys)

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
    if isinstance(report, RefusalReport):
        print(report.to_json() if args.json else report.to_table())
    else:
        print(to_json(report) if args.json else to_table(report))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
