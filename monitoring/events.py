"""The event relay: what the apps below announce with signals is forwarded to dashboards.

``cluster`` and ``locks`` never import ``monitoring``; they send Django signals, and this module
turns each into a message on the channel layer's ``cluster`` group, which every dashboard consumer
has joined. It works from any process (a worker, the sweeper, the web server) because the channel
layer is shared: Redis, or the SQLite layer in the embedded default.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading
import time
import uuid
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
    worker about a third of its CPU. While nobody listens, events are held until the next look
    and then dropped; so every event published after a dashboard announced itself reaches it,
    and what happened before is in the snapshot that dashboard reads after announcing itself (held
    events older than the connection that a look releases are dropped by the consumer).
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize)
        self.dropped = 0
        self.skipped = 0  # events nobody listened to
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    def put(self, event: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning("dashboard event queue full: %s event(s) dropped so far", self.dropped)

    def _ensure_thread(self) -> None:
        # A forked process (a Celery pool child) inherits the object but not the thread.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="ringmaster-event-relay", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        pending: list[dict[str, Any]] = []
        listening, next_look = False, 0.0
        while True:
            wait = max(0.0, next_look - time.monotonic()) if pending else None
            try:
                pending.append(self.queue.get(timeout=wait))
            except queue.Empty:
                pass
            while len(pending) < self.queue.maxsize:
                try:
                    pending.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if time.monotonic() >= next_look:
                listening = dashboards_listening()
                next_look = time.monotonic() + LISTENING_RECHECK
            elif not listening:
                time.sleep(GATHER)
                continue  # held until the next look: a dashboard may be connecting right now
            if listening:
                self._send(loop, pending)
            else:
                self.skipped += len(pending)
            for _ in pending:
                self.queue.task_done()
            pending = []
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
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)


_relay = _Relay()
atexit.register(_relay.flush)


def publish(kind: str, data: dict[str, Any]) -> None:
    """Queue one event for every dashboard; returns at once, never raises into the caller.

    Each event gets an ``id`` (dashboards count rates from events that every consumer receives, so
    they need to tell one event from its copies) and ``at``, the wall-clock time it was published.
    """
    _relay.put({"kind": kind, "at": time.time(), "id": uuid.uuid4().hex, **data})


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
