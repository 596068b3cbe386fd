"""Reads for the API, the dashboard and the metrics: nodes joined with their latest beat and phi."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from django.core.cache import cache

from cluster.models import Node
from cluster.selectors import current_ring

from .heartbeats import HeartbeatStoreUnavailable, get_store

logger = logging.getLogger(__name__)

PHI_CACHE_KEY = "rm:sweeper:phi"


def published_phi() -> dict[str, float]:
    """The phi of each node at the sweeper's last sweep (it publishes them for readers elsewhere)."""
    try:
        return cache.get(PHI_CACHE_KEY) or {}
    except Exception:  # a cache outage only blanks the phi column
        logger.warning("could not read the published phi values", exc_info=True)
        return {}


def node_overview(*, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    qs = Node.objects.order_by("name")
    if names is not None:
        qs = qs.filter(name__in=list(names))
    nodes = list(qs)
    ring = current_ring()
    try:
        beats = get_store().latest(n.name for n in nodes)
    except HeartbeatStoreUnavailable:
        logger.warning("heartbeat store unavailable: node overview without live beats")
        beats = {}
    phis = published_phi()
    now = time.time()
    rows = []
    for node in nodes:
        beat = beats.get(node.name)
        if beat is not None:
            age: float | None = max(0.0, now - beat.received_at)
        elif node.last_heartbeat_at is not None:
            age = max(0.0, now - node.last_heartbeat_at.timestamp())
        else:
            age = None
        rows.append(
            {
                "name": node.name,
                "address": node.address,
                "zone": node.zone,
                "weight": node.weight,
                "state": node.state,
                "incarnation": node.incarnation,
                "share": ring.share(node.name) if node.name in ring else 0.0,
                "last_heartbeat_age": age,
                "phi": phis.get(node.name),
                "load": beat.load if beat else {},
                "metadata": node.metadata,
            }
        )
    return rows
