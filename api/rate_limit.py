"""Rate limits of the signed endpoint: per API key, per client IP, and failed authentications per IP.

Built on the ``limits`` library. ``memory://`` keeps counters in this process (the embedded default: no
network at all); ``redis://…`` keeps them in Redis so that every API replica shares them. The strategy
defaults to the *sliding window counter*: O(1) memory per key (two counters), no 2× burst at a window
boundary as a fixed window allows, and on Redis one Lua script call per limit. The moving window is exact
but stores one entry per request (6000/minute = 6000 entries per key). The checks of one request are sent
concurrently, so a request that passes costs one round-trip time on Redis and none on memory; only a
refused request pays a second one (reading the window to compute ``Retry-After``).

A store that cannot be reached fails *open* (logged as ``rate_limit.unavailable``): the limiter protects
the service, it must not take it down. Redis operations are bounded by short socket timeouts.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError

from domain.access.checks import api_key_digest
from domain.platform.logs import get_logger
from domain.platform.settings import Settings

log = get_logger("keymeta.rate_limit")

STRATEGIES: dict[str, type[RateLimiter]] = {
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
}
REDIS_TIMEOUT_SECONDS = 0.25

# Scopes, as they appear in the refusal's errors and in the store's keys.
API_KEY = "api_key"
IP = "ip"
FAILED_AUTH = "failed_auth"


@dataclass(frozen=True)
class RateLimited:
    scope: str
    retry_after: int  # whole seconds, at least 1

    def errors(self) -> dict[str, list[str]]:
        reason = {API_KEY: "too many requests with this API key",
                  IP: "too many requests from this IP address",
                  FAILED_AUTH: "too many failed authentication attempts from this IP address"}[self.scope]
        return {"rate_limit": [f"{reason}; retry after {self.retry_after} s"]}


def make_storage(url: str) -> Storage:
    """``memory://`` or ``redis://`` / ``rediss://`` / ``redis+unix://`` as given by the operator."""
    if url in ("memory://", "async+memory://"):
        return MemoryStorage()
    if url.startswith(("redis://", "rediss://", "redis+unix://", "async+redis")):
        return RedisStorage(url if url.startswith("async+") else f"async+{url}", implementation="redispy",
                            wrap_exceptions=True, socket_timeout=REDIS_TIMEOUT_SECONDS,
                            socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
    raise ValueError("KEYMETA_RATE_LIMIT_STORAGE_URL must be memory:// or redis://…")


def _items(text: str) -> list[RateLimitItem]:
    return parse_many(text) if text.strip() else []


class RequestRateLimiter:
    def __init__(self, settings: Settings) -> None:
        self._per_key = _items(settings.rate_limit_per_api_key)
        self._per_ip = _items(settings.rate_limit_per_ip)
        self._failed_auth = _items(settings.rate_limit_failed_auth_per_ip)
        self.enabled = settings.rate_limit_enabled and bool(self._per_key or self._per_ip or self._failed_auth)
        self._prefix = settings.rate_limit_key_prefix
        self._storage: Storage | None = None
        self._limiter: RateLimiter | None = None
        if self.enabled:
            self._storage = make_storage(settings.rate_limit_storage_url)
            self._limiter = STRATEGIES[settings.rate_limit_strategy](self._storage)

    async def check(self, api_key: str | None, source_ip: str | None) -> RateLimited | None:
        """Count this request against its key and IP; ``None`` means it may proceed."""
        if self._limiter is None:
            return None
        limiter = self._limiter
        ip = source_ip or "unknown"
        checks: list[tuple[str, RateLimitItem, tuple[str, ...], bool]] = []  # scope, item, ids, consume
        if api_key is not None:
            # The digest, as the database holds it: the store never sees a key in clear.
            checks += [(API_KEY, item, (self._prefix, API_KEY, api_key_digest(api_key)), True)
                       for item in self._per_key]
        checks += [(IP, item, (self._prefix, IP, ip), True) for item in self._per_ip]
        checks += [(FAILED_AUTH, item, (self._prefix, FAILED_AUTH, ip), False) for item in self._failed_auth]
        try:
            allowed = await asyncio.gather(*(
                limiter.hit(item, *ids) if consume else limiter.test(item, *ids)
                for _, item, ids, consume in checks))
            refused = [(scope, item, ids) for (scope, item, ids, _), ok in zip(checks, allowed, strict=True)
                       if not ok]
            if not refused:
                return None
            resets = await asyncio.gather(*(limiter.get_window_stats(item, *ids) for _, item, ids in refused))
        except StorageError as exc:
            log.warning("rate_limit.unavailable", error=type(exc.storage_error).__name__)
            return None
        now = time.time()
        waits = [max(1, math.ceil(stats.reset_time - now)) for stats in resets]
        worst = max(range(len(refused)), key=lambda i: waits[i])
        return RateLimited(scope=refused[worst][0], retry_after=waits[worst])

    async def failed_authentication(self, source_ip: str | None) -> None:
        """Count a 100/101 answer against the IP's (tighter) failed-authentication limit."""
        if self._limiter is None or not self._failed_auth:
            return
        limiter = self._limiter
        ids = (self._prefix, FAILED_AUTH, source_ip or "unknown")
        try:
            await asyncio.gather(*(limiter.hit(item, *ids) for item in self._failed_auth))
        except StorageError as exc:
            log.warning("rate_limit.unavailable", error=type(exc.storage_error).__name__)

    async def close(self) -> None:
        bridge: Any = getattr(self._storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()
        timer = getattr(self._storage, "timer", None)
        if timer is not None and not timer.done():
            timer.cancel()
