"""The Redis lock backend: ``SET NX PX`` inside Lua scripts, fencing tokens, FIFO hand-off.

Keys of a lock share the hash tag ``{rmlock:<name>}``, so every script touches one slot and runs
on Redis Cluster:

- ``{rmlock:<name>}:lease``  ``"<token>|<acquired ms>|<owner>"`` with the lease as its PX expiry
- ``{rmlock:<name>}:token``  the fencing counter (``INCR``); never expires
- ``{rmlock:<name>}:queue``  waiters in arrival order (a sorted set scored by ``:seq``)
- ``{rmlock:<name>}:alive``  each waiter's deadline and ttl: a waiter that stops refreshing it loses its place
- ``{rmlock:<name>}:wake:<owner>``  the list one waiter blocks on (``BLPOP``); a hand-off pushes the grant

Tokens: the claim script takes ``max(INCR, TIME in microseconds)`` in the same script that sets
the lease, so tokens strictly increase per name even when Redis restarts without persistence
(or from an old snapshot): the counter restarts from the clock, which is past every token
handed out before. Release and extend compare the whole lease value (token and owner) before
touching the key. Fairness is FIFO with direct hand-off: a release (or a force-release) that
finds live waiters does not free the lock but grants it, in the same script, to the first
one, and pushes the grant to that waiter's wake list; the waiter's ``BLPOP`` returns holding
the lock, with no second round trip and no race with newcomers. A waiter also retries on its
own at the lease's expiry (a holder that died) or after a jittered fallback interval, and one
that gives up passes on a grant it may have received meanwhile.

Under contention a section costs a release, a claim that queues up and a ``BLPOP``. A process
whose last release of a name found others in line expects to wait for it next time and sends its
claim and its ``BLPOP`` together behind ``CLIENT REPLY SKIP`` (``RedisWaiter.claim_and_block``):
one send and one wake-up instead of two (8 processes on 2 cores, ten paired runs: 0.72-1.61x,
median 1.18x, the contended throughput of two separate calls, and 100-200 us less CPU a
section). Letting the releasing process take the lock again instead (a bounded barge, as the
database backend's ``MAX_BARGES`` does) was measured at 0.5-0.65x strict hand-off: the
releaser's next claim is one more round trip on the critical path than a direct hand-off, and
the first waiter has to be woken anyway in case the releaser does not come back.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from ..backoff import jittered
from ..lease import Lease, LeaseInfo, validate_name
from ..settings import lock_settings
from .base import BaseLockBackend, Grant, Waiter, actor_label, unavailable

logger = logging.getLogger("locks")

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

LIB = """
if redis.replicate_commands then redis.replicate_commands() end
local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end
local function fmt(n) return string.format('%.0f', n) end
local function owned_by(value, owner)
  return value and string.sub(value, -(#owner + 1)) == '|' .. owner
end
-- The first waiter whose deadline has not passed, and the lease ttl it asked for; dead ones are dropped.
local function live_head(queue, alive, now_ms)
  while true do
    local first = redis.call('ZRANGE', queue, 0, 0)[1]
    if not first then return false end
    local meta = redis.call('HGET', alive, first)
    local deadline, ttl
    if meta then deadline, ttl = string.match(meta, '^(%d+):(%d+)$') end
    if deadline and tonumber(deadline) >= now_ms then return first, ttl end
    redis.call('ZREM', queue, first)
    redis.call('HDEL', alive, first)
  end
end
-- Set the lease for owner with a token that is max(INCR, TIME in us): never backwards, even
-- after a restart without persistence.
local function grant(lease, token_key, owner, ttl, now_ms, now_us)
  local token = redis.call('INCR', token_key)
  if token < now_us then
    token = now_us
    redis.call('SET', token_key, fmt(token))
  end
  local value = fmt(token) .. '|' .. fmt(now_ms) .. '|' .. owner
  redis.call('SET', lease, value, 'PX', ttl)
  return value
end
-- Give the lock to the first live waiter and push the grant to its wake list (a key under the
-- same hash tag, so the same slot on Cluster). False when nobody waits.
local function hand_off(lease, token_key, queue, alive, wake_prefix, keep, now_ms, now_us)
  local head, ttl = live_head(queue, alive, now_ms)
  if not head then return false end
  local value = grant(lease, token_key, head, ttl, now_ms, now_us)
  redis.call('ZREM', queue, head)
  redis.call('HDEL', alive, head)
  local wake = wake_prefix .. head
  redis.call('LPUSH', wake, value)
  redis.call('PEXPIRE', wake, keep)
  return head
end
"""

# KEYS: lease, token, queue, alive, seq, own wake list.
# ARGV: owner, ttl ms, queue up (1/0), waiter ttl ms, first try (1/0), a BLPOP of the wake list
# follows (1/0): then a grant is also pushed to the wake list, where that BLPOP finds it.
# Returns {1, lease value, lease pttl} or {0, lease pttl, 1 if the caller is first in line}.
CLAIM = (
    LIB
    + """
local function claim()
local owner = ARGV[1]
-- The usual case, in two calls fewer: a first try (never queued, so nothing was handed to it and
-- it has no wake list) finds the lock free and nobody waiting.
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then
  local now_ms, now_us = clock()
  return {1, grant(KEYS[1], KEYS[2], owner, ARGV[2], now_ms, now_us), tonumber(ARGV[2])}
end
local now_ms, now_us = clock()
local current = redis.call('GET', KEYS[1])
if owned_by(current, owner) then
  -- handed to us by a release since our last look (its push may still be on its way)
  redis.call('DEL', KEYS[6])
  return {1, current, redis.call('PTTL', KEYS[1])}
end
local head = live_head(KEYS[3], KEYS[4], now_ms)
if not current and (not head or head == owner) then
  local value = grant(KEYS[1], KEYS[2], owner, ARGV[2], now_ms, now_us)
  if head then
    redis.call('ZREM', KEYS[3], owner)
    redis.call('HDEL', KEYS[4], owner)
  end
  redis.call('DEL', KEYS[6])
  return {1, value, tonumber(ARGV[2])}
end
if ARGV[3] == '1' then
  if not redis.call('ZSCORE', KEYS[3], owner) then
    redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), owner)
    if not head then head = owner end
  end
  local wttl = tonumber(ARGV[4])
  local keep = fmt(wttl * 10)
  redis.call('HSET', KEYS[4], owner, fmt(now_ms + wttl) .. ':' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[3], keep)
  redis.call('PEXPIRE', KEYS[4], keep)
  redis.call('PEXPIRE', KEYS[5], keep)
  -- the lease is not ours now, so anything in our wake list is an old grant that was lost since
  redis.call('DEL', KEYS[6])
end
return {0, redis.call('PTTL', KEYS[1]), head == owner and 1 or 0}
end
local result = claim()
if result[1] == 1 and ARGV[6] == '1' then
  redis.call('LPUSH', KEYS[6], result[2])
  redis.call('PEXPIRE', KEYS[6], ARGV[4])
end
return result
"""
)

# KEYS: lease, token, queue, alive. ARGV: lease value, wake prefix, wake list ttl ms.
# Returns 0 (not ours), 1 (released, nobody waited) or 2 (released while others waited).
RELEASE = (
    LIB
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
-- Nobody in line (the usual case): no hand-off, and no need to read the clock for one.
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
local now_ms, now_us = clock()
if not hand_off(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], now_ms, now_us) then
  redis.call('DEL', KEYS[1])
end
return 2
"""
)

# KEYS: lease. ARGV: lease value, ttl ms.
EXTEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease, token, queue, alive. ARGV: expected token or '', wake prefix, wake list ttl ms.
# Returns {0} or {1, the broken lease's value, its pttl}.
FORCE_RELEASE = (
    LIB
    + """
local value = redis.call('GET', KEYS[1])
if not value then return {0} end
if ARGV[1] ~= '' and string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then return {0} end
local pttl = redis.call('PTTL', KEYS[1])
local now_ms, now_us = clock()
if not hand_off(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], now_ms, now_us) then
  redis.call('DEL', KEYS[1])
end
return {1, value, pttl}
"""
)

# A waiter gives up (timeout, error, cancellation). KEYS: lease, token, queue, alive, own wake list.
# ARGV: owner, wake prefix, wake list ttl ms. A grant it may have received unseen is passed on.
DEQUEUE = (
    LIB
    + """
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5])
local current = redis.call('GET', KEYS[1])
if current and not owned_by(current, ARGV[1]) then return 0 end
local now_ms, now_us = clock()
if not hand_off(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], now_ms, now_us) and current then
  redis.call('DEL', KEYS[1])
end
return 1
"""
)

LEASE_PATTERN = "{rmlock:*}:lease"
BUSY_NAMES_KEPT = 1024  # RedisLockBackend.busy is cleared when it reaches this many names
# claim_and_block does not learn whether the holder is alive: it waits at most this long, seconds.
BLOCKED_CLAIM_WAIT = 0.2


class Keys:
    """The keys of one lock name (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.tag = "{rmlock:" + name + "}"
        self.lease = self.tag + ":lease"
        self.token = self.tag + ":token"
        self.queue = self.tag + ":queue"
        self.alive = self.tag + ":alive"
        self.seq = self.tag + ":seq"
        self.wake_prefix = self.tag + ":wake:"

    def wake(self, owner: str) -> str:
        return self.wake_prefix + owner


@functools.lru_cache(maxsize=1024)  # the same names are locked again and again
def keys_of(name: str) -> Keys:
    return Keys(name)


def name_of(lease_key: str) -> str:
    return lease_key[len("{rmlock:") : -len("}:lease")]


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000 + 0.5))


def from_ms(value: int | str) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def lease_value(lease: Lease) -> str:
    return lease.handle


class RedisLockBackend(BaseLockBackend):
    """Locks in the Redis at ``LOCATION``; ``OPTIONS`` are passed to redis-py's client."""

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        if not self.location:
            raise ImproperlyConfigured(f"LOCKS[{alias!r}] needs a LOCATION (a redis:// URL).")
        kwargs = dict(self.options)
        kwargs["decode_responses"] = True
        if "socket_timeout" in kwargs:
            kwargs.setdefault("socket_connect_timeout", kwargs["socket_timeout"])
        # One quick retry on a dropped connection (a pooled socket the server closed); redis-py's
        # default (10 retries with backoff) would stall a lock call for seconds when Redis is down.
        kwargs.setdefault("retry", Retry(NoBackoff(), 1))
        try:
            self.client = redis.Redis.from_url(self.location, **kwargs)
            pool = self.client.connection_pool
            pool.connection_class(**pool.connection_kwargs)  # unconnected: rejects unknown OPTIONS now
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"LOCKS[{alias!r}] has a bad LOCATION or OPTIONS: {exc}") from exc
        socket_timeout = kwargs.get("socket_timeout")
        # A BLPOP must return before the socket times out.
        self.max_block = 1.0 if not socket_timeout else max(0.01, min(1.0, socket_timeout / 2))
        self._claim = self.client.register_script(CLAIM)
        self._release_script = self.client.register_script(RELEASE)
        self._extend_script = self.client.register_script(EXTEND)
        self._force = self.client.register_script(FORCE_RELEASE)
        self._dequeue = self.client.register_script(DEQUEUE)
        # Names whose last release here found others waiting: the next acquire of one expects to
        # wait, and sends its claim and its BLPOP together (see RedisWaiter.claim_and_block).
        self.busy: set[str] = set()
        self.skip_reply = True  # False once the server refused CLIENT REPLY SKIP (an ACL, a proxy)
        self._held = threading.local()  # .connection: the thread's _HeldConnection (see command())

    def store_key(self) -> tuple:
        kwargs = self.client.connection_pool.connection_kwargs
        return (type(self).__name__, kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db"))

    def close(self) -> None:
        self.client.close()  # also disconnects the connections threads hold (they are the pool's)

    def close_thread_resources(self) -> None:
        self._held.__dict__.pop("connection", None)  # _HeldConnection gives it back to the pool

    def command(self, *args: Any) -> Any:
        """One command on the calling thread's own connection of the pool; its reply as redis-py parses it.

        The hot path of every acquire, check and release. ``client.execute_command`` takes a
        connection from the pool and gives it back around each command, behind a retry wrapper and
        redis-py's telemetry hooks: three quarters of its CPU (callgrind: 141k instructions a GET
        against 40k on a held connection). A thread keeps one connection instead, as a pooled
        client would keep it between commands anyway, and a dropped one is retried once on a fresh
        socket, as the client's ``Retry(NoBackoff(), 1)`` does. Only commands without a
        redis-py response callback go through here (EVALSHA, GET).
        """
        held = self._held.__dict__.get("connection")
        if held is None or held.pid != os.getpid():  # a forked child never reuses its parent's socket
            held = self._held.connection = _HeldConnection(self.client.connection_pool)
        connection = held.connection
        try:
            connection.send_command(*args)
            return connection.read_response()
        except REDIS_ERRORS:
            connection.disconnect()
        connection.send_command(*args)
        return connection.read_response()

    def call(self, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except REDIS_ERRORS as exc:
            raise unavailable(self.alias, exc) from exc

    def run_script(self, script: Script, keys: list, args: list) -> Any:
        """``EVALSHA`` of a registered script, loading it if the server lacks it (restart, failover).

        What redis-py's ``Script.__call__`` does, without its per-call import and tuple copies:
        they were a measurable part of an uncontended acquire + release.
        """
        try:
            try:
                return self.command("EVALSHA", script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                return script(keys, args)
        except REDIS_ERRORS as exc:
            raise unavailable(self.alias, exc) from exc

    @staticmethod
    def hand_off_args(keys: Keys) -> list:
        return [keys.wake_prefix, ms(lock_settings.WAITER_TTL * 2)]

    def _waiter(self, name: str, owner: str, ttl: float) -> Waiter:
        return RedisWaiter(self, name, owner, ttl)

    # --- owner-checked primitives ------------------------------------------------------------

    def _release(self, lease: Lease) -> bool:
        keys = keys_of(lease.name)
        result = self.run_script(
            self._release_script,
            [keys.lease, keys.token, keys.queue, keys.alive],
            [lease_value(lease), *self.hand_off_args(keys)],
        )
        if result == 2:
            if len(self.busy) >= BUSY_NAMES_KEPT:
                self.busy.clear()
            self.busy.add(lease.name)
        elif result == 1:
            self.busy.discard(lease.name)
        return result != 0

    def _extend(self, lease: Lease, ttl: float) -> datetime | None:
        keys = keys_of(lease.name)
        ok = self.run_script(self._extend_script, [keys.lease], [lease_value(lease), ms(ttl)])
        return timezone.now() + timedelta(seconds=ttl) if ok == 1 else None

    def _verify(self, lease: Lease) -> bool:
        return self.call(self.command, "GET", keys_of(lease.name).lease) == lease_value(lease)

    # --- operators ------------------------------------------------------------------------------

    def held(self) -> list[LeaseInfo]:
        def read() -> list[LeaseInfo]:
            keys = list(self.client.scan_iter(match=LEASE_PATTERN, count=1000))
            if not keys:
                return []
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            replies = pipe.execute()
            now = timezone.now()
            infos = []
            for key, value, pttl in zip(keys, replies[::2], replies[1::2], strict=True):
                if value is None or pttl is None or pttl < 0:
                    continue
                token, acquired, owner = value.split("|", 2)
                expires = now + timedelta(milliseconds=pttl)
                infos.append(LeaseInfo(name_of(key), owner, int(token), from_ms(acquired), expires, self.alias))
            return sorted(infos, key=lambda info: info.acquired_at)

        return self.call(read)

    def force_release(self, name: str, *, actor: Any, token: int | None = None) -> bool:
        """Break the lease of ``name`` (handing the lock to the next waiter), then write the audit entry."""
        validate_name(name)
        actor_label(actor)
        keys = Keys(name)
        expected = "" if token is None else str(int(token))
        result = self.run_script(
            self._force,
            [keys.lease, keys.token, keys.queue, keys.alive],
            [expected, *self.hand_off_args(keys)],
        )
        if result[0] != 1:
            return False
        value, pttl = result[1], int(result[2])
        found_token, acquired, owner = value.split("|", 2)
        expires_at = timezone.now() + timedelta(milliseconds=max(pttl, 0))
        info = LeaseInfo(name, owner, int(found_token), from_ms(acquired), expires_at, self.alias)
        # Redis and the database share no transaction: the audit entry is written right after the
        # delete, and if that write fails the error reaches the operator.
        self.record_force_release(info, actor=actor)
        return True


class _HeldConnection:
    """A connection taken from the pool by one thread for its commands; given back when the thread ends."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self.pid = os.getpid()
        self.connection = pool.get_connection()

    def __del__(self) -> None:
        if self.pid == os.getpid():
            try:
                self.pool.release(self.connection)
            except Exception:  # noqa: S110 (interpreter shutdown: nothing left to give it back to)
                pass


class RedisWaiter(Waiter):
    """One acquire call on Redis: its place in line, its wake list, a grant handed to it."""

    def __init__(self, backend: RedisLockBackend, name: str, owner: str, ttl: float) -> None:
        self.backend = backend
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self.keys = keys_of(name)
        self.wake_key = self.keys.wake(owner)
        self.queued = False
        self.pttl = -2
        self.first = False
        self.last_sent = 0.0
        self.first_try = True
        self.blocked = False
        self.handed: str | None = None

    def grant(self, value: str, sent: float) -> Grant:
        token, acquired_ms, _ = value.split("|", 2)
        acquired_at = from_ms(acquired_ms)
        self.queued = False
        return Grant(int(token), acquired_at, acquired_at + timedelta(seconds=self.ttl), sent, value)

    def try_claim(self, *, enqueue: bool) -> Grant | None:
        handed, self.handed = self.handed, None
        # A grant pushed by a release happened after our last claim was sent, so that send time is
        # a safe start for the lease; an old push (we paused past the ttl) is checked by a claim.
        if handed is not None and time.monotonic() < self.last_sent + self.ttl * 0.9:
            return self.grant(handed, self.last_sent)
        if enqueue and self.first_try and self.name in self.backend.busy and self.backend.skip_reply:
            sent = time.monotonic()
            if self.claim_and_block(self.fallback_timeout(self.deadline - sent, BLOCKED_CLAIM_WAIT)):
                self.first_try = False
                self.last_sent = sent
                self.queued = True  # or granted; either way abandon() leaves nothing behind
                handed, self.handed = self.handed, None
                if handed is not None and time.monotonic() < sent + self.ttl * 0.9:
                    return self.grant(handed, sent)
                self.blocked = True
                return None
        keys = self.keys
        sent = time.monotonic()
        result = self.backend.run_script(
            self.backend._claim,
            [keys.lease, keys.token, keys.queue, keys.alive, keys.seq, self.wake_key],
            [
                self.owner,
                ms(self.ttl),
                "1" if enqueue else "0",
                ms(lock_settings.WAITER_TTL),
                "1" if self.first_try else "0",
                "0",
            ],
        )
        self.first_try = False
        self.last_sent = sent
        if result[0] == 1:
            # Count the lease from what is left of it: a lease handed to us earlier has less.
            left = int(result[2]) / 1000
            return self.grant(result[1], sent - max(0.0, self.ttl - left))
        self.queued = self.queued or enqueue
        self.pttl = int(result[1])
        self.first = result[2] == 1
        return None

    def claim_and_block(self, timeout: float) -> bool:
        """Claim (queuing up) and wait for the grant in one round trip and one wake-up, not two of each.

        For an acquire that expects to wait (this process's last release of the name found others
        in line). Sent together: ``CLIENT REPLY SKIP``, the claim, which on success pushes its grant
        to our wake list, and a ``BLPOP`` of that list, so the only reply is the grant (ours or one
        a release handed us) or nothing after ``timeout``. Without the claim's reply we do not know
        the holder's pttl, so ``timeout`` is short: the claim that follows it learns the rest. A
        claim the server could not run (a script it has forgotten) only costs that wait. False
        when nothing useful came back (a dropped connection, CLIENT REPLY refused): make a plain
        claim instead.
        """
        keys = self.keys
        claim_keys = [keys.lease, keys.token, keys.queue, keys.alive, keys.seq, self.wake_key]
        args = [self.owner, ms(self.ttl), "1", ms(lock_settings.WAITER_TTL), "1", "1"]
        pool = self.backend.client.connection_pool
        try:
            conn = pool.get_connection()
        except REDIS_ERRORS:
            return False  # the plain claim that follows reports it (or retries)
        try:
            conn.send_packed_command(
                conn.pack_commands(
                    [
                        ("CLIENT", "REPLY", "SKIP"),
                        ("EVALSHA", self.backend._claim.sha, len(claim_keys), *claim_keys, *args),
                        ("BLPOP", self.wake_key, timeout),
                    ]
                )
            )
            try:
                popped = conn.read_response()
            except redis.exceptions.ResponseError as exc:
                popped = exc
            if not (popped is None or (isinstance(popped, list) and len(popped) == 2 and popped[0] == self.wake_key)):
                # Not a BLPOP's reply: CLIENT REPLY SKIP was refused or ignored, and what else is
                # owed on this connection is unknown, so it is closed (which also ends its BLPOP).
                conn.disconnect()
                self.backend.skip_reply = False
                logger.warning(
                    "lock backend %r: CLIENT REPLY SKIP was refused (%r); waiters claim and wait in two round trips",
                    self.backend.alias,
                    popped,
                )
                return False
        except REDIS_ERRORS:
            return False  # redis-py has closed the connection; the plain claim that follows retries
        finally:
            pool.release(conn)
        if popped:
            self.handed = popped[1]
        return True

    def fallback_timeout(self, remaining: float, longest: float = math.inf) -> float:
        timeout = jittered(lock_settings.WAITER_TTL / 3, random.random)  # noqa: S311 (jitter, not a secret)
        return max(0.001, min(timeout, longest, remaining, self.backend.max_block))

    def wait(self, remaining: float) -> None:
        if self.blocked:  # claim_and_block has just waited
            self.blocked = False
            return
        timeout = self.fallback_timeout(remaining)
        if self.first and self.pttl > 0:
            # the holder may die: retry the moment its lease runs out
            timeout = max(0.001, min(self.pttl / 1000 + 0.002, remaining, self.backend.max_block))
        popped = self.backend.call(self.backend.client.blpop, [self.wake_key], timeout=timeout)
        if popped:
            self.handed = popped[1]

    def abandon(self, *, after_error: bool) -> None:
        """Leave the line; a grant handed to us meanwhile (or lost with an error) goes to the next waiter."""
        if not (self.queued or after_error or self.handed):
            return
        self.queued = False
        self.handed = None
        keys = self.keys
        self.backend.run_script(
            self.backend._dequeue,
            [keys.lease, keys.token, keys.queue, keys.alive, self.wake_key],
            [self.owner, *self.backend.hand_off_args(keys)],
        )
