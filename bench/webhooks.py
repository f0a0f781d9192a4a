"""Webhook delivery throughput: keymeta's delivery path vs a raw httpx POST loop, same sink, same concurrency.

    python -m bench.webhooks [--endpoints 10] [--events 100] [--threads 16] [--postgres ADMIN_URL]
    python -m bench.webhooks --scale-out 1,2 [--events 200]

A uvicorn sink (a bare ASGI app answering 200) runs in a subprocess. keymeta is measured in-process through
``domain.webhooks.jobs`` as a ``webhooks.deliver`` task runs it: 200 ids per batch (the doorbell's message
size), claim → signed POSTs on the process's asyncio loop over kept-alive connections (each endpoint at most
its ``max_in_flight`` at once) → attempts recorded in groups by the recorder thread. The baseline POSTs the
same bodies with ``--threads`` threads, once with a keep-alive pool and once with a new connection per
request. CPU is this process's (client side; the database server and the sink are not counted). The database is
the embedded PostgreSQL server under a var dir of the run's own (stopped at the end), or with ``--postgres`` a
scratch database on that server (dropped at the end).

``--scale-out 1,2`` measures instead how delivery grows with worker processes: each round's deliveries are
split into disjoint shares, as worker processes share a queue, and delivered by that many processes at once
(each started and connected first, then released together); deliveries/s is all of them over the time until
the last process is done, rounds interleaved.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.embedded import INTERRUPTED, INTERRUPTED_MESSAGE, exit_on_sigterm
from bench.world import database_url


async def sink_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """ASGI sink: read the body, answer 200."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([str(Path(sys.executable).parent / "uvicorn"), "bench.webhooks:sink_app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the sink did not start")


# CPU of this process per POST, per round, by what was measured.
CPU_MS: dict[str, list[float]] = {"keymeta CPU ms per delivery": [], "raw keep-alive CPU ms per POST": []}


def raw_loop(urls: list[str], body: bytes, threads: int, keep_alive: bool) -> float:
    """POSTs per second of a plain httpx loop over ``urls``."""
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads if keep_alive else 0)
    headers = {"content-type": "application/json"} | ({} if keep_alive else {"connection": "close"})
    with httpx.Client(limits=limits, timeout=10) as client:
        started, cpu = time.perf_counter(), time.process_time()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            codes = list(pool.map(lambda url: client.post(url, content=body, headers=headers).status_code, urls))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if keep_alive:
        CPU_MS["raw keep-alive CPU ms per POST"].append(cpu * 1000 / max(len(urls), 1))
    assert set(codes) == {200}, set(codes)
    return len(urls) / elapsed


def setup_endpoints(endpoints: int, port: int) -> int:
    """A product, an assigned license key and ``endpoints`` endpoints on the sink; returns the license key id."""
    from domain import catalog
    from domain.platform.database import unit_of_work
    from domain.platform.settings import get_settings
    from domain.signing.master_key import load_master_key
    from domain.webhooks import endpoints as endpoint_service
    from domain.webhooks import ssrf
    from domain.webhooks.audit_events import CLI

    settings = get_settings()
    master_key = load_master_key(settings)
    with unit_of_work() as session:
        product = catalog.create_product(session, name="bench")
        license_row = catalog.create_license_key(session, product_id=product.id, key=f"LK-{uuid.uuid4().hex[:8]}",
                                                 status="assigned")
        for i in range(endpoints):
            endpoint_service.create_endpoint(session, url=f"http://127.0.0.1:{port}/e/{i}", event_types=None,
                                             master_key=master_key, actor=CLI,
                                             allowed=ssrf.parse_allowed(settings.webhook_allowed_cidrs))
        return license_row.id


def new_deliveries(license_key_id: int, events: int) -> tuple[float, list[int]]:
    """New events, fanned out as the task does it: (fan-out rows/s, delivery ids)."""
    from domain.events.outbox import META_CREATED, add_event
    from domain.license_meta.models import LicenseKeyMeta
    from domain.platform.database import unit_of_work
    from domain.webhooks import jobs

    with unit_of_work() as session:
        event_ids = []
        for _ in range(events):
            meta = LicenseKeyMeta(license_key_id=license_key_id, key=f"key-{uuid.uuid4().hex}",
                                  value="bench value " * 4, identifier="bench.example")
            session.add(meta)
            session.flush()
            event_ids.append(add_event(session, META_CREATED, {}, subject_id=meta.id))

    started = time.perf_counter()
    delivery_ids: list[int] = []
    for start in range(0, len(event_ids), 50):
        delivery_ids += jobs.fan_out_events(event_ids[start:start + 50])
    return len(delivery_ids) / (time.perf_counter() - started), delivery_ids


def deliver(delivery_ids: list[int]) -> None:
    from domain.webhooks import jobs

    for start in range(0, len(delivery_ids), 200):  # one webhooks.deliver message carries up to 200 ids
        jobs.deliver(delivery_ids[start:start + 200])


def check_delivered(delivery_ids: list[int]) -> bytes:
    """Every delivery succeeded; returns one body (what the raw loop sends)."""
    from sqlalchemy import func, select

    from domain.platform.database import unit_of_work
    from domain.webhooks.models import WebhookDelivery

    with unit_of_work() as session:
        done = session.scalar(select(func.count()).select_from(WebhookDelivery)
                              .where(WebhookDelivery.id.in_(delivery_ids), WebhookDelivery.status == "succeeded"))
        body = session.scalars(select(WebhookDelivery.body).limit(1)).one().encode()
    assert done == len(delivery_ids), (done, len(delivery_ids))
    return body


def keymeta_round(license_key_id: int, events: int) -> tuple[float, float, int, bytes]:
    """New events, fanned out and delivered as the tasks do it: (fan-out rows/s, deliveries/s, deliveries, body)."""
    fan_out_rate, delivery_ids = new_deliveries(license_key_id, events)
    started, cpu = time.perf_counter(), time.process_time()
    deliver(delivery_ids)
    delivered, cpu = time.perf_counter() - started, time.process_time() - cpu
    CPU_MS["keymeta CPU ms per delivery"].append(cpu * 1000 / max(len(delivery_ids), 1))
    return fan_out_rate, len(delivery_ids) / delivered, len(delivery_ids), check_delivered(delivery_ids)


def share_worker() -> None:
    """A child process of ``--scale-out``: reads its delivery ids, connects, says ready, waits for "go",
    delivers, prints its seconds."""
    ids = json.loads(sys.stdin.readline())
    from domain.platform.database import sync_engine
    from domain.platform.logs import configure_logging
    from domain.platform.settings import get_settings

    configure_logging(get_settings())
    with sync_engine().connect():
        pass  # the pool's first connection opens before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    deliver(ids)
    print(time.perf_counter() - started, flush=True)


def scale_out_round(license_key_id: int, events: int, processes: int) -> float:
    """Deliveries/s of ``processes`` processes delivering disjoint shares of one round's deliveries at once."""
    _, delivery_ids = new_deliveries(license_key_id, events)
    children = [subprocess.Popen([sys.executable, "-c", "import bench.webhooks as w; w.share_worker()"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    try:
        for n, child in enumerate(children):
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(delivery_ids[n::processes]) + "\n")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            assert child.stdout is not None
            float(child.stdout.readline())  # the child is done
        elapsed = time.perf_counter() - started
    finally:
        for child in children:
            child.kill()
            child.wait(10)
    check_delivered(delivery_ids)
    return len(delivery_ids) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default="", help="admin URL: a scratch database is created and dropped "
                        "(default: the embedded PostgreSQL server of a var dir of its own, stopped afterwards)")
    parser.add_argument("--scale-out", default="", metavar="N,M",
                        help="compare deliveries/s of N, M, … worker processes instead (e.g. 1,2)")
    args = parser.parse_args()
    scale_out = [int(n) for n in args.scale_out.split(",") if n.strip()] if args.scale_out else []
    if any(n < 1 for n in scale_out):
        parser.error("--scale-out takes process counts of 1 or more, e.g. 1,2")

    exit_on_sigterm()
    port = _free_port()
    sink = start_sink(port)
    workdir = tempfile.TemporaryDirectory(prefix="keymeta-bench-webhooks-")
    var_dir = Path(workdir.name) / "var"
    backend = "postgres" if args.postgres else "embedded"
    try:
        with database_url(backend, args.postgres, var_dir) as url:
            os.environ.pop("KEYMETA_DATABASE_URL", None)  # unset: the embedded server of KEYMETA_VAR_DIR
            os.environ.update({
                **({"KEYMETA_DATABASE_URL": url} if url else {}),
                "KEYMETA_VAR_DIR": str(var_dir), "KEYMETA_LOG_LEVEL": "WARNING",
                "KEYMETA_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                "KEYMETA_WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
            })
            from domain.platform.logs import configure_logging
            from domain.platform.settings import get_settings

            configure_logging(get_settings())
            license_key_id = setup_endpoints(args.endpoints, port)
            if scale_out:
                print_scale_out(license_key_id, args, scale_out)
                return
            rows: dict[str, list[float]] = {"fan-out rows/s": [], "keymeta deliveries/s": [],
                                            "raw httpx POST/s, new connection each": [],
                                            "raw httpx POST/s, keep-alive pool": []}
            for _ in range(args.repeat):  # interleaved, so background load hits all three alike
                fan_rate, rate, count, body = keymeta_round(license_key_id, args.events)
                urls = [f"http://127.0.0.1:{port}/e/{i % args.endpoints}" for i in range(count)]
                rows["fan-out rows/s"].append(fan_rate)
                rows["keymeta deliveries/s"].append(rate)
                rows["raw httpx POST/s, new connection each"].append(raw_loop(urls, body, args.threads, False))
                rows["raw httpx POST/s, keep-alive pool"].append(raw_loop(urls, body, args.threads, True))
            database = "scratch database on PostgreSQL" if args.postgres else "embedded PostgreSQL"
            print(f"{count} deliveries per round ({args.endpoints} endpoints × {args.events} events), "
                  f"{args.threads} threads, {database}, body {len(body)} B, {os.cpu_count()} CPUs, "
                  f"median of {args.repeat} (min–max)")
            ours = statistics.median(rows["keymeta deliveries/s"])
            for name, values in rows.items():
                median = statistics.median(values)
                ratio = f"   keymeta = {ours / median:.2f}×" if name.startswith("raw") else ""
                print(f"  {name:<40}{median:8.0f}  ({min(values):.0f}–{max(values):.0f}){ratio}")
            for name, values in CPU_MS.items():
                print(f"  {name:<40}{statistics.median(values):8.2f}  ({min(values):.2f}–{max(values):.2f})")
    finally:
        sink.terminate()
        sink.wait(10)
        workdir.cleanup()


def print_scale_out(license_key_id: int, args: argparse.Namespace, counts: list[int]) -> None:
    rates: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.repeat):  # interleaved, so background load hits every count alike
        for n in counts:
            rates[n].append(scale_out_round(license_key_id, args.events, n))
    base = statistics.median(rates[counts[0]])
    print(f"{args.endpoints * args.events} deliveries per round ({args.endpoints} endpoints × {args.events} events), "
          f"{os.cpu_count()} CPUs, median of {args.repeat} (min–max)")
    for n, values in rates.items():
        median = statistics.median(values)
        label = f"{n} worker process{'es' if n > 1 else ''}, deliveries/s"
        print(f"  {label:<40}{median:8.0f}  ({min(values):.0f}–{max(values):.0f})   {median / base:.2f}×")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print(f"bench: {INTERRUPTED_MESSAGE}", file=sys.stderr)
        sys.exit(INTERRUPTED)
