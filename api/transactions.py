"""One unit of work for an async handler: ``work(session, *args)`` in one transaction, off the event loop (the
sync session would block it). The caller maps domain errors to its own answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from domain.platform.database import unit_of_work

T = TypeVar("T")


async def in_unit_of_work(work: Callable[..., T], *args: Any) -> T:
    def run() -> T:
        with unit_of_work() as session:
            return work(session, *args)

    return await run_in_threadpool(run)


