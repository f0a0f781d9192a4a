"""CPU seconds spent by a set of processes (Linux /proc): a per-request cost that other load on the box
distorts far less than requests per second do."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields after it do not


def cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` (0 when it is gone or /proc is unavailable)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS if fields else 0.0


def process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


class CpuMeter:
    """CPU seconds used between ``start()`` and ``stop()`` by the processes ``pids()`` names (re-asked at
    stop, so processes that appeared in between count in full)."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids
        self._before: dict[int, float] = {}

    def start(self) -> None:
        self._before = {pid: cpu_seconds(pid) for pid in self._pids()}

    def stop(self) -> float:
        pids = set(self._pids()) | set(self._before)
        return sum(max(0.0, cpu_seconds(pid) - self._before.get(pid, 0.0)) for pid in pids)
