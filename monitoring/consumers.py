"""WebSocket consumers: the dashboard's live stream (a snapshot, then coalesced deltas) and its actions.

Two sources feed a dashboard connection:

- The ``cluster`` group of the channel layer carries events (membership changes, lock changes)
  from any process (``monitoring/events.py``). Each connection batches them: the first event of a
  quiet spell goes out at once, later ones at most every ``EVENT_FLUSH_INTERVAL`` seconds.
- Heartbeats never touch the database or a signal, so tables (nodes, held locks, the ring, the
  idempotency keys, recent jobs) are read by one ``LiveTables`` producer per process, every
  ``interval`` seconds or sooner when an event says something moved, and only the changed rows are
  pushed to every connection of the process (a topic's rows only to the connections that asked).
  A thousand nodes beating at 1 Hz thus cost one read per second per process and reach a browser
  as one message per second.

Each connection writes through its own bounded outbox, so a slow browser never holds up the others:
when its outbox overflows, its queued deltas are dropped and it is sent a fresh snapshot instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connections

from cluster.models import NODE_NAME_RE
from cluster.ring import HashRing

from . import dashboard

logger = logging.getLogger(__name__)

# Everything that should reach dashboards is sent to this group (see monitoring/events.py).
CLUSTER_GROUP = "cluster"

CLOSE_ANONYMOUS = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_BIG = 1009  # RFC 6455 "message too big"
CLOSE_POLICY = 1008  # RFC 6455 "policy violation": actions sent faster than their replies are read

# The largest message a browser may send (an action is a few dozen bytes).
MAX_FRAME = 4096
# Events of one connection are batched: at most one batch per this many seconds.
EVENT_FLUSH_INTERVAL = 0.25
# A batch carries at most this many events (the newest); the tables correct anything older.
EVENT_BATCH_LIMIT = 200
# Messages queued for one browser before it counts as slow and is resynchronised with a snapshot.
OUTBOX_LIMIT = 64
# Optional topics a page may ask for with ``?topics=``; nodes, locks, ring and events always come.
OPTIONAL_TOPICS = frozenset({"idempotency", "jobs"})
# Heartbeat times closer than this are the same beat (node_overview gives ages, read at slightly
# different instants); real beats are a heartbeat interval apart.
BEAT_JITTER = 0.05
MAX_KEY_LENGTH = 1024
MAX_REPLICAS = 10
NODE_NAME = re.compile(NODE_NAME_RE)


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), default=str)


# While this cache key exists some process has a dashboard connected, and every process relays its
# events (monitoring/events.py); without it they are not sent at all. The cache is the one store
# every process shares in both deployments (Redis, or the file cache of the embedded default).
LISTENING_KEY = "monitoring:dashboards-listening"
# Seconds the key lives; a process with a connected dashboard renews it every third of that.
LISTENING_TTL = 30.0
# Seconds a relay trusts its last look at the key: the most a dashboard that just connected waits
# for its first events (its snapshot is read meanwhile).
LISTENING_RECHECK = 0.5


def dashboards_listening() -> bool:
    """Whether a dashboard is connected somewhere (True when the cache cannot say: better send than lose)."""
    try:
        return cache.get(LISTENING_KEY) is not None
    except Exception:
        logger.warning("dashboard: cannot tell whether a dashboard listens; relaying events", exc_info=True)
        return True


async def mark_listening() -> None:
    """Tell every process that a dashboard of this one listens, for the next ``LISTENING_TTL`` seconds."""
    try:
        await cache.aset(LISTENING_KEY, True, timeout=LISTENING_TTL)
    except Exception:
        logger.warning("dashboard: could not announce a listening dashboard; events may lag", exc_info=True)


# A job event in one of these states counts as a job done for the jobs-per-second figure.
FINISHED_JOB_STATES = ("succeeded", "duplicate", "failed")


class LiveTables:
    """One per process (per event loop): reads the tables every tick and pushes changed rows to subscribers."""

    interval = 1.0  # seconds between two ticks
    min_spacing = 0.25  # an event may bring a tick forward, never closer than this to the previous one
    history = 300  # rate points kept (5 minutes of 1 s ticks)
    first_tick_timeout = 10.0

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscribers: dict[ClusterConsumer, frozenset[str]] = {}
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._poke = asyncio.Event()
        self._reset()

    def _reset(self) -> None:
        self.seq = 0
        self.now = 0.0
        self.nodes: dict[str, dict[str, Any]] = {}
        self.locks: dict[str, dict[str, Any]] = {}
        self.lock_stores: list[dict[str, Any]] = []
        self.ring: HashRing | None = None
        self.ring_payload: dict[str, Any] | None = None
        self.idempotency: dict[str, Any] | None = None
        self.jobs: dict[str, dict[str, Any]] = {}
        self.jobs_loaded = False  # read only while a subscriber asks for the topic
        self.rates: deque[dict[str, float]] = deque(maxlen=self.history)
        self._ready = asyncio.Event()
        self._seen_events: deque[str] = deque(maxlen=4096)
        self._seen_set: set[str] = set()
        self.announced_epoch = 0  # the newest ring epoch an event told of
        self._beats = 0
        self._lock_acquisitions = 0
        self._jobs_finished = 0
        self._contended = 0
        self._rate_since = time.time()

    # --- subscribers ------------------------------------------------------------------------

    async def subscribe(self, consumer: ClusterConsumer, topics: frozenset[str]) -> None:
        """Register ``consumer``; its snapshot is queued first and every later delta follows it."""
        self.subscribers[consumer] = topics
        if self._task is None or self._task.done():
            # Its own thread (and so its own database connection): the reads never wait behind the
            # HTTP views' thread, and the connection is closed when nobody watches any more.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-live")
            self._task = self.loop.create_task(self._run(), name="dashboard-live-tables")
        elif ("idempotency" in topics and self.idempotency is None) or ("jobs" in topics and not self.jobs_loaded):
            self.poke()
        try:
            await asyncio.wait_for(self._ready.wait(), self.first_tick_timeout)
        except TimeoutError:
            logger.warning("dashboard: no table read within %ss; sending an empty snapshot", self.first_tick_timeout)
        if consumer in self.subscribers:
            # No await from here to the end: the snapshot and the deltas after it cannot interleave.
            consumer.snapshot_seq = self.seq
            consumer.enqueue(None, _dumps(self.snapshot(topics)))

    async def unsubscribe(self, consumer: ClusterConsumer) -> None:
        self.subscribers.pop(consumer, None)
        if not self.subscribers and self._task is not None:
            # Nobody watches: stop reading, close the reader's connection, start afresh next time.
            self._task.cancel()
            self._task = None
            self._reset()
            executor, self._executor = self._executor, None
            if executor is not None:
                await self.loop.run_in_executor(executor, connections.close_all)
                executor.shutdown(wait=False)

    def poke(self) -> None:
        """Something moved (an event said so): read the tables soon rather than at the next tick."""
        self._poke.set()

    def snapshot(self, topics: frozenset[str]) -> dict[str, Any]:
        message = {
            "type": "snapshot",
            "seq": self.seq,
            "now": self.now or time.time(),
            "nodes": list(self.nodes.values()),
            "locks": list(self.locks.values()),
            "lock_stores": self.lock_stores,
            "ring": self.ring_payload,
            "rates": list(self.rates),
        }
        if "idempotency" in topics:
            message["idempotency"] = self.idempotency
        if "jobs" in topics:
            # None until the first read for the topic: its rows then come as a delta.
            message["jobs"] = list(self.jobs.values()) if self.jobs_loaded else None
        return message

    def note_event(self, event: dict[str, Any]) -> None:
        """Count an event once per process (every connection receives its own copy) for the rate chart."""
        event_id = event.get("id")
        if not isinstance(event_id, str) or event_id in self._seen_set:
            return
        if len(self._seen_events) == self._seen_events.maxlen:
            self._seen_set.discard(self._seen_events[0])
        self._seen_events.append(event_id)
        self._seen_set.add(event_id)
        if event.get("kind") == "lock_acquired":
            self._lock_acquisitions += 1
            if event.get("contended"):
                self._contended += 1
        elif event.get("kind") == "job" and event.get("state") in FINISHED_JOB_STATES:
            self._jobs_finished += 1

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = self.loop
        marked = loop.time()  # the connecting consumer has just marked it
        while self.subscribers:
            started = loop.time()
            self._poke.clear()
            if started - marked >= LISTENING_TTL / 3:
                marked = started
                await mark_listening()
            try:
                await self._tick()
            except Exception:  # a failed read (database restarting) must not end the stream
                logger.exception("dashboard: reading the live tables failed; retrying at the next tick")
            self._ready.set()
            try:
                await asyncio.wait_for(self._poke.wait(), timeout=max(0.0, started + self.interval - loop.time()))
                await asyncio.sleep(max(0.0, started + self.min_spacing - loop.time()))
            except TimeoutError:
                pass

    async def _tick(self) -> None:
        topics = frozenset().union(*self.subscribers.values()) if self.subscribers else frozenset()
        read = database_sync_to_async(dashboard.live_state, thread_sensitive=False, executor=self._executor)
        state = await read(prev_ring=self.ring, topics=topics, announced_epoch=self.announced_epoch)
        self.seq += 1
        self.now = state["now"]
        delta: dict[str, Any] = {"type": "delta", "seq": self.seq, "now": self.now}
        nodes = self._diff_nodes(state["nodes"])
        if nodes:
            delta["nodes"] = nodes
        locks = _diff(self.locks, {row["id"]: row for row in state["locks"]}, "id")
        if locks:
            delta["locks"] = locks
        if state["lock_stores"] != self.lock_stores:
            self.lock_stores = delta["lock_stores"] = state["lock_stores"]
        if "ring_payload" in state:
            self.ring = state["ring"]
            self.ring_payload = delta["ring"] = state["ring_payload"]
            if state.get("ring_moves"):
                delta["ring_moves"] = state["ring_moves"]
        point = self._rate_point(self.now)
        if point is not None:
            delta["rate"] = point
        # Parts of the delta only the subscribers of a topic get.
        extras: dict[str, Any] = {}
        if "idempotency" in state and state["idempotency"] != self.idempotency:
            self.idempotency = extras["idempotency"] = state["idempotency"]
        if "jobs" in state:
            jobs = _diff(self.jobs, {row["id"]: row for row in state["jobs"]}, "id")
            self.jobs_loaded = True
            if jobs:
                extras["jobs"] = jobs
        elif self.jobs_loaded:
            self.jobs, self.jobs_loaded = {}, False  # nobody watches jobs: read them afresh when someone does
        if len(delta) == 3 and not extras:
            return  # nothing moved: no message (type, seq and now only)
        texts: dict[frozenset[str], str] = {}
        for consumer, wanted in list(self.subscribers.items()):
            if consumer.snapshot_seq is None:
                continue  # its snapshot (taken after this read) is still to come
            parts = frozenset(extras) & wanted
            text = texts.get(parts)
            if text is None:
                text = texts[parts] = _dumps({**delta, **{name: extras[name] for name in parts}})
            if parts or len(delta) > 3:
                consumer.enqueue(self.seq, text)

    def _diff_nodes(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        new = {}
        for row in rows:
            old = self.nodes.get(row["name"])
            if old is not None and old["beat"] is not None and row["beat"] is not None:
                if abs(row["beat"] - old["beat"]) < BEAT_JITTER:
                    row["beat"] = old["beat"]
                elif row["beat"] > old["beat"]:
                    self._beats += 1
            new[row["name"]] = row
        return _diff(self.nodes, new, "name")

    def _rate_point(self, now: float) -> dict[str, float] | None:
        """Heartbeats, lock acquisitions and finished jobs per second since the last point (one a second at most)."""
        elapsed = now - self._rate_since
        if elapsed < self.interval * 0.9:
            return None
        point = {
            "t": round(now, 3),
            "beats": round(self._beats / elapsed, 2),
            "locks": round(self._lock_acquisitions / elapsed, 2),
            "contended": round(self._contended / elapsed, 2),
            "jobs": round(self._jobs_finished / elapsed, 2),
        }
        self._beats = self._lock_acquisitions = self._contended = self._jobs_finished = 0
        self._rate_since = now
        if self.seq <= 1:
            return None  # the first read has no earlier one to count beats against
        self.rates.append(point)
        return point


def _diff(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], key_field: str) -> dict[str, Any]:
    """Rows of ``new`` that differ from ``old`` (only their changed fields, plus the key) and keys gone.

    ``old`` is updated in place to ``new``.
    """
    changed = []
    for key, row in new.items():
        before = old.get(key)
        if before is None:
            changed.append(row)
        elif before != row:
            patch = {k: v for k, v in row.items() if before.get(k) != v}
            patch[key_field] = row[key_field]
            changed.append(patch)
    removed = [key for key in old if key not in new]
    old.clear()
    old.update(new)
    result: dict[str, Any] = {}
    if changed:
        result["changed"] = changed
    if removed:
        result["removed"] = removed
    return result


_producer: LiveTables | None = None


def live_tables() -> LiveTables:
    """The producer of the running event loop (tests run one loop each; a server runs one per process)."""
    global _producer
    loop = asyncio.get_running_loop()
    if _producer is None or _producer.loop is not loop:
        _producer = LiveTables(loop)
    return _producer


class ActionError(Exception):
    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug, self.detail = slug, detail


class ClusterConsumer(AsyncWebsocketConsumer):
    """Streams the cluster to staff users and carries out their actions; others are turned away."""

    snapshot_seq: int | None = None
    listening_since = 0.0  # wall-clock time this connection announced itself (mark_listening)

    async def connect(self) -> None:
        user = self.scope.get("user")
        # Accept first so the close code reaches the browser: a close before accept is a bare 403.
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_ANONYMOUS)
            return
        if not user.is_staff:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.outbox: asyncio.Queue[tuple[int | None, str, bool]] = asyncio.Queue()
        self.resync = False
        self.pending_events: deque[dict[str, Any]] = deque(maxlen=EVENT_BATCH_LIMIT * 5)
        self.dropped_events = 0
        self.last_flush = 0.0
        self.flush_task: asyncio.Task | None = None
        self.writer = asyncio.get_running_loop().create_task(self._write(), name="dashboard-writer")
        self.producer = live_tables()
        # Before joining the group: from here on every process relays its events (see mark_listening).
        self.listening_since = time.time()
        await mark_listening()
        await self.channel_layer.group_add(CLUSTER_GROUP, self.channel_name)
        self.joined = True
        perms = await database_sync_to_async(self._permissions)(user)
        self.enqueue(None, _dumps({"type": "hello", "user": user.get_username(), "permissions": perms}))
        events = await database_sync_to_async(dashboard.recent_events)()
        self.enqueue(None, _dumps({"type": "events", "events": events, "history": True}))
        await self.producer.subscribe(self, self._topics())

    async def disconnect(self, code: int) -> None:
        if not getattr(self, "joined", False):
            return
        self.joined = False
        await self.producer.unsubscribe(self)
        for task in (self.flush_task, self.writer):
            if task is not None:
                task.cancel()
        await self.channel_layer.group_discard(CLUSTER_GROUP, self.channel_name)

    def _topics(self) -> frozenset[str]:
        query = self.scope.get("query_string", b"").decode("latin-1")
        asked: set[str] = set()
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "topics":
                asked.update(value.split(","))
        return frozenset(asked & OPTIONAL_TOPICS)

    @staticmethod
    def _permissions(user: Any) -> dict[str, bool]:
        return {
            "force_release": user.has_perm(dashboard.PERM_FORCE_RELEASE),
            "drain": user.has_perm(dashboard.PERM_DRAIN),
            "retry_job": user.has_perm(dashboard.PERM_RETRY_JOB),
            "requeue_job": user.has_perm(dashboard.PERM_REQUEUE_JOB),
        }

    # --- outbound -----------------------------------------------------------------------------

    def enqueue(self, seq: int | None, text: str, *, keep: bool = False) -> None:
        """Queue one message for this browser without waiting; a browser too slow to keep up is resynchronised.

        ``seq`` marks a table delta; ``keep`` a reply, which survives a resynchronisation (deltas and
        events are dropped then: the fresh snapshot holds what they said).
        """
        if getattr(self, "overflowed", False):
            return
        if self.outbox.qsize() >= OUTBOX_LIMIT:
            kept = []
            while not self.outbox.empty():
                item = self.outbox.get_nowait()
                if item[2]:
                    kept.append(item)
            if len(kept) >= OUTBOX_LIMIT // 2:
                # Replies survive a resynchronisation, so a client sending actions without reading
                # the replies would grow this queue without end: close it instead (it reconnects).
                self.overflowed = True
                logger.warning("dashboard: closing %s: %d unread replies", self.channel_name, len(kept))
                asyncio.get_running_loop().create_task(self.close(code=CLOSE_POLICY))
                return
            for item in kept:
                self.outbox.put_nowait(item)
            self.resync = True
            logger.warning("dashboard: %s cannot keep up; dropping its queue for a fresh snapshot", self.channel_name)
        self.outbox.put_nowait((seq, text, keep))

    async def _write(self) -> None:
        try:
            while True:
                seq, text, _ = await self.outbox.get()
                if self.resync:
                    self.resync = False
                    snapshot = self.producer.snapshot(self.producer.subscribers.get(self, frozenset()))
                    self.snapshot_seq = snapshot["seq"]
                    await self.send(text_data=_dumps(snapshot))
                if seq is not None and self.snapshot_seq is not None and seq <= self.snapshot_seq:
                    continue  # a delta the snapshot already contains
                await self.send(text_data=text)
        except Exception:  # the socket went away mid-send; disconnect() cleans up
            logger.info("dashboard: stopped writing to %s", self.channel_name, exc_info=True)

    async def cluster_events(self, message: dict) -> None:
        """A batch of events from one process's relay (monitoring/events.py)."""
        events = message.get("events")
        if isinstance(events, list):
            for event in events:
                self._take_event(event)

    async def cluster_event(self, message: dict) -> None:
        """One event (what a relay sent before events were batched)."""
        self._take_event(message.get("event"))

    def _take_event(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        at = event.get("at")
        if isinstance(at, int | float) and at < self.listening_since:
            # A relay that had found nobody listening holds events until its next look, so events from
            # before this connection may follow it: they are in its history and snapshot already.
            return
        self.producer.note_event(event)
        kind = str(event.get("kind", ""))
        joined = kind == "membership" and not event.get("from_state")
        epoch = event.get("epoch")
        if event.get("ring_changed") and isinstance(epoch, int) and epoch > self.producer.announced_epoch:
            self.producer.announced_epoch = epoch
        if event.get("ring_changed") or kind.startswith("lock_") or joined or kind == "job":
            # The tables moved (shares, held locks, a new node, a job): read them now rather than at the next tick.
            self.producer.poke()
        if len(self.pending_events) == self.pending_events.maxlen:
            self.dropped_events += 1
        self.pending_events.append(event)
        if self.flush_task is None or self.flush_task.done():
            delay = max(0.0, self.last_flush + EVENT_FLUSH_INTERVAL - time.monotonic())
            self.flush_task = asyncio.get_running_loop().create_task(self._flush_events(delay))

    async def _flush_events(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        events = list(self.pending_events)
        self.pending_events.clear()
        dropped = self.dropped_events + max(0, len(events) - EVENT_BATCH_LIMIT)
        self.dropped_events = 0
        self.last_flush = time.monotonic()
        message: dict[str, Any] = {"type": "events", "events": events[-EVENT_BATCH_LIMIT:]}
        if dropped:
            message["dropped"] = dropped
        self.enqueue(None, _dumps(message))

    # --- inbound: actions ---------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not getattr(self, "joined", False) or getattr(self, "overflowed", False):
            return
        if bytes_data is not None or text_data is None:
            await self._reply_error(None, "invalid-message", "send JSON text frames")
            return
        if len(text_data.encode()) > MAX_FRAME:
            logger.warning("dashboard: closing %s after a %d-character frame", self.channel_name, len(text_data))
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self._reply_error(None, "invalid-json", "the message is not valid JSON")
            return
        request_id = message.get("id") if isinstance(message, dict) else None
        if not isinstance(request_id, str | int) or isinstance(request_id, bool) or len(str(request_id)) > 64:
            request_id = None
        user = await database_sync_to_async(self._current_user)()
        if user is None or not user.is_staff:
            # Checked for every message: a user demoted (or logged out elsewhere) mid-connection loses it.
            await self.close(code=CLOSE_FORBIDDEN if user is not None else CLOSE_ANONYMOUS)
            return
        try:
            if not isinstance(message, dict):
                raise ActionError("invalid-message", "a message is a JSON object with an 'action'")
            action = message.get("action")
            handler = self.ACTIONS.get(action) if isinstance(action, str) else None
            if handler is None:
                raise ActionError("unknown-action", f"action must be one of {sorted(self.ACTIONS)}")
            result = await handler(self, user, message)
        except ActionError as exc:
            await self._reply_error(request_id, exc.slug, exc.detail)
            return
        reply = {"type": "reply", "reply_to": request_id, "action": action, "ok": True, **result}
        self.enqueue(None, _dumps(reply), keep=True)

    async def _reply_error(self, request_id: Any, slug: str, detail: str) -> None:
        self.enqueue(
            None, _dumps({"type": "error", "reply_to": request_id, "error": slug, "detail": detail}), keep=True
        )

    def _current_user(self) -> Any:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        return get_user_model().objects.filter(pk=user.pk, is_active=True).first()

    async def _lookup(self, user: Any, message: dict) -> dict[str, Any]:
        key = message.get("key")
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise ActionError("invalid-field", f"key must be a string of 1 to {MAX_KEY_LENGTH} characters")
        n = message.get("n", dashboard.DEFAULT_REPLICAS)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_REPLICAS:
            raise ActionError("invalid-field", f"n must be an integer from 1 to {MAX_REPLICAS}")
        try:
            return await database_sync_to_async(dashboard.key_lookup)(key=key, n=n)
        except LookupError:
            raise ActionError("empty-ring", "no node owns keys yet: the ring is empty") from None

    async def _force_release(self, user: Any, message: dict) -> dict[str, Any]:
        from locks import LockBackendUnavailable

        backend, name, token = message.get("backend"), message.get("name"), message.get("token")
        if not isinstance(backend, str) or backend not in settings.LOCKS:
            raise ActionError("invalid-field", f"backend must be one of {sorted(settings.LOCKS)}")
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise ActionError("invalid-field", "name must be a lock name of 1 to 255 characters")
        if token is not None and (isinstance(token, bool) or not isinstance(token, int)):
            raise ActionError("invalid-field", "token must be an integer (or left out)")
        if not await database_sync_to_async(user.has_perm)(dashboard.PERM_FORCE_RELEASE):
            raise ActionError(
                "forbidden", f"force-releasing a lock needs the {dashboard.PERM_FORCE_RELEASE} permission"
            )
        try:
            released = await database_sync_to_async(dashboard.lock_force_release)(
                backend=backend, name=name, token=token, actor=user
            )
        except (LockBackendUnavailable, ValueError) as exc:
            raise ActionError("lock-backend-error", str(exc)) from None
        self.producer.poke()
        return {"backend": backend, "name": name, "released": released}

    async def _drain(self, user: Any, message: dict) -> dict[str, Any]:
        from cluster.exceptions import IllegalTransition, UnknownNode

        node = message.get("node")
        if not isinstance(node, str) or not NODE_NAME.match(node):
            raise ActionError("invalid-field", "node must be a node name")
        if not await database_sync_to_async(user.has_perm)(dashboard.PERM_DRAIN):
            raise ActionError("forbidden", f"draining a node needs the {dashboard.PERM_DRAIN} permission")
        try:
            await database_sync_to_async(dashboard.node_drain)(node=node, actor=user)
        except (IllegalTransition, UnknownNode) as exc:
            raise ActionError("illegal-transition", str(exc)) from None
        return {"node": node}

    async def _job_action(self, user: Any, message: dict, *, perm: str, verb: str, apply: Any) -> dict[str, Any]:
        from cluster.models import Job

        job_id = message.get("job")
        try:
            if not isinstance(job_id, str):
                raise ValueError
            job_id = str(uuid.UUID(job_id))
        except ValueError:
            raise ActionError("invalid-field", "job must be a job id (a UUID)") from None
        if not await database_sync_to_async(user.has_perm)(perm):
            raise ActionError("forbidden", f"{verb} a job needs the {perm} permission")
        try:
            result = await database_sync_to_async(apply)(job_id=job_id, actor=user)
        except Job.DoesNotExist:
            raise ActionError("unknown-job", f"no job {job_id}") from None
        except ValueError as exc:
            raise ActionError("illegal-transition", str(exc)) from None
        self.producer.poke()
        return result

    async def _retry_job(self, user: Any, message: dict) -> dict[str, Any]:
        return await self._job_action(
            user, message, perm=dashboard.PERM_RETRY_JOB, verb="retrying", apply=dashboard.job_retry
        )

    async def _requeue_job(self, user: Any, message: dict) -> dict[str, Any]:
        return await self._job_action(
            user, message, perm=dashboard.PERM_REQUEUE_JOB, verb="requeueing", apply=dashboard.job_requeue
        )

    ACTIONS = {
        "lookup": _lookup,
        "force_release": _force_release,
        "drain": _drain,
        "retry_job": _retry_job,
        "requeue_job": _requeue_job,
    }
