"""The fault table: one Markdown row per scenario, the goals it missed in its last column ("ok" when none), and
"not run" with the reason for a scenario the machine could not set up."""

from __future__ import annotations

import math

from bench.faults.measures import ScenarioResult

COLUMNS = ("scenario", "sent", "answers by code", "5xx", "p99 before ms", "p99 fault ms", "max wait ms",
           "written", "audited", "delivered", "lost", "dup ids", "recover s", "goals")


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0f}"


def answers(result: ScenarioResult) -> str:
    return ", ".join(f"{code}: {count}" for code, count in result.answers.items())


def row(result: ScenarioResult) -> list[str]:
    if not result.ran:
        return [result.scenario, *["–"] * (len(COLUMNS) - 2), f"NOT RUN: {result.not_run}"]
    recovery = "never" if result.recovery_s is None else f"{result.recovery_s:.1f}"
    return [result.scenario, str(result.sent), answers(result), str(result.server_errors),
            _ms(result.p99_before_ms), _ms(result.p99_fault_ms), _ms(result.max_wait_ms), str(result.written),
            str(result.audited), str(result.delivered), str(result.lost), str(result.duplicates), recovery,
            "ok" if not result.problems else "FAIL: " + "; ".join(result.problems)]


def to_markdown(results: list[ScenarioResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(result)) + " |" for result in results]
    return "\n".join(lines)


def summary(results: list[ScenarioResult]) -> str:
    ran = [r for r in results if r.ran]
    failed = [r.scenario for r in ran if r.problems]
    not_run = [r.scenario for r in results if not r.ran]
    return (f"{len(ran) - len(failed)} met every goal, {len(failed)} missed one"
            + (f" ({', '.join(failed)})" if failed else "")
            + f", {len(not_run)} not run" + (f" ({', '.join(not_run)})" if not_run else ""))
