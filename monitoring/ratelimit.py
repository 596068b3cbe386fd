"""Per-node rate limit of the heartbeat API: GCRA (a token bucket kept as one timestamp) in the cache.

The generic cell rate algorithm keeps, per node, the "theoretical arrival time" (TAT) of its next
beat: each accepted beat pushes it one period (``1 / rate``) further; a beat is refused while the
TAT is more than ``(burst - 1)`` periods ahead of now, and told to retry when it no longer would be.
That is a token bucket of ``burst`` tokens refilled at ``rate`` per second, stored as one number:
whole microseconds, so the arithmetic is exact in Python and in Redis' Lua (doubles) alike and the
``burst``-th beat of a burst is never refused by a rounding error.

Cost on the hot path: one cache round trip per beat. On Redis (django-redis) it is one atomic
script (``EVALSHA``); on other caches (the embedded default's file cache) a read and a write of a
local file, not atomic: two processes may both let one beat too many through, which a rate limit
against a misbehaving node can afford. Rejected beats do not consume the budget.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.core.signals import setting_changed

from .heartbeats import HeartbeatStoreUnavailable
from .settings import monitoring_settings

KEY_PREFIX = "rm:hb-rate:"


@dataclass(frozen=True)
class RateLimit:
    """``rate`` beats per second sustained, ``burst`` of them back to back."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, int | float) or not self.rate > 0:
            raise ValueError(f"rate must be a number > 0, got {self.rate!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be an integer >= 1, got {self.burst!r}")

    @property
    def period_us(self) -> int:
        """Microseconds one beat adds to the TAT."""
        return max(1, round(1_000_000 / self.rate))

    @property
    def tolerance_us(self) -> int:
        """How far ahead of now the TAT may run: the other ``burst - 1`` beats of a burst."""
        return (self.burst - 1) * self.period_us


def micros(seconds: float) -> int:
    return int(seconds * 1_000_000)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tat: int  # the TAT to store, in microseconds (unchanged when refused)
    retry_after: float  # seconds until a beat would be accepted (0 when allowed)


def gcra(*, tat: int | None, now: float, limit: RateLimit) -> Decision:
    """One beat at ``now`` (seconds) against the stored ``tat`` (microseconds; None: no recent beat). Pure."""
    now_us = micros(now)
    tat = now_us if tat is None or tat < now_us else tat
    ahead = tat - now_us
    if ahead > limit.tolerance_us:
        return Decision(False, tat, (ahead - limit.tolerance_us) / 1_000_000)
    return Decision(True, tat + limit.period_us, 0.0)


# The same decision as gcra(), atomically in Redis, in integer microseconds (exact in Lua's doubles
# up to 2**53, some 285 years of Unix time): a Lua function returning (allowed, microseconds to wait),
# shared by the limiter's own script and the heartbeat fast path's (monitoring/gateway.py).
REDIS_GCRA_FUNCTION = """
local function gcra(key, now, period, tolerance)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  if tat - now > tolerance then
    return 0, tat - now - tolerance
  end
  local new_tat = tat + period
  redis.call('SET', key, string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
  return 1, 0
end
"""

_REDIS_GCRA = (
    REDIS_GCRA_FUNCTION
    + """
local allowed, wait = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {allowed, wait}
"""
)


def refusal_detail(node: str, limit: RateLimit, retry_after: float) -> tuple[str, int]:
    """The 429's detail text and its ``Retry-After`` in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(retry_after))
    return (
        f"node {node} may send {limit.rate:g} beats/s (bursts of {limit.burst}); retry in {seconds} s",
        seconds,
    )


class CacheRateLimiter:
    """The limiter's state in a Django cache: one key per node, expiring once the bucket is full again."""

    def __init__(self, *, limit: RateLimit, cache: str = "default") -> None:
        self.limit, self.cache_alias = limit, cache

    @property
    def _cache(self) -> Any:
        return caches[self.cache_alias]

    def hit(self, node: str, *, now: float) -> Decision:
        """Count one beat of ``node`` at ``now`` (wall-clock seconds); raises HeartbeatStoreUnavailable."""
        key = KEY_PREFIX + node
        try:
            decision = gcra(tat=self._cache.get(key), now=now, limit=self.limit)
            if decision.allowed:
                self._cache.set(key, decision.tat, timeout=math.ceil(decision.tat / 1_000_000 - now) + 1)
        except Exception as exc:  # the cache backends raise their client's own errors
            raise HeartbeatStoreUnavailable(f"could not check the heartbeat rate of {node}: {exc}") from exc
        return decision


class RedisCacheRateLimiter(CacheRateLimiter):
    """The same on django-redis, as one atomic script: one round trip, no lost update between processes."""

    def __init__(self, *, limit: RateLimit, cache: str = "default") -> None:
        super().__init__(limit=limit, cache=cache)
        self._script: Any = None

    def hit(self, node: str, *, now: float) -> Decision:
        cache = self._cache
        try:
            client = cache.client.get_client(write=True)
            if self._script is None:
                self._script = client.register_script(_REDIS_GCRA)
            allowed, wait_us = self._script(
                keys=[cache.make_key(KEY_PREFIX + node)],
                args=[micros(now), self.limit.period_us, self.limit.tolerance_us],
                client=client,
            )
        except Exception as exc:  # redis-py's connection and timeout errors
            raise HeartbeatStoreUnavailable(f"could not check the heartbeat rate of {node}: {exc}") from exc
        return Decision(bool(allowed), 0, int(wait_us) / 1_000_000)


_limiter: CacheRateLimiter | None = None
_limiter_lock = threading.Lock()


def get_limiter() -> CacheRateLimiter | None:
    """The process's heartbeat limiter, or None when ``HEARTBEAT_RATE`` is None (no limit)."""
    global _limiter
    if monitoring_settings.HEARTBEAT_RATE is None:
        return None
    if _limiter is None:
        with _limiter_lock:
            if _limiter is None:
                limit = RateLimit(monitoring_settings.HEARTBEAT_RATE, monitoring_settings.HEARTBEAT_BURST)
                alias = monitoring_settings.HEARTBEAT_RATE_CACHE
                # The atomic script where the cache is Redis; a read and a write anywhere else.
                cls = RedisCacheRateLimiter if _is_django_redis(caches[alias]) else CacheRateLimiter
                _limiter = cls(limit=limit, cache=alias)
    return _limiter


def _is_django_redis(cache: Any) -> bool:
    try:
        from django_redis.cache import RedisCache
    except ImportError:  # django-redis is a requirement, but the limiter works without it
        return False
    return isinstance(cache, RedisCache)


def _reset_limiter(*, setting: str, **kwargs: Any) -> None:
    global _limiter
    if setting in ("RINGMASTER", "CACHES"):
        _limiter = None


setting_changed.connect(_reset_limiter, dispatch_uid="monitoring-reset-heartbeat-limiter")
