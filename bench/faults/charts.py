"""One picture per scenario: create latency (top) and webhook delivery lag (bottom) over the run, the fault
window shaded and the moment of recovery marked, on one time axis (seconds since the load started)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt

from bench.faults.measures import CREATED
from bench.faults.run import ScenarioRun

FAULT_COLOUR = "#f4a3a3"


def draw(run: ScenarioRun, path: Path, fault: str) -> Path:
    """Write the PNG of a scenario that ran; its path."""
    window = run.window
    assert window is not None, "a scenario that did not run has no picture"
    t0 = window.load_start
    figure, (latency, lag) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, constrained_layout=True)
    created = [s for s in run.samples if s.outcome == CREATED]
    others = [s for s in run.samples if s.outcome != CREATED]
    latency.scatter([s.due - t0 for s in created], [s.waited * 1000 for s in created], s=4, color="#1f77b4",
                    label="453 (created)")
    if others:
        latency.scatter([s.due - t0 for s in others], [max(s.waited * 1000, 0.1) for s in others], s=8,
                        color="#d62728", marker="x", label="other answer or no answer")
    latency.set_yscale("log")
    latency.set_ylabel("create latency, ms")
    latency.legend(loc="upper right", fontsize=8)
    lag.scatter([committed - t0 for committed, _, _ in run.delivery_lags],
                [value for _, _, value in run.delivery_lags], s=4, color="#2ca02c")
    lag.set_yscale("log")
    lag.set_ylabel("webhook lag, s\n(by commit time)")
    lag.set_xlabel("seconds since the load started")
    for axis in (latency, lag):
        axis.axvspan(window.fault_start - t0, max(window.fault_end, window.fault_start + 0.2) - t0,
                     color=FAULT_COLOUR, alpha=0.5, lw=0, zorder=0)  # under the points, not over them
        if run.result.recovery_s is not None:
            axis.axvline(window.fault_end + run.result.recovery_s - t0, color="#555555", ls="--", lw=1)
        axis.grid(alpha=0.3)
    recovered = "never" if run.result.recovery_s is None else f"{run.result.recovery_s:.1f} s after the fault"
    figure.suptitle(f"{run.result.scenario} ({run.backend}): {fault}\nshaded: the fault; dashed: recovered "
                    f"({recovered})", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
