"""The event relay: what the apps below announce with signals is forwarded to dashboards.

``cluster`` and ``locks`` never import ``monitoring``; they send Django signals, and this module
turns each into a message on the channel layer's ``cluster`` group, which every dashboard consumer
has joined. It works from any process (a worker, the sweeper, the web server) because the channel
layer is shared: Redis, or the SQLite layer in the embedded default.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from cluster.signals import membership_changed

from .consumers import CLUSTER_GROUP

logger = logging.getLogger(__name__)


def publish(kind: str, data: dict[str, Any]) -> None:
    """Send one event to every dashboard; an unreachable layer is logged, never raised into the caller."""
    layer = get_channel_layer()
    if layer is None:
        return
    event = {"kind": kind, "at": time.time(), **data}
    try:
        async_to_sync(layer.group_send)(CLUSTER_GROUP, {"type": "cluster.event", "event": event})
    except Exception:  # the dashboard missing one delta must never fail a membership change
        logger.warning("could not publish %s event to dashboards", kind, exc_info=True)


def _on_membership_changed(sender: Any, **payload: Any) -> None:
    publish("membership", {k: v for k, v in payload.items() if k != "signal"})


membership_changed.connect(_on_membership_changed, dispatch_uid="monitoring-relay-membership")
