"""Writes of the monitoring app: recording heartbeats, and a worker node's start and stop."""

from __future__ import annotations

import logging
import time
from typing import Any

from cluster import services as cluster_services
from cluster.exceptions import IllegalTransition
from cluster.models import Node, NodeState

from .heartbeats import Beat, get_store
from .metrics import HEARTBEATS_RECEIVED

logger = logging.getLogger(__name__)


def heartbeat_record(
    *,
    node: str,
    incarnation: int,
    seq: int,
    load: dict[str, Any] | None = None,
    now: float | None = None,
    path: str = "in-process",
) -> Beat:
    """Keep a node's latest beat in the heartbeat store (never a database write)."""
    beat = Beat(incarnation=incarnation, seq=seq, received_at=time.time() if now is None else now, load=load or {})
    get_store().record(node, beat)
    counter = _COUNTERS.get(path)
    if counter is None:  # labels() takes a lock and builds a key: once per path, not once per beat
        counter = _COUNTERS[path] = HEARTBEATS_RECEIVED.labels(path=path)
    counter.inc()
    return beat


_COUNTERS: dict[str, Any] = {}


def worker_node_start(
    *, name: str, address: str = "", zone: str = "", weight: float = 1.0, metadata: dict | None = None
) -> Node:
    """Register a starting worker as a node: a new node joins; a known one comes back with a new incarnation.

    The node is left ``joining`` (or as it was, if it was still alive): the sweeper activates it
    after enough on-time heartbeats, so a crash-looping worker never takes ranges.
    """
    actor = f"worker {name}"
    node = Node.objects.filter(name=name).first()
    if node is None:
        node, _token = cluster_services.node_join(
            name=name, address=address, zone=zone, weight=weight, metadata=metadata, actor=actor
        )
        return node
    if metadata is not None:
        Node.objects.filter(pk=node.pk).update(metadata={**node.metadata, **metadata}, address=address)
    if node.state in (NodeState.DEAD, NodeState.LEFT):
        cluster_services.node_rejoin(node=node, actor=actor, reason="worker started")
    else:
        cluster_services.node_restart(node=node, incarnation=node.incarnation + 1, actor=actor)
    node.refresh_from_db()
    return node


def worker_node_stop(*, name: str) -> None:
    """A worker shutting down gracefully drains and leaves, so its ranges move before it goes."""
    actor = f"worker {name}"
    node = Node.objects.filter(name=name).first()
    if node is None:
        return
    try:
        if node.state == NodeState.ACTIVE:
            cluster_services.node_drain(node=node, actor=actor, reason="worker shutting down")
        if node.state in (NodeState.DRAINING, NodeState.JOINING):
            cluster_services.node_leave(node=node, actor=actor, reason="worker stopped")
    except IllegalTransition as exc:
        # e.g. the sweeper marked it suspect meanwhile: it will be convicted and its work moved.
        logger.warning("worker node %s could not leave cleanly: %s", name, exc)
    get_store().forget(name)
