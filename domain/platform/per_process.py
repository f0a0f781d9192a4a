"""One instance per process, made on first use: a forked child makes its own, since it must not share its
parent's threads, event loop or sockets."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._current: tuple[int, T] | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._current is None or self._current[0] != os.getpid():
                self._current = (os.getpid(), self._make())
            return self._current[1]

    def made(self) -> T | None:
        """This process's instance if it has made one (none made here: None)."""
        current = self._current
        return current[1] if current is not None and current[0] == os.getpid() else None
