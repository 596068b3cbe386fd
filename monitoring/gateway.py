"""The heartbeat API's fast path: ``POST /api/v1/nodes/{name}/heartbeat`` answered in ASGI, ahead of Django.

Why: through Django a beat costs about 2 ms of CPU in the request cycle (middleware, routing,
ninja) plus a database query for the token, which caps a 2-core machine near 200 beats/s; the
issue asks for 2,000. Here the common case -- a known token, a well-formed body -- costs a JSON
parse and one round trip to the heartbeat store (on Redis, one script that checks the node's auth
version, applies the rate limit and records the beat).

It is only a cache in front of the API view, not a second implementation of its rules: whatever
it is not sure about (no or unknown token, another node's token, a malformed or oversized body,
an older incarnation, a Host Django would refuse, a plain-HTTP request Django would redirect) is
handed to Django untouched, body included, and answered by ``monitoring/api.py``. It answers by
itself only 200, 429 (the rate limit it applied) and 503 (store or database down).

Tokens are cached per process (digest -> node, incarnation, state). A per-node *auth version*
(``monitoring/heartbeats.py``) is bumped after every commit that saves the node's row (a state
change, a restart, a token rotation); each beat's store call compares it with the version the
cache entry was loaded at and reloads on a mismatch, so a rotated token is refused on its next
beat, in every server process. Entries also expire after ``CACHE_MAX_AGE`` seconds, so a bump lost
while the cache was down heals by itself.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.signals import setting_changed
from django.db import DatabaseError, close_old_connections
from django.http.request import split_domain_port, validate_host
from pydantic import ValidationError

from cluster.models import NODE_NAME_RE
from cluster.selectors import node_for_token
from cluster.services import hash_token
from idempotency.problems import PROBLEM_CONTENT_TYPE, problem_body

from .api import HeartbeatIn, heartbeat_reply, rate_limited
from .heartbeats import (
    VERSION_KEY_PREFIX,
    Beat,
    CacheHeartbeatStore,
    HeartbeatStoreUnavailable,
    auth_version,
    get_store,
    version_cache,
)
from .metrics import HEARTBEATS_RECEIVED
from .middleware import RETRY_AFTER as DATABASE_RETRY_AFTER
from .ratelimit import KEY_PREFIX as RATE_KEY_PREFIX
from .ratelimit import REDIS_GCRA_FUNCTION, RedisCacheRateLimiter, get_limiter, micros
from .settings import monitoring_settings

logger = logging.getLogger(__name__)

ROUTE = re.compile(rf"/api/v1/nodes/(?P<name>{NODE_NAME_RE.strip('^$')})/heartbeat")
# Seconds a cached token is trusted without a version bump (heals a bump lost while the cache was down).
CACHE_MAX_AGE = 60.0

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


# --- admitting a beat -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeAuth:
    name: str
    incarnation: int
    state: str
    version: int
    loaded_at: float  # time.monotonic()


class Outcome(enum.Enum):
    RECORDED = "recorded"
    RATE_LIMITED = "rate-limited"
    STALE = "stale"  # the node's auth version moved: reload the token and try again


class CacheIngest:
    """Version check, rate limit and record through the configured store and limiter (any cache).

    Three cache calls from a worker thread: what the embedded default (a file cache) can do.
    """

    def __init__(self) -> None:
        self.store, self.limiter = get_store(), get_limiter()

    async def admit(self, auth: NodeAuth, beat: Beat) -> tuple[Outcome, float]:
        return await sync_to_async(self._admit, thread_sensitive=False)(auth, beat)

    def _admit(self, auth: NodeAuth, beat: Beat) -> tuple[Outcome, float]:
        try:
            version = version_cache().get(VERSION_KEY_PREFIX + auth.name)
        except Exception as exc:
            raise HeartbeatStoreUnavailable(f"could not read the auth version of {auth.name}: {exc}") from exc
        if version is None or int(version) != auth.version:
            return Outcome.STALE, 0.0
        if self.limiter is not None:
            decision = self.limiter.hit(auth.name, now=beat.received_at)
            if not decision.allowed:
                return Outcome.RATE_LIMITED, decision.retry_after
        self.store.record(auth.name, beat)
        return Outcome.RECORDED, 0.0


_INGEST_SCRIPT = (
    REDIS_GCRA_FUNCTION
    + """
-- KEYS: the node's auth version, its rate-limit TAT, its latest beat.
-- ARGV: expected version, now (us), period (us; 0 = no limit), tolerance (us), beat, beat TTL (s).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {-1, 0}
end
local period = tonumber(ARGV[3])
if period > 0 then
  local allowed, wait = gcra(KEYS[2], tonumber(ARGV[2]), period, tonumber(ARGV[4]))
  if allowed == 0 then
    return {0, wait}
  end
end
redis.call('SET', KEYS[3], ARGV[5], 'EX', tonumber(ARGV[6]))
return {1, 0}
"""
)


class RedisIngest:
    """The same three steps as one Lua script on the store's Redis: one round trip, atomic.

    Keys and values are made exactly as django-redis makes them (``make_key``, ``client.encode``),
    so the sweeper reads these beats through the cache like any other. Beats of requests served
    concurrently by this process share round trips (``_Pipeline``).
    """

    def __init__(self, store: CacheHeartbeatStore) -> None:
        self.store, self.limiter = store, get_limiter()
        self.cache = caches[store.cache_alias]
        config = settings.CACHES[store.cache_alias]
        location = config["LOCATION"]
        self.url = location[0] if isinstance(location, list | tuple) else location
        self.timeout = config.get("OPTIONS", {}).get("SOCKET_TIMEOUT", 5)
        self._pipelines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pipeline] = weakref.WeakKeyDictionary()

    def _pipeline(self) -> _Pipeline:
        loop = asyncio.get_running_loop()
        pipeline = self._pipelines.get(loop)
        if pipeline is None:  # redis.asyncio clients belong to one event loop
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
            pipeline = self._pipelines[loop] = _Pipeline(client)
        return pipeline

    async def admit(self, auth: NodeAuth, beat: Beat) -> tuple[Outcome, float]:
        limit = self.limiter.limit if self.limiter is not None else None
        keys_and_args = (
            self.cache.make_key(VERSION_KEY_PREFIX + auth.name),
            self.cache.make_key(RATE_KEY_PREFIX + auth.name),
            self.cache.make_key(self.store.prefix + auth.name),
            str(auth.version),
            micros(beat.received_at),
            limit.period_us if limit else 0,
            limit.tolerance_us if limit else 0,
            self.cache.client.encode(beat.to_json()),
            self.store.ttl,
        )
        try:
            status, wait_us = await self._pipeline().run(keys_and_args)
        except Exception as exc:  # redis-py's connection, timeout and response errors
            raise HeartbeatStoreUnavailable(f"could not record a beat of {auth.name}: {exc}") from exc
        if status == -1:
            return Outcome.STALE, 0.0
        if status == 0:
            return Outcome.RATE_LIMITED, int(wait_us) / 1_000_000
        return Outcome.RECORDED, 0.0


class _Pipeline:
    """Runs the ingest script for concurrent requests in shared round trips, one batch in flight at a time.

    A beat that arrives while a batch is out waits for it to return and goes with the next one: at
    low load every beat has its own round trip, under load one write and one read carry dozens of
    beats (most of a beat's cost in redis-py is per round trip, not per command).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sha: str | None = None
        self.waiting: list[tuple[tuple, asyncio.Future]] = []
        self.sender: asyncio.Task | None = None

    async def run(self, keys_and_args: tuple) -> list[int]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((keys_and_args, future))
        if self.sender is None:
            self.sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    replies = await self._execute([item for item, _ in batch])
                except Exception as exc:
                    replies = [exc] * len(batch)
                for (_, future), reply in zip(batch, replies, strict=True):
                    if future.done():  # its request was cancelled (the client went away)
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        finally:
            self.sender = None

    async def _execute(self, items: list[tuple]) -> list[Any]:
        import redis.exceptions

        if self.sha is None:
            self.sha = await self.client.script_load(_INGEST_SCRIPT)
        replies = await self._evalsha(items)
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):  # Redis restarted: load it again
            self.sha = await self.client.script_load(_INGEST_SCRIPT)
            replies = await self._evalsha(items)
        return replies

    async def _evalsha(self, items: list[tuple]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            pipe.evalsha(self.sha, 3, *item)
        return await pipe.execute(raise_on_error=False)


def _ingest() -> CacheIngest | RedisIngest:
    """One script on Redis when the store, the limiter and the auth versions share a django-redis cache."""
    store, limiter = get_store(), get_limiter()
    alias = monitoring_settings.HEARTBEAT_RATE_CACHE
    if isinstance(store, CacheHeartbeatStore) and store.cache_alias == alias:
        from django_redis.cache import RedisCache

        if isinstance(caches[alias], RedisCache) and (limiter is None or isinstance(limiter, RedisCacheRateLimiter)):
            return RedisIngest(store)
    return CacheIngest()


# --- the ASGI middleware --------------------------------------------------------------------


def _load_auth(token: str, name: str) -> NodeAuth | None:
    """The node that ``token`` belongs to if it is ``name``, with the auth version read before the row."""
    try:
        version = auth_version(name)
        node = node_for_token(token)
    finally:
        close_old_connections()
    if node is None or node.name != name:
        return None
    return NodeAuth(node.name, node.incarnation, node.state, version, time.monotonic())


class HeartbeatFastPath:
    """ASGI middleware answering well-formed heartbeats of known nodes; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tokens: dict[str, NodeAuth] = {}
        self._ingest: CacheIngest | RedisIngest | None = None
        self._counter = HEARTBEATS_RECEIVED.labels(path="http")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        match = ROUTE.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None or not _django_would_serve(scope):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        limit = monitoring_settings.HEARTBEAT_MAX_BODY
        declared = headers.get(b"content-length", b"0").strip()
        if not declared.isdigit() or int(declared) > limit:
            return await self.app(scope, receive, send)
        messages, body = await _read_body(receive, limit)
        replay = _Replay(messages, receive)
        if body is None:  # over the limit without saying so: Django answers 413
            return await self.app(scope, replay, send)
        try:
            answer = await self._answer(match["name"], headers.get(b"authorization", b""), body)
        except HeartbeatStoreUnavailable as exc:
            problem = problem_body(503, "heartbeat-store-unavailable", "Heartbeat store unavailable", str(exc))
            answer = (503, problem, {"Retry-After": "1"})
        except DatabaseError as exc:
            logger.error("database unavailable for a heartbeat of %s: %s: %s", match["name"], type(exc).__name__, exc)
            detail = "the database did not answer; retry shortly"
            problem = problem_body(503, "database-unavailable", "Database unavailable", detail)
            answer = (503, problem, {"Retry-After": DATABASE_RETRY_AFTER})
        except Exception:
            # As the API's own handler does: logged with its traceback, the client learns nothing of the internals.
            logger.exception("heartbeat fast path error on %s", scope["path"])
            answer = (500, problem_body(500, "internal-error", "Internal server error", "the error was logged"), {})
        if answer is None:
            return await self.app(scope, replay, send)
        await _respond(send, scope, *answer)

    async def _answer(self, name: str, authorization: bytes, body: bytes) -> tuple[int, dict, dict] | None:
        """200 or 429 when this path can answer by itself, None to hand the request to Django."""
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            payload = HeartbeatIn.model_validate_json(body)
        except ValidationError:
            return None
        if self._ingest is None:
            self._ingest = _ingest()
        beat = Beat(incarnation=payload.incarnation, seq=payload.seq, received_at=time.time(), load=payload.load)
        digest = hash_token(token)
        for _attempt in range(2):
            auth = await self._auth(digest, token, name)
            if auth is None or payload.incarnation < auth.incarnation:
                return None
            outcome, retry_after = await self._ingest.admit(auth, beat)
            if outcome is Outcome.RECORDED:
                self._counter.inc()
                return 200, heartbeat_reply(name=name, state=auth.state, incarnation=auth.incarnation), {}
            if outcome is Outcome.RATE_LIMITED:
                refusal = rate_limited(name, retry_after)
                problem = problem_body(429, "rate-limited", "Too many heartbeats", refusal["detail"])
                return 429, problem, refusal["headers"]
            self._tokens.pop(digest, None)  # stale: reload once
        return None  # still moving: let Django decide from the database

    async def _auth(self, digest: str, token: str, name: str) -> NodeAuth | None:
        auth = self._tokens.get(digest)
        if auth is not None and time.monotonic() - auth.loaded_at < CACHE_MAX_AGE:
            return auth
        auth = await sync_to_async(_load_auth, thread_sensitive=False)(token, name)
        if auth is None:
            self._tokens.pop(digest, None)
        else:
            self._tokens[digest] = auth
        return auth


class _Replay:
    """``receive`` for the app we hand a request to: the messages already read, then the rest."""

    def __init__(self, messages: list[dict], receive: Callable[[], Awaitable[dict]]) -> None:
        self.messages, self.receive = list(messages), receive

    async def __call__(self) -> dict:
        if self.messages:
            return self.messages.pop(0)
        return await self.receive()


async def _read_body(receive: Callable[[], Awaitable[dict]], limit: int) -> tuple[list[dict], bytes | None]:
    """The request's messages and its body, or None for the body once it passes ``limit`` bytes."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":  # the client went away
            return messages, None
        size += len(message.get("body", b""))
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)


def _is_secure(scope: dict) -> bool:
    header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if header:
        name, value = header
        wanted = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        for key, found in scope["headers"]:
            if key == wanted:
                return found.decode("latin-1").split(",")[0].strip() == value
    return scope.get("scheme") == "https"


def _django_would_serve(scope: dict) -> bool:
    """False when Django would refuse the Host or redirect to HTTPS: then Django answers, as always."""
    if settings.SECURE_SSL_REDIRECT and not _is_secure(scope):
        return False
    host = next((value for key, value in scope["headers"] if key == b"host"), b"").decode("latin-1")
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


@functools.cache
def _security_headers(secure: bool) -> list[tuple[bytes, bytes]]:
    """What Django's SecurityMiddleware and XFrameOptionsMiddleware add to an API answer."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", settings.X_FRAME_OPTIONS.encode()),
        (b"cache-control", b"no-store"),
    ]
    if settings.SECURE_REFERRER_POLICY:
        headers.append((b"referrer-policy", settings.SECURE_REFERRER_POLICY.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()))
    if settings.SECURE_HSTS_SECONDS and secure:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append((b"strict-transport-security", value.encode()))
    return headers


def _forget_headers(*, setting: str, **kwargs: Any) -> None:
    _security_headers.cache_clear()


setting_changed.connect(_forget_headers, dispatch_uid="monitoring-gateway-security-headers")


async def _respond(send: Callable, scope: dict, status: int, body: dict, extra: dict[str, str]) -> None:
    content = json.dumps(body).encode()
    content_type = PROBLEM_CONTENT_TYPE if status >= 400 else "application/json"
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(content)).encode()),
        *_security_headers(_is_secure(scope)),
        *((name.lower().encode(), value.encode()) for name, value in extra.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
