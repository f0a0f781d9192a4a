"""``python -m bench.faults``: each fault under a steady load of creates, one table row and one picture per scenario.

    python -m bench.faults --backend embedded|postgres-rabbitmq [--scenario NAME ...] [--short]

Every scenario runs on a stack of its own (fresh database, every process started for it), so one scenario's
backlog never shows in the next one's row. ``--short`` is the CI pace: faults of a few seconds at a low rate.
Exit status: 0 when every scenario that ran met its goals, 1 when one missed a goal, 2 when the bench could not
run; a scenario that could not be set up is "not run" with its reason, in the table and on stderr.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from bench.embedded import INTERRUPTED, INTERRUPTED_MESSAGE, exit_on_sigterm
from bench.faults.run import Pace, ScenarioRun, run_scenario, say
from bench.faults.scenarios import SCENARIOS
from bench.faults.stack import BACKENDS
from bench.faults.table import summary, to_markdown
from bench.server import REPO_ROOT

CHARTS = REPO_ROOT / "docs" / "faults"
LOGS = REPO_ROOT / "var" / "faults"
SHORT = Pace(rate=20.0, lead=3.0, tail=4.0, settle=60.0, licenses=8)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, default="embedded")
    parser.add_argument("--scenario", action="append", choices=tuple(SCENARIOS), default=None,
                        help="run only these (repeatable; default: every scenario)")
    parser.add_argument("--short", action="store_true", help="the CI pace: short faults, a low rate")
    parser.add_argument("--rate", type=float, default=None, help="creates per second (default 50, short 20)")
    parser.add_argument("--settle", type=float, default=None,
                        help="longest wait for the follow-up work after the load (default 420 s, short 60 s)")
    parser.add_argument("--charts", type=Path, default=CHARTS, help=f"where the PNGs go (default {CHARTS})")
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument("--logs", type=Path, default=LOGS,
                        help=f"each scenario's process logs are kept under this dir (default {LOGS})")
    args = parser.parse_args(argv)
    if args.rate is not None and not 0 < args.rate <= 500:
        parser.error("need 0 < --rate <= 500")
    return args


def pace_of(args: argparse.Namespace) -> Pace:
    pace = SHORT if args.short else Pace()
    return Pace(rate=args.rate or pace.rate, lead=pace.lead, tail=pace.tail, timeout=pace.timeout,
                settle=pace.settle if args.settle is None else args.settle, licenses=pace.licenses, logs=args.logs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    pace = pace_of(args)
    runs: list[ScenarioRun] = []
    try:
        for name in args.scenario or SCENARIOS:
            scenario = SCENARIOS[name]
            if args.short:
                pace = replace(pace, fault_seconds=scenario.short_seconds)
            run = run_scenario(scenario, args.backend, pace)
            runs.append(run)
            if not run.result.ran:
                say(f"{name}: NOT RUN: {run.result.not_run}")
            elif not args.no_charts:
                path = args.charts / f"{args.backend}-{name}.png"
                from bench.faults.charts import draw  # matplotlib only where pictures are drawn

                say(f"{name}: picture {draw(run, path, scenario.fault)}")
    except (RuntimeError, OSError) as exc:
        say(str(exc))
        return 2
    except KeyboardInterrupt:
        say(INTERRUPTED_MESSAGE)
        return INTERRUPTED
    results = [run.result for run in runs]
    print(f"keymeta faults: {args.backend}, {pace.rate:g} creates/s" + (" (short)" if args.short else ""))
    print(to_markdown(results))
    print(summary(results))
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
