"""Where a job goes: the first active worker node of its key's preference list, on that node's queue.

Every worker node consumes its own queue (``node.<name>``) and the shared one. A key's owner is
the ring's; when the owner is not active (suspect, draining) the next node of the preference list
takes the job, and with no worker node at all it goes to the shared queue, where any worker takes it.
"""

from __future__ import annotations

import os
import threading
import time

from .models import Node, NodeState
from .ring import HashRing
from .selectors import current_ring
from .settings import cluster_settings

SHARED_QUEUE = "ringmaster"

_lock = threading.Lock()
_cached: tuple[frozenset[str], float] | None = None  # (routable node names, monotonic time read)


def node_queue(name: str) -> str:
    return f"node.{name}"


def node_name_for(hostname: str) -> str:
    """A worker's node name: ``RINGMASTER_NODE_NAME``, else its ``-n`` name before ``@`` (``node-1@host``)."""
    return os.environ.get("RINGMASTER_NODE_NAME") or hostname.split("@", 1)[0]


def routable_nodes(*, fresh: bool = False) -> frozenset[str]:
    """Active nodes that consume their own queue (Celery workers), re-read at most once per interval."""
    global _cached
    now = time.monotonic()
    cached = _cached
    if not fresh and cached is not None and now - cached[1] < cluster_settings.RING_CHECK_INTERVAL:
        return cached[0]
    names = frozenset(
        name
        for name, metadata in Node.objects.filter(state=NodeState.ACTIVE).values_list("name", "metadata")
        if isinstance(metadata, dict) and node_queue(name) in metadata.get("queues", ())
    )
    with _lock:
        _cached = (names, now)
    return names


def route(key: str | None, *, ring: HashRing | None = None, routable: frozenset[str] | None = None) -> tuple[str, str]:
    """``(owner node or "", queue)`` for a routing key (``None``: no key, the shared queue)."""
    if key is None:
        return "", SHARED_QUEUE
    ring = ring if ring is not None else current_ring()
    routable = routable if routable is not None else routable_nodes()
    if len(ring):
        for name in ring.preference(key):
            if name in routable:
                return name, node_queue(name)
    return "", SHARED_QUEUE
