"""Celery workers as cluster nodes: join on start, heartbeat from a thread, drain and leave on shutdown.

A worker can be declared dead while it still runs: it was paused (SIGSTOP, a frozen VM, a long
GC) or cut off for longer than the dead threshold. Its work has moved and its old incarnation's
beats are ignored, so the heartbeat thread reads its node's row every few beats, and at once
after a gap in its own clock; when it finds itself dead (or gone) it rejoins as a new
incarnation and beats with that one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.db import DatabaseError, close_old_connections

from cluster.exceptions import IllegalTransition
from cluster.models import Node, NodeState
from cluster.routing import SHARED_QUEUE, node_name_for, node_queue

from .heartbeats import HeartbeatStoreUnavailable
from .services import heartbeat_record, worker_node_start, worker_node_stop
from .settings import monitoring_settings

logger = logging.getLogger(__name__)


class HeartbeatThread(threading.Thread):
    """Beats every HEARTBEAT_INTERVAL from the worker's main process: busy pool processes cannot block it."""

    # Every this many beats the thread reads its node's row to learn whether it was declared dead.
    MEMBERSHIP_CHECK_EVERY = 5
    # A wait this many intervals longer than asked means this process was paused: check at once.
    PAUSE_FACTOR = 3.0

    def __init__(self, *, node: str, incarnation: int, address: str = "", metadata: dict | None = None) -> None:
        super().__init__(name=f"ringmaster-heartbeat-{node}", daemon=True)
        self.node, self.incarnation = node, incarnation
        self.address, self.metadata = address, metadata
        self.stopped = threading.Event()
        self.seq = 0

    def run(self) -> None:
        interval = monitoring_settings.HEARTBEAT_INTERVAL
        last = time.monotonic()
        while not self.stopped.is_set():
            now = time.monotonic()
            gap, last = now - last, now
            paused = gap > interval * self.PAUSE_FACTOR
            if paused or (self.seq + 1) % self.MEMBERSHIP_CHECK_EVERY == 0:
                self.check_membership(paused_for=gap if paused else 0.0)
            self.seq += 1
            try:
                heartbeat_record(node=self.node, incarnation=self.incarnation, seq=self.seq, load=self.load())
            except HeartbeatStoreUnavailable as exc:
                logger.warning("heartbeat of %s not recorded: %s", self.node, exc)
            self.stopped.wait(interval)

    def check_membership(self, *, paused_for: float = 0.0) -> None:
        """Rejoin as a new incarnation if this node was declared dead, or left, while this process ran on."""
        try:
            close_old_connections()  # a connection broken by a database restart is replaced here
            row = Node.objects.filter(name=self.node).values_list("state", "incarnation").first()
            if row is None or (row[0] in (NodeState.DEAD, NodeState.LEFT) and row[1] == self.incarnation):
                if self.stopped.is_set():
                    return  # shutting down: leaving is what we want
                state = row[0] if row else "deleted"
                logger.warning(
                    "worker node %s incarnation %s found itself %s (paused %.1fs?): rejoining",
                    self.node,
                    self.incarnation,
                    state,
                    paused_for,
                )
                node = worker_node_start(name=self.node, address=self.address, metadata=self.metadata)
                self.incarnation, self.seq = node.incarnation, 0
                logger.warning("worker node %s rejoined as incarnation %s", self.node, self.incarnation)
            elif row[1] > self.incarnation:
                logger.error(
                    "node %s is incarnation %s elsewhere, not this worker's %s: its beats are ignored",
                    self.node,
                    row[1],
                    self.incarnation,
                )
        except (DatabaseError, IllegalTransition) as exc:
            # The database is away, or the node changed meanwhile: beats go on; check next time.
            logger.warning("worker node %s could not check its membership: %s", self.node, exc)

    def load(self) -> dict[str, Any]:
        try:
            one, five, _ = os.getloadavg()
        except OSError:
            return {}
        return {"loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2)}


_thread: HeartbeatThread | None = None


@celeryd_after_setup.connect(dispatch_uid="ringmaster-worker-queues")
def _on_worker_setup(sender: str, instance: Any, **kwargs: Any) -> None:
    # Each node consumes its own queue (jobs routed to it) and the shared one (jobs with no key).
    name = node_name_for(sender)
    for queue in (node_queue(name), SHARED_QUEUE):
        instance.app.amqp.queues.select_add(queue)


@worker_ready.connect(dispatch_uid="ringmaster-worker-ready")
def _on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    global _thread
    hostname = getattr(sender, "hostname", None) or os.uname().nodename
    name = node_name_for(hostname)
    metadata = {"queues": [node_queue(name), SHARED_QUEUE], "pid": os.getpid()}
    node = worker_node_start(name=name, address=hostname, metadata=metadata)
    close_old_connections()
    _thread = HeartbeatThread(node=name, incarnation=node.incarnation, address=hostname, metadata=metadata)
    _thread.start()
    logger.info("worker node %s joined (incarnation %s), heartbeating", name, node.incarnation)


@worker_shutdown.connect(dispatch_uid="ringmaster-worker-shutdown")
def _on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    if _thread is None:
        return
    _thread.stopped.set()
    _thread.join(timeout=5)  # a membership check in flight must not rejoin after we leave
    worker_node_stop(name=_thread.node)
    logger.info("worker node %s drained and left", _thread.node)
