"""One table (or one JSON document) for both targets, create-meta's ratio to the bare ceiling and the checks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.probe import ProbeResult
from bench.wrk import WrkResult

TARGET_RATIO = 0.5
CEILING = "bare ASGI: parse + RSA-2048 sign, no database, no framework"


@dataclass(frozen=True)
class TargetRun:
    name: str
    wrk: WrkResult
    probe: ProbeResult
    db_rows: int | None = None  # create-meta only: meta rows written by the measured run
    server_exit: int | None = None  # uvicorn's exit status if it was gone when wrk finished
    app_cpu_s: float = 0.0  # CPU seconds of the uvicorn processes during the measured run
    db_cpu_s: float = 0.0  # CPU seconds of the (local) PostgreSQL backends serving the bench database

    def cpu_ms_per_request(self, seconds: float) -> float:
        return 1000 * seconds / self.wrk.requests if self.wrk.requests else 0.0


@dataclass
class BenchReport:
    config: dict[str, Any]
    api: TargetRun
    ceiling: TargetRun
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.api.wrk.rps / self.ceiling.wrk.rps if self.ceiling.wrk.rps else 0.0

    @property
    def cpu_ratio(self) -> float:
        """Ceiling CPU per request / create-meta (app + db) CPU per request: what the req/s ratio would be on
        a box doing nothing else, less noisy than req/s when it is busy (wrk's own CPU left out)."""
        api = self.api.cpu_ms_per_request(self.api.app_cpu_s + self.api.db_cpu_s)
        return self.ceiling.cpu_ms_per_request(self.ceiling.app_cpu_s) / api if api else 0.0

    def check(self) -> None:
        """Collect every reason not to trust the numbers."""
        connections = int(self.config["connections"])
        for run in (self.api, self.ceiling):
            if run.server_exit is not None:
                self.problems.append(f"{run.name}: uvicorn exited with status {run.server_exit} during the run "
                                     "(negative: killed by that signal, from outside the bench)")
            if not run.probe.ok:
                self.problems.append(f"{run.name}: signature probe failed: {'; '.join(run.probe.problems)}")
            if run.wrk.error_count:
                self.problems.append(f"{run.name}: {run.wrk.error_count} errors {run.wrk.errors}")
            not_created = run.wrk.responses.get("452", 0) + run.wrk.responses.get("other", 0)
            if not_created:
                self.problems.append(f"{run.name}: {not_created} responses were not 453 {run.wrk.responses}")
        counted, rows = self.api.wrk.responses.get("453", 0), self.api.db_rows
        # wrk stops counting at the deadline while up to one request per connection is still in flight.
        if rows is None or not counted <= rows <= counted + connections:
            self.problems.append(f"create-meta: {rows} meta rows in the database, {counted} 453 responses counted")


def _row(run: TargetRun) -> dict[str, Any]:
    return {
        "requests_per_second": round(run.wrk.rps, 1),
        "requests": run.wrk.requests,
        "latency_ms": {k: round(v, 2) for k, v in run.wrk.latency_ms.items()},
        "errors": run.wrk.error_count,
        "error_detail": run.wrk.errors,
        "responses": run.wrk.responses,
        "signatures_verified": f"{run.probe.verified}/{run.probe.checked}",
        "app_cpu_ms_per_request": round(run.cpu_ms_per_request(run.app_cpu_s), 3),
        "db_cpu_ms_per_request": round(run.cpu_ms_per_request(run.db_cpu_s), 3),
        **({"db_meta_rows": run.db_rows} if run.db_rows is not None else {}),
    }


def to_json(report: BenchReport) -> str:
    return json.dumps({
        "config": report.config,
        "create_meta": _row(report.api),
        "ceiling": _row(report.ceiling),
        "ratio": round(report.ratio, 3),
        "ratio_of": f"create-meta req/s / ceiling req/s (ceiling: {CEILING})",
        "cpu_ratio": round(report.cpu_ratio, 3),
        "target_ratio": TARGET_RATIO,
        "ok": not report.problems,
        "problems": report.problems,
    }, indent=2)


def to_table(report: BenchReport) -> str:
    c = report.config
    lines = [
        f"keymeta bench: {c['backend']} (doorbell: {c.get('broker', 'embedded')}), {c['workers']} uvicorn workers, "
        f"wrk {c['connections']} connections / "
        f"{c['threads']} threads / {c['duration']}",
        f"{'target':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'453s':>8} {'signatures':>11} "
        f"{'CPU ms/req: app':>16} {'db':>5}",
    ]
    for run in (report.api, report.ceiling):
        w = run.wrk
        lines.append(f"{run.name:<12} {w.rps:>9.1f} {w.latency_ms['p50']:>8.1f} {w.latency_ms['p99']:>8.1f} "
                     f"{w.error_count:>7} {w.responses.get('453', 0):>8} "
                     f"{run.probe.verified:>5}/{run.probe.checked:<5} "
                     f"{run.cpu_ms_per_request(run.app_cpu_s):>16.2f} {run.cpu_ms_per_request(run.db_cpu_s):>5.2f}")
    verdict = "meets" if report.ratio >= TARGET_RATIO else "below"
    lines.append(f"ceiling: {CEILING}")
    lines.append(f"ratio create-meta/ceiling: {report.ratio:.2f} of the ceiling's req/s ({verdict} the "
                 f"{TARGET_RATIO} target); "
                 f"by CPU per request: {report.cpu_ratio:.2f}")
    lines.append(f"database meta rows: {report.api.db_rows}, 453 responses counted by wrk: "
                 f"{report.api.wrk.responses.get('453', 0)}")
    lines.extend(f"PROBLEM: {p}" for p in report.problems)
    return "\n".join(lines)
