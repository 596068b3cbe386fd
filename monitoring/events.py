"""The event relay: what the apps below announce with signals is forwarded to dashboards.

``cluster`` and ``locks`` never import ``monitoring``; they send Django signals, and this module
turns each into a message on the channel layer's ``cluster`` group, which every dashboard consumer
has joined. It works from any process (a worker, the sweeper, the web server) because the channel
layer is shared: Redis, or the SQLite layer in the embedded default.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import queue
import secrets
import threading
import time
from typing import Any

from channels.layers import get_channel_layer

from cluster.signals import job_state_changed, membership_changed
from locks.signals import lock_acquired, lock_lost, lock_released

from .consumers import CLUSTER_GROUP, LISTENING_RECHECK, dashboards_listening

logger = logging.getLogger(__name__)

# The fields of a lock signal that reach dashboards (never the backend class sent as ``sender``).
_LOCK_FIELDS = ("name", "token", "owner", "backend", "reason", "contended")

# A batch sent to the channel layer carries at most this many events.
BATCH_LIMIT = 200

# After handling a batch the relay thread pauses this long, so that the events published meanwhile
# are taken together: woken for every event, the thread cost a process publishing events (a lock
# per grant and per release) more than the events themselves (benchmarks/results/locks.md). An
# event after a quiet spell still goes out at once; one in a burst waits at most this long, and
# dashboards batch their deltas to four messages a second anyway.
GATHER = 0.02


class _Relay:
    """Sends events to the channel layer from one background thread per process.

    Publishers only enqueue: a lock acquire or a membership change never waits for Redis or the
    SQLite layer (sending inline made every lock ~24x slower). The queue is bounded; when dashboards
    cannot keep up, events are dropped and counted rather than piling up in memory. At exit the
    queue is flushed for a moment, so a short-lived command still announces what it did.

    What is queued goes out in batches (one channel-layer message per batch, not per event), and
    only while a dashboard listens somewhere (``consumers.dashboards_listening``, looked up at most
    every ``LISTENING_RECHECK`` seconds): sending four events per job to an empty group cost a
    worker about a third of its CPU. While the last look found nobody, events are held without
    waking the thread (a wake-up per event cost a busy worker more than the event itself); at the
    next look they are sent if a dashboard listens by then, else dropped. So every event published
    after a dashboard announced itself reaches it, and what happened before is in the snapshot that
    dashboard reads after announcing itself (held events older than the connection are dropped by
    the consumer).
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize)  # while dashboards listen
        self.dropped = 0
        self.skipped = 0  # events nobody listened to
        self.listening = False  # what the relay thread's last look found
        self._held: list[dict[str, Any]] = []  # published since that look found nobody
        self._held_lock = threading.Lock()
        self._wake = threading.Event()  # set by the first event held since the last look
        self._look_now = threading.Event()  # flush: look now instead of at the next interval
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    def put(self, event: dict[str, Any]) -> None:
        self._ensure_thread()
        with self._held_lock:
            if not self.listening:
                if len(self._held) >= self.maxsize:
                    self._count_dropped()
                    return
                self._held.append(event)
                if len(self._held) == 1:
                    self._wake.set()  # the first event since the last look: one wake-up per look, not per event
                return
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self._count_dropped()

    def _count_dropped(self) -> None:
        self.dropped += 1
        if self.dropped % 1000 == 1:
            logger.warning("dashboard event queue full: %s event(s) dropped so far", self.dropped)

    def _ensure_thread(self) -> None:
        # A forked process (a Celery pool child) inherits the object but not the thread.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                if self._pid != os.getpid():
                    self._held_lock = threading.Lock()  # the fork may have copied it held
                    self._held = []  # the parent's events are the parent's to send
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="ringmaster-event-relay", daemon=True)
                self._thread.start()

    def _look(self) -> list[dict[str, Any]]:
        """Look whether a dashboard listens; returns the events held meanwhile (sent if one does)."""
        listening = dashboards_listening()
        with self._held_lock:
            held, self._held = self._held, []
            self.listening = listening
            self._wake.clear()
        return held

    def _drain(self, *, wait: bool) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        try:
            events.append(self.queue.get() if wait else self.queue.get_nowait())
        except queue.Empty:
            return events
        while len(events) < self.maxsize:
            try:
                events.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return events

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        next_look = 0.0
        while True:
            if self.listening:
                queued = self._drain(wait=True)
            else:
                self._wake.wait()  # something was held since the last look (or flush asks)
                self._look_now.wait(max(0.0, next_look - time.monotonic()))  # held until the look is due
                queued = self._drain(wait=False)  # published just before the last look found nobody
            pending: list[dict[str, Any]] = []
            if time.monotonic() >= next_look or self._look_now.is_set():
                self._look_now.clear()
                pending = self._look()
                next_look = time.monotonic() + LISTENING_RECHECK
            pending += queued
            if self.listening:
                if pending:
                    self._send(loop, pending)
            else:
                self.skipped += len(pending)
            for _ in queued:
                self.queue.task_done()
            if queued:
                time.sleep(GATHER)  # an event after a quiet spell goes out at once; a burst waits for this

    def _send(self, loop: asyncio.AbstractEventLoop, events: list[dict[str, Any]]) -> None:
        try:
            layer = get_channel_layer()
            if layer is None:
                return
            for start in range(0, len(events), BATCH_LIMIT):
                batch = {"type": "cluster.events", "events": events[start : start + BATCH_LIMIT]}
                loop.run_until_complete(layer.group_send(CLUSTER_GROUP, batch))
        except Exception:  # a dashboard missing some deltas must never stop the relay
            logger.warning("could not publish %s event(s) to dashboards", len(events), exc_info=True)

    def flush(self, timeout: float = 2.0) -> None:
        """Give what was published a moment to go out (at exit): look now, then wait for the queue."""
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            return
        deadline = time.monotonic() + timeout
        if self._held or self.queue.unfinished_tasks:
            self._look_now.set()
            self._wake.set()
        while (self._held or self.queue.unfinished_tasks) and time.monotonic() < deadline:
            time.sleep(0.01)


_relay = _Relay()
atexit.register(_relay.flush)


def publish(kind: str, data: dict[str, Any]) -> None:
    """Queue one event for every dashboard; returns at once, never raises into the caller.

    Each event gets an ``id`` (dashboards count rates from events that every consumer receives, so
    they need to tell one event from its copies) and ``at``, the wall-clock time it was published.
    """
    _relay.put({"kind": kind, "at": time.time(), "id": _event_id(), **data})


# Event ids: a random prefix per process and a counter. Unique across processes like a uuid4, for
# a fraction of its cost (a uuid4 per event was a tenth of what publishing an event cost).
_id_prefix = ("", 0)
_id_counter = itertools.count()


def _event_id() -> str:
    global _id_prefix
    prefix, pid = _id_prefix
    if pid != os.getpid():  # a forked child (a Celery pool process) draws its own prefix
        prefix, pid = _id_prefix = (secrets.token_hex(8), os.getpid())
    return f"{prefix}{next(_id_counter):x}"


def _on_membership_changed(sender: Any, **payload: Any) -> None:
    publish("membership", {k: v for k, v in payload.items() if k != "signal"})


def _lock_relay(kind: str):
    def relay(sender: Any, **payload: Any) -> None:
        publish(kind, {k: payload[k] for k in _LOCK_FIELDS if k in payload})

    return relay


_on_lock_acquired = _lock_relay("lock_acquired")
_on_lock_released = _lock_relay("lock_released")
_on_lock_lost = _lock_relay("lock_lost")


def _on_job_state_changed(sender: Any, **payload: Any) -> None:
    publish("job", {k: v for k, v in payload.items() if k != "signal"})


membership_changed.connect(_on_membership_changed, dispatch_uid="monitoring-relay-membership")
job_state_changed.connect(_on_job_state_changed, dispatch_uid="monitoring-relay-job")
lock_acquired.connect(_on_lock_acquired, dispatch_uid="monitoring-relay-lock-acquired")
lock_released.connect(_on_lock_released, dispatch_uid="monitoring-relay-lock-released")
lock_lost.connect(_on_lock_lost, dispatch_uid="monitoring-relay-lock-lost")
