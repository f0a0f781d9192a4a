"""Prometheus metrics: HTTP requests and latency per route template, backlog gauges computed at scrape time.

``keymeta_http_requests_total`` carries the HTTP status and, for the signed endpoint, the envelope code
(``create_meta`` reports it through :func:`record_result_code`; no header is added to the response).

With ``PROMETHEUS_MULTIPROC_DIR`` set (uvicorn ``--workers N``), prometheus-client keeps each process's
counters in files there and ``/metrics`` merges them, so any worker process answers for all of them. The
directory must exist and be emptied before the server starts. Backlog gauges come from the database at
scrape time, so they are the same whichever process answers.

Worker-side series (webhook attempts by outcome, attempt durations, endpoints by state, signing-key ages)
are also read from the database at scrape time (``domain.events.metrics_queries``): Celery's prefork children
cannot export in-process counters, and rows are exact and survive restarts. ``keymeta_webhook_attempts_total``
is a counter kept by an :class:`AttemptTally` per process (each attempt row is read once).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping

import anyio
from fastapi import APIRouter, Request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.events.metrics_queries import DURATION_SAMPLE, DURATION_WINDOW, AttemptTally, Backlog, backlog
from domain.platform.logs import get_logger

log = get_logger("keymeta.metrics")
router = APIRouter(include_in_schema=False)

RESULT_CODE_KEY = "keymeta_result_code"  # in scope["state"]
UNMATCHED = "unmatched"  # path label of requests no route matched (keeps scanners from adding series)
BACKLOG_TIMEOUT_SECONDS = 2.0

REQUESTS = Counter(
    "keymeta_http_requests", "HTTP requests by route template, HTTP status and envelope code",
    ["method", "path", "status", "code"],
)
LATENCY = Histogram(
    "keymeta_http_request_duration_seconds", "Time from request to the last byte of the response",
    ["method", "path"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def record_result_code(request: Request, code: int) -> None:
    """The signed endpoint's hook: label this request with its envelope code (100 … 901)."""
    request.scope.setdefault("state", {})[RESULT_CODE_KEY] = int(code)


def _path_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        status = 500  # what the server sends when the app raises before starting a response
        started = time.perf_counter()

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            path = _path_template(scope)
            method = scope.get("method", "")
            code = state.get(RESULT_CODE_KEY)
            REQUESTS.labels(method, path, str(status), "" if code is None else str(code)).inc()
            LATENCY.labels(method, path).observe(time.perf_counter() - started)


class _BacklogCollector(Collector):
    """The gauges of one scrape, from values read just before."""

    def __init__(self, figures: Backlog | None) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("keymeta_backlog_up", "1 when the backlog gauges below could be read")
        up.add_metric([], 0.0 if self.figures is None else 1.0)
        yield up
        figures = self.figures
        if figures is None:
            return
        events = GaugeMetricFamily("keymeta_outbox_pending_events",
                                   "Outbox events not yet consumed, by consumer", labels=["consumer"])
        events.add_metric(["audit"], figures.outbox_unaudited)
        events.add_metric(["webhooks_fan_out"], figures.outbox_unfanned)
        yield events
        ages = GaugeMetricFamily("keymeta_outbox_oldest_pending_age_seconds",
                                 "Age of the oldest unconsumed outbox event (0 when none), by consumer",
                                 labels=["consumer"])
        ages.add_metric(["audit"], figures.oldest_unaudited_age_seconds)
        ages.add_metric(["webhooks_fan_out"], figures.oldest_unfanned_age_seconds)
        yield ages
        if figures.last_audit_record_age_seconds is not None:
            last = GaugeMetricFamily("keymeta_audit_last_record_age_seconds",
                                     "Time since the newest audit record was appended")
            last.add_metric([], figures.last_audit_record_age_seconds)
            yield last
        yield _by_label(GaugeMetricFamily("keymeta_webhook_deliveries_open",
                                          "Webhook deliveries not finished, by status", labels=["status"]),
                        figures.webhook_deliveries_open)
        yield from _worker_series(figures)


def _worker_series(figures: Backlog) -> Iterator[Metric]:
    yield _by_label(GaugeMetricFamily("keymeta_webhook_deliveries_given_up",
                                      "Webhook deliveries that ended without success (failed: retries exhausted or "
                                      "a permanent refusal; cancelled: endpoint disabled or deleted), by status",
                                      labels=["status"]), figures.webhook_deliveries_given_up)
    yield _by_label(CounterMetricFamily("keymeta_webhook_attempts",
                                        "Webhook delivery attempts recorded, by outcome (success, failure, lost)",
                                        labels=["outcome"]), figures.webhook_attempts)
    durations = figures.webhook_attempt_durations
    if durations is not None:
        window = f"{int(DURATION_WINDOW.total_seconds() // 60)} minutes"
        sample = GaugeMetricFamily("keymeta_webhook_attempt_duration_sample_attempts",
                                   f"Attempts behind keymeta_webhook_attempt_duration_seconds (last {window}, "
                                   f"at most the newest {DURATION_SAMPLE})")
        sample.add_metric([], durations.count)
        yield sample
        if durations.quantiles:
            quantiles = GaugeMetricFamily("keymeta_webhook_attempt_duration_seconds",
                                          f"Webhook attempt duration quantiles over the attempts started in the "
                                          f"last {window} (at most the newest {DURATION_SAMPLE}; lost excluded)",
                                          labels=["quantile"])
            yield _by_label(quantiles, {f"{q:g}": value for q, value in durations.quantiles.items()})
    yield _by_label(GaugeMetricFamily("keymeta_webhook_endpoints", "Webhook endpoints by state", labels=["state"]),
                    figures.webhook_endpoints)
    yield _by_label(GaugeMetricFamily("keymeta_signing_key_age_seconds",
                                      "Time since the active signing key of each scope was activated",
                                      labels=["scope"]), figures.signing_key_ages_seconds)


def _by_label(family: GaugeMetricFamily | CounterMetricFamily, values: Mapping[str, float]) -> Metric:
    """One sample per label value, in label order."""
    for label, value in sorted(values.items()):
        family.add_metric([label], value)
    return family


def _process_registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def attempt_tally(request: Request) -> AttemptTally:
    """The process's one running count of webhook attempts (the scrape and the console's overview share it)."""
    state = request.app.state
    tally = getattr(state, "metrics_attempt_tally", None)
    if not isinstance(tally, AttemptTally):
        tally = state.metrics_attempt_tally = AttemptTally()
    return tally


async def _read_backlog(request: Request) -> Backlog | None:
    try:
        with anyio.fail_after(BACKLOG_TIMEOUT_SECONDS):
            async with request.app.state.engine.connect() as connection:
                return await backlog(connection, tally=attempt_tally(request))
    except Exception as exc:  # noqa: BLE001 — a scrape must still return the HTTP metrics
        log.warning("metrics.backlog_failed", error=repr(exc))
        return None


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    figures = await _read_backlog(request)
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_BacklogCollector(figures))
    body = generate_latest(_process_registry()) + generate_latest(scrape)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Cache-Control": "no-store"})
