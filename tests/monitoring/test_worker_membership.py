"""A worker's heartbeat thread notices that its node was declared dead and rejoins as a new incarnation."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from cluster import services
from cluster.models import Node
from monitoring.services import worker_node_start
from monitoring.worker import HeartbeatThread

# The thread checks its connection like a long-running process does: outside any transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def started(name: str) -> tuple[Node, HeartbeatThread]:
    node = worker_node_start(name=name, metadata={"queues": [f"node.{name}"]})
    services.node_activate(node=node)
    return node, HeartbeatThread(node=name, incarnation=node.incarnation, metadata={"queues": [f"node.{name}"]})


def test_a_worker_declared_dead_rejoins_with_a_new_incarnation():
    node, thread = started("w-paused")
    services.node_mark_suspect(node=node)
    services.node_mark_dead(node=node)
    thread.seq = 41
    thread.check_membership(paused_for=12.0)
    node.refresh_from_db()
    assert node.state == "joining" and node.incarnation == 2
    assert (thread.incarnation, thread.seq) == (2, 0), "it beats as the new incarnation from now on"


def test_a_live_worker_changes_nothing():
    node, thread = started("w-live")
    thread.check_membership()
    node.refresh_from_db()
    assert (node.state, node.incarnation, thread.incarnation) == ("active", 1, 1)


def test_a_stopping_worker_does_not_rejoin_after_it_left():
    node, thread = started("w-leaving")
    services.node_drain(node=node)
    services.node_leave(node=node)
    thread.stopped.set()
    thread.check_membership()
    assert Node.objects.get(name="w-leaving").state == "left"


def test_a_database_outage_is_survived(monkeypatch):
    _node, thread = started("w-nodb")

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("monitoring.worker.Node.objects.filter", refuse)
    thread.check_membership()  # logs and carries on
    assert thread.incarnation == 1
