"""Keeps a worker process's claims leased while it holds them: one thread renews them all every third of a lease.

A claim is held from the moment its caller starts sending it until the recorder is done with it (recorded, or
dropped because the database was away). While the process lives its claims never expire, however long an
attempt waits for its endpoint's turn or runs; when it dies they expire within one lease and the sweeper
hands them on. So the lease can be short (``KEYMETA_WEBHOOK_LEASE_SECONDS``): it bounds how long a dead
worker's deliveries wait, not how long an attempt may take.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from domain.platform.database import unit_of_work
from domain.platform.logs import get_logger
from domain.platform.per_process import PerProcess
from domain.platform.settings import get_settings
from domain.webhooks import delivery

log = get_logger("keymeta.webhooks")
RENEW_CHUNK = 1000  # claims per UPDATE statement
RETRY_SECONDS = 0.5  # after a failed renewal


class Leases:
    def __init__(self, lease_seconds: float, *, start: bool = True) -> None:
        self.lease_seconds = lease_seconds
        self._held: dict[int, int] = {}  # delivery id -> attempt number
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        # The renewing thread starts with the first hold, so it paces itself by the lease set by then.
        self._thread = threading.Thread(target=self._run, name="webhook-leases", daemon=True) if start else None

    def hold(self, claims: Iterable[delivery.Claim]) -> None:
        with self._lock:
            if self._thread is not None and self._thread.ident is None:  # not started yet
                self._thread.start()
            for claim in claims:  # a later attempt of the same delivery supersedes an earlier one, never the reverse
                if claim.attempt_no >= self._held.get(claim.delivery_id, 0):
                    self._held[claim.delivery_id] = claim.attempt_no

    def let_go(self, claims: Iterable[delivery.Claim]) -> None:
        with self._lock:
            for claim in claims:
                if self._held.get(claim.delivery_id) == claim.attempt_no:
                    del self._held[claim.delivery_id]

    def held(self) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(self._held.items())

    def renew(self) -> int:
        """Extend every held claim's lease to a full lease from now, in one transaction; rows renewed."""
        held = self.held()
        renewed = 0
        with unit_of_work() as session:
            for start in range(0, len(held), RENEW_CHUNK):
                renewed += delivery.extend_leases(session, held[start:start + RENEW_CHUNK], self.lease_seconds)
        return renewed

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        pause = self.lease_seconds / 3
        while not self._stopped.wait(pause):
            pause = self.lease_seconds / 3
            if not self._held:
                continue
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the thread must live on; it tries again soon
                log.warning("webhooks.lease_renewal_failed", error=str(exc), held=len(self._held))
                # Soon, not a third of a lease later: leases that ran out while the database was away must be
                # renewed before the sweeper (every 2 s) hands them to another worker.
                pause = min(pause, RETRY_SECONDS)


_leases = PerProcess(lambda: Leases(get_settings().webhook_lease_seconds))


def leases(lease_seconds: float) -> Leases:
    """This process's keeper, started on first use; renewing to ``lease_seconds`` from now on."""
    keeper = _leases.get()
    keeper.lease_seconds = lease_seconds
    return keeper
