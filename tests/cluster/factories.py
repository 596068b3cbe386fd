"""Factories for cluster models, built through the services (the only way nodes come to be)."""

from __future__ import annotations

from cluster import services
from cluster.models import Node


def active_node(name: str, *, weight: float = 1.0, zone: str = "") -> Node:
    node, _token = services.node_join(name=name, weight=weight, zone=zone, actor="test")
    services.node_activate(node=node, actor="test")
    return node
