"""One table (or one JSON document) for both targets, the workload's ratio to the bare ceiling and the checks.

Workloads: ``create`` (every request a create-meta) and ``mixed`` (creates, updates, gets and deletes in the
shares of ``bench.wrk.MIX``); the ceiling always answers creates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.probe import ProbeResult
from bench.wrk import MIX, OPERATIONS, WrkResult

TARGET_RATIO = 0.5
TARGET_RATIOS = {"create": TARGET_RATIO, "mixed": 0.6}
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
    workload: str = "create"  # what the wrk script sent (the ceiling: always create)
    deleted_rows: int | None = None  # mixed only: rows of the measured delete pool gone after the run

    def cpu_ms_per_request(self, seconds: float) -> float:
        return 1000 * seconds / self.wrk.requests if self.wrk.requests else 0.0


@dataclass
class BenchReport:
    config: dict[str, Any]
    api: TargetRun
    ceiling: TargetRun
    problems: list[str] = field(default_factory=list)

    @property
    def workload(self) -> str:
        return self.api.workload

    @property
    def target_ratio(self) -> float:
        return TARGET_RATIOS[self.workload]

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
            if run.workload == "mixed":
                self._check_mixed(run, connections)
                continue
            not_created = run.wrk.responses.get("452", 0) + run.wrk.responses.get("other", 0)
            if not_created:
                self.problems.append(f"{run.name}: {not_created} responses were not 453 {run.wrk.responses} "
                                     "(a 901 may be the per-license cap on meta keys: more --licenses)")
        counted, rows = self.api.wrk.responses.get("453", 0), self.api.db_rows
        # wrk stops counting at the deadline while up to one request per connection is still in flight.
        if rows is None or not counted <= rows <= counted + connections:
            self.problems.append(f"{self.api.name}: {rows} meta rows in the database, {counted} 453 responses "
                                 "counted")
        if self.workload == "mixed":
            deleted, counted = self.api.deleted_rows, self.api.wrk.responses.get("252", 0)
            if deleted is None or not counted <= deleted <= counted + connections:
                self.problems.append(f"{self.api.name}: {deleted} rows of the delete pool gone, {counted} 252 "
                                     "responses counted")

    def _check_mixed(self, run: TargetRun, connections: int) -> None:
        """Every answer is its operation's success code; every request sent was answered but those cut off."""
        responses = run.wrk.responses
        if responses.get("other", 0):
            self.problems.append(f"{run.name}: {responses['other']} responses were none of "
                                 f"{'/'.join(str(code) for _, code in OPERATIONS.values())} {responses}")
        if responses.get("delete_pool_exhausted", 0):
            self.problems.append(f"{run.name}: {responses['delete_pool_exhausted']} deletes found the delete pool "
                                 "used up (more --licenses, or a larger pool)")
        answered, sent = responses.get("other", 0), 0
        for op, (_, code) in OPERATIONS.items():
            ok, op_sent = responses.get(str(code), 0), responses.get(f"sent_{op}", 0)
            answered, sent = answered + ok, sent + op_sent
            if ok > op_sent:
                self.problems.append(f"{run.name}: {ok} {code} answers for {op_sent} {op} requests sent")
        # wrk stops with up to one request per connection in flight, and calls request() once more at start-up to
        # check the script (in the first thread; that request is never sent).
        if not 0 <= sent - answered <= connections + 1:
            self.problems.append(f"{run.name}: {sent} requests sent, {answered} answered")


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
    name = "create_meta" if report.workload == "create" else report.workload
    return json.dumps({
        "config": report.config,
        name: {**_row(report.api),
               **({"deleted_rows": report.api.deleted_rows} if report.api.deleted_rows is not None else {})},
        "ceiling": _row(report.ceiling),
        "ratio": round(report.ratio, 3),
        "ratio_of": f"{report.api.name} req/s / ceiling req/s (ceiling: {CEILING})",
        "cpu_ratio": round(report.cpu_ratio, 3),
        "target_ratio": report.target_ratio,
        "ok": not report.problems,
        "problems": report.problems,
    }, indent=2)


def to_table(report: BenchReport) -> str:
    c = report.config
    licenses = f", {c['licenses']} license keys" if "licenses" in c else ""
    lines = [
        f"keymeta bench: {c['backend']} (doorbell: {c.get('broker', 'embedded')}), {c['workers']} uvicorn workers, "
        f"wrk {c['connections']} connections / "
        f"{c['threads']} threads / {c['duration']}, workload {report.workload}{licenses}",
        f"{'target':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'success':>8} {'signatures':>11} "
        f"{'CPU ms/req: app':>16} {'db':>5}",
    ]
    for run in (report.api, report.ceiling):
        w = run.wrk
        success = sum(w.responses.get(str(code), 0) for _, code in OPERATIONS.values())
        lines.append(f"{run.name:<12} {w.rps:>9.1f} {w.latency_ms['p50']:>8.1f} {w.latency_ms['p99']:>8.1f} "
                     f"{w.error_count:>7} {success:>8} "
                     f"{run.probe.verified:>5}/{run.probe.checked:<5} "
                     f"{run.cpu_ms_per_request(run.app_cpu_s):>16.2f} {run.cpu_ms_per_request(run.db_cpu_s):>5.2f}")
    verdict = "meets" if report.ratio >= report.target_ratio else "below"
    lines.append(f"ceiling: {CEILING}")
    lines.append(f"ratio {report.api.name}/ceiling: {report.ratio:.2f} of the ceiling's req/s ({verdict} the "
                 f"{report.target_ratio} target); "
                 f"by CPU per request: {report.cpu_ratio:.2f}")
    responses = report.api.wrk.responses
    if report.workload == "mixed":
        mix = c.get("mix", MIX)
        lines.append("operations (mix " + ", ".join(f"{op} {share} %" for op, share in mix.items()) + "): " +
                     ", ".join(f"{op} {responses.get(str(code), 0)}/{responses.get(f'sent_{op}', 0)} {code}"
                               for op, (_, code) in OPERATIONS.items()) +
                     f", other {responses.get('other', 0)}")
        lines.append(f"delete pool rows gone: {report.api.deleted_rows}, 252 responses counted by wrk: "
                     f"{responses.get('252', 0)}")
    lines.append(f"database meta rows created: {report.api.db_rows}, 453 responses counted by wrk: "
                 f"{responses.get('453', 0)}")
    lines.extend(f"PROBLEM: {p}" for p in report.problems)
    return "\n".join(lines)
