"""The dashboard's WebSocket under abuse: permissions per action, the audit log, a bounded send buffer."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission

from cluster import services as cluster_services
from monitoring.consumers import CLOSE_POLICY, OUTBOX_LIMIT, ClusterConsumer
from monitoring.models import AuditEntry
from tests.monitoring.test_dashboard_consumer import (  # noqa: F401 (the autouse fixtures apply here too)
    close_thread_connections,
    fast_ticks,
    no_old_heartbeats,
    receive_until,
    receive_until_close,
    staff_stream,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, *perms: str):
        user = django_user_model.objects.create_user(username=username, password="pw-dash-12345", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
        return django_user_model.objects.get(pk=user.pk)

    return sync_to_async(make)


def active(name: str) -> None:
    cluster_services.node_join(name=name, actor="test")
    cluster_services.node_activate(node=name, actor="test")


def node_state(name: str) -> str:
    from cluster.models import Node

    return Node.objects.get(name=name).state


def audit_rows() -> list[tuple]:
    return list(AuditEntry.objects.order_by("id").values_list("actor", "action", "target", "source"))


async def test_change_node_is_not_enough_to_drain_from_the_dashboard(make_user):
    await sync_to_async(active)("n1")
    comm, _ = await staff_stream(await make_user("editor", "change_node"))
    await comm.send_json_to({"action": "drain", "node": "n1", "id": 1})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == 1)
    assert (reply["type"], reply["error"]) == ("error", "forbidden")
    assert "cluster.drain_node" in reply["detail"], "the error names the permission needed"
    assert await sync_to_async(node_state)("n1") == "active"
    assert await sync_to_async(audit_rows)() == []
    await comm.disconnect()


async def test_a_dashboard_drain_is_audited(make_user):
    await sync_to_async(active)("n1")
    comm, _ = await staff_stream(await make_user("ops", "drain_node"))
    await comm.send_json_to({"action": "drain", "node": "n1", "id": 2})
    reply = await receive_until(comm, lambda m: m.get("reply_to") == 2)
    assert reply["type"] == "reply", reply
    assert await sync_to_async(node_state)("n1") == "draining"
    assert await sync_to_async(audit_rows)() == [("ops", "node.drain", "n1", "dashboard")]
    await comm.disconnect()


async def test_a_dashboard_force_release_is_audited(make_user):
    from locks import get_backend

    lease = await sync_to_async(get_backend("default").acquire)("dash:sec", ttl=60)
    comm, _ = await staff_stream(await make_user("ops", "force_release_locklease"))
    await comm.send_json_to(
        {"action": "force_release", "backend": "default", "name": "dash:sec", "token": lease.token, "id": 3}
    )
    reply = await receive_until(comm, lambda m: m.get("reply_to") == 3)
    assert reply["type"] == "reply" and reply["released"] is True, reply
    assert await sync_to_async(audit_rows)() == [("ops", "lock.force_release", "default:dash:sec", "dashboard")]
    await comm.disconnect()


async def test_the_hello_lists_only_the_permitted_actions(make_user):
    from channels.testing import WebsocketCommunicator

    comm = WebsocketCommunicator(ClusterConsumer.as_asgi(), "/ws/cluster/")
    comm.scope["user"] = await make_user("editor", "change_node")
    assert (await comm.connect())[0]
    hello = await comm.receive_json_from(timeout=5)
    assert hello["permissions"] == {"force_release": False, "drain": False, "retry_job": False, "requeue_job": False}
    await comm.disconnect()


# --- the send buffer ----------------------------------------------------------------------------


def bare_consumer() -> ClusterConsumer:
    consumer = ClusterConsumer()
    consumer.outbox = asyncio.Queue()
    consumer.resync = False
    consumer.channel_name = "test.bare"
    return consumer


async def test_deltas_for_a_slow_browser_stay_bounded():
    consumer = bare_consumer()
    for seq in range(10 * OUTBOX_LIMIT):
        consumer.enqueue(seq, json.dumps({"type": "delta", "seq": seq}))
        assert consumer.outbox.qsize() <= OUTBOX_LIMIT, "the queue never grows past its bound"
    assert consumer.resync, "a browser that fell behind gets a fresh snapshot instead of the backlog"


async def test_unread_replies_close_the_connection_instead_of_growing_without_end(make_user, monkeypatch):
    stall = asyncio.Event()
    original_send = ClusterConsumer.send

    async def stalling_send(self, *args, **kwargs):
        if stall.is_set():
            await asyncio.Event().wait()  # the browser stopped reading
        return await original_send(self, *args, **kwargs)

    monkeypatch.setattr(ClusterConsumer, "send", stalling_send)
    comm, _ = await staff_stream(await make_user("chatty"))
    stall.set()
    for i in range(OUTBOX_LIMIT + 8):
        await comm.send_json_to({"action": "lookup", "key": f"k{i}", "id": i})
    assert await receive_until_close(comm, timeout=10) == CLOSE_POLICY, "closed with 1008 policy violation"
    await comm.disconnect()  # what the server does next: the consumer leaves its group and stops reading
