"""Celery workers as cluster nodes: join on start, heartbeat from a thread, drain and leave on shutdown."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.db import close_old_connections

from cluster.routing import SHARED_QUEUE, node_name_for, node_queue

from .heartbeats import HeartbeatStoreUnavailable
from .services import heartbeat_record, worker_node_start, worker_node_stop
from .settings import monitoring_settings

logger = logging.getLogger(__name__)


class HeartbeatThread(threading.Thread):
    """Beats every HEARTBEAT_INTERVAL from the worker's main process: busy pool processes cannot block it."""

    def __init__(self, *, node: str, incarnation: int) -> None:
        super().__init__(name=f"ringmaster-heartbeat-{node}", daemon=True)
        self.node, self.incarnation = node, incarnation
        self.stopped = threading.Event()
        self.seq = 0

    def run(self) -> None:
        interval = monitoring_settings.HEARTBEAT_INTERVAL
        while not self.stopped.is_set():
            self.seq += 1
            try:
                heartbeat_record(node=self.node, incarnation=self.incarnation, seq=self.seq, load=self.load())
            except HeartbeatStoreUnavailable as exc:
                logger.warning("heartbeat of %s not recorded: %s", self.node, exc)
            self.stopped.wait(interval)

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
    node = worker_node_start(
        name=name,
        address=hostname,
        metadata={"queues": [node_queue(name), SHARED_QUEUE], "pid": os.getpid()},
    )
    close_old_connections()
    _thread = HeartbeatThread(node=name, incarnation=node.incarnation)
    _thread.start()
    logger.info("worker node %s joined (incarnation %s), heartbeating", name, node.incarnation)


@worker_shutdown.connect(dispatch_uid="ringmaster-worker-shutdown")
def _on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    if _thread is None:
        return
    _thread.stopped.set()
    worker_node_stop(name=_thread.node)
    logger.info("worker node %s drained and left", _thread.node)
