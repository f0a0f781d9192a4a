"""Rate limits of the signed endpoint: per API key, per client IP, and failed authentications per IP.

Built on the ``limits`` library's strategies. ``memory://`` keeps counters in this process (the embedded
default: no network at all); ``redis://…`` keeps them in Redis so that every API replica shares them. The
strategy defaults to the *sliding window counter*: O(1) memory per key (two counters), no 2× burst at a window
boundary as a fixed window allows, and on Redis one Lua script call per limit. The moving window is exact
but stores one entry per request (6000/minute = 6000 entries per key). The checks of one request are sent
concurrently, so a request that passes costs one round-trip time on Redis and none on memory; only a
refused request pays a second one (reading the window to compute ``Retry-After``).

Time comes from an injected ``clock`` (``time.time`` unless a test fixes it). It drives the in-process store,
so every window and ``Retry-After`` on ``memory://`` follows it; the library's own ``MemoryStorage`` reads the
wall clock itself and offers no hook, hence ``ProcessStorage`` here. A Redis store keeps time with its own
TTLs and the wall clock.

A store that cannot be reached fails *open* (logged as ``rate_limit.unavailable``): the limiter protects
the service, it must not take it down. Redis operations are bounded by short socket timeouts.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from limits import RateLimitItem, parse_many
from limits.aio.storage import MovingWindowSupport, RedisStorage, SlidingWindowCounterSupport, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from limits.storage.base import TimestampedSlidingWindow

from domain.access.checks import api_key_digest
from domain.platform.logs import get_logger
from domain.platform.settings import Settings

log = get_logger("keymeta.rate_limit")

Clock = Callable[[], float]  # Unix seconds

STRATEGIES: dict[str, type[RateLimiter]] = {
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
}
REDIS_TIMEOUT_SECONDS = 0.25
SWEEP_SECONDS = 60.0  # how often (on the clock) the in-process store drops expired counters

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


class ProcessStorage(Storage, MovingWindowSupport, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """Counters in this process, on the given clock; every method runs without yielding, so each is atomic.

    Same windows as the library's ``MemoryStorage`` (sliding-window keys aligned on the clock, fixed windows
    from the first hit, moving windows of hit times), with ``clock`` instead of ``time.time()``.
    """

    STORAGE_SCHEME = None  # not registered under a URL scheme: make_storage builds it

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)
        self._hits: dict[str, tuple[list[float], float]] = {}  # key -> (hit times newest first, window)
        self._next_sweep = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def _count(self, key: str, now: float) -> int:
        count, expires_at = self._counters.get(key, (0, 0.0))
        return count if expires_at > now else 0

    def _incr(self, key: str, expiry: float, amount: int, now: float) -> int:
        if now >= self._next_sweep:
            self._sweep(now)
        count, expires_at = self._counters.get(key, (0, 0.0))
        if expires_at <= now:
            count, expires_at = 0, now + expiry
        self._counters[key] = (count + amount, expires_at)
        return count + amount

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_SECONDS
        self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        self._hits = {k: v for k, v in self._hits.items() if v[0] and v[0][0] > now - v[1]}

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self._incr(key, expiry, amount, self._clock())

    async def get(self, key: str) -> int:
        return self._count(key, self._clock())

    async def get_expiry(self, key: str) -> float:
        now = self._clock()
        _, expires_at = self._counters.get(key, (0, now))
        return expires_at if expires_at > now else now

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        cleared = max(len(self._counters), len(self._hits))
        self._counters.clear()
        self._hits.clear()
        return cleared

    async def clear(self, key: str) -> None:
        self._counters.pop(key, None)
        self._hits.pop(key, None)

    # Moving window: the newest ``limit`` hit times of each key.
    def _live_hits(self, key: str, expiry: float, now: float) -> list[float]:
        hits, _ = self._hits.get(key, ([], expiry))
        return [t for t in hits if t > now - expiry]

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        now = self._clock()
        hits = self._live_hits(key, expiry, now)
        if len(hits) + amount > limit:
            return False
        self._hits[key] = (([now] * amount + hits)[:limit], expiry)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = self._clock()
        hits = self._live_hits(key, expiry, now)
        return (hits[-1], len(hits)) if hits else (now, 0)

    # Sliding window counter: the current and the previous window's counters, weighted by time.
    def _window(self, key: str, expiry: int, now: float) -> tuple[str, str, tuple[int, float, int, float]]:
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous_count = self._count(previous_key, now)
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous_count else 0.0
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous_key, current_key, (previous_count, previous_ttl, self._count(current_key, now), current_ttl)

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        now = self._clock()
        _, current_key, (previous_count, previous_ttl, current_count, _) = self._window(key, expiry, now)
        if math.floor(previous_count * previous_ttl / expiry) + current_count + amount > limit:
            return False
        self._incr(current_key, 2 * expiry, amount, now)
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return self._window(key, expiry, self._clock())[2]

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        previous_key, current_key, _ = self._window(key, expiry, self._clock())
        await self.clear(previous_key)
        await self.clear(current_key)


def make_storage(url: str, clock: Clock = time.time) -> Storage:
    """``memory://`` or ``redis://`` / ``rediss://`` / ``redis+unix://`` as given by the operator."""
    if url in ("memory://", "async+memory://"):
        return ProcessStorage(clock)
    if url.startswith(("redis://", "rediss://", "redis+unix://", "async+redis")):
        return RedisStorage(url if url.startswith("async+") else f"async+{url}", implementation="redispy",
                            wrap_exceptions=True, socket_timeout=REDIS_TIMEOUT_SECONDS,
                            socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
    raise ValueError("KEYMETA_RATE_LIMIT_STORAGE_URL must be memory:// or redis://…")


def _items(text: str) -> list[RateLimitItem]:
    return parse_many(text) if text.strip() else []


class RequestRateLimiter:
    def __init__(self, settings: Settings, clock: Clock = time.time) -> None:
        self._per_key = _items(settings.rate_limit_per_api_key)
        self._per_ip = _items(settings.rate_limit_per_ip)
        self._failed_auth = _items(settings.rate_limit_failed_auth_per_ip)
        self.enabled = settings.rate_limit_enabled and bool(self._per_key or self._per_ip or self._failed_auth)
        self._prefix = settings.rate_limit_key_prefix
        self._storage: Storage | None = None
        self._limiter: RateLimiter | None = None
        self._store_clock: Clock = time.time  # the clock the store's absolute times are on
        if self.enabled:
            self._storage = make_storage(settings.rate_limit_storage_url, clock)
            self._limiter = STRATEGIES[settings.rate_limit_strategy](self._storage)
            if isinstance(self._storage, ProcessStorage):
                self._store_clock = clock

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
            resets = await asyncio.gather(*(self._reset_in(limiter, item, ids) for _, item, ids in refused))
        except StorageError as exc:
            log.warning("rate_limit.unavailable", error=type(exc.storage_error).__name__)
            return None
        waits = [max(1, math.ceil(seconds)) for seconds in resets]
        worst = max(range(len(refused)), key=lambda i: waits[i])
        return RateLimited(scope=refused[worst][0], retry_after=waits[worst])

    async def _reset_in(self, limiter: RateLimiter, item: RateLimitItem, ids: tuple[str, ...]) -> float:
        """Seconds until the window of ``item`` frees a request (the library's reset time, on the store's clock)."""
        if isinstance(limiter, SlidingWindowCounterRateLimiter):
            # The library's stats add this to time.time() itself; the store's TTLs are relative, so read them.
            expiry = item.get_expiry()
            previous_count, previous_ttl, current_count, current_ttl = await cast(
                SlidingWindowCounterSupport, limiter.storage).get_sliding_window(item.key_for(*ids), expiry)
            resets = ([previous_ttl % (expiry / previous_count)] if previous_count else []) + (
                [current_ttl % expiry] if current_count else [])
            return min(resets, default=0.0)
        stats = await limiter.get_window_stats(item, *ids)
        return stats.reset_time - self._store_clock()

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
